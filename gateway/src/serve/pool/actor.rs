//! The task that owns one pool's state. Nothing else touches it: every change is a
//! [`Command`] handled here, one at a time, so the queue, the slots, the gauges and the
//! autoscaler's demand can never disagree.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use surge_protocol::error::ApiError;
use tokio::sync::{mpsc, oneshot};

use super::capacity::{self, Capacity};
use super::{Command, Cost, Lease, PoolEnv, STOP_GRACE};
use crate::metering::WorkerPhase;
use crate::serve::autoscale::{Autoscaler, Decision, ScalePolicy};
use crate::serve::config::PoolConfig;
use crate::serve::provision::{WorkerHandle, WorkerSpec};

/// Backoff after the first failed start, doubling up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
const MAX_BACKOFF: Duration = Duration::from_secs(30);

pub(super) struct Worker {
    pub(super) handle: Arc<WorkerHandle>,
    pub(super) in_flight: usize,
    /// Failed a request: takes no new leases, stopped once idle.
    pub(super) broken: bool,
    /// Takes no new leases; stopped when its last one ends.
    pub(super) draining: bool,
    pub(super) idle_since: Instant,
    /// What it is charged against the budget: the pool's estimate until it is
    /// measured, then its resident memory (see [`PoolActor::measure`]).
    pub(super) charged: Cost,
    /// For the capacity ledger: the phase it is in and since when (Unix ms).
    pub(super) phase: WorkerPhase,
    pub(super) phase_since_ms: i64,
}

impl Worker {
    /// Counts toward the pool's capacity.
    pub(super) fn live(&self) -> bool {
        !self.broken && !self.draining
    }
}

pub(super) struct Waiter {
    id: u64,
    reply: oneshot::Sender<Result<Lease, ApiError>>,
}

pub(super) struct PoolActor {
    pub(super) model: String,
    pub(super) cfg: PoolConfig,
    pub(super) cost: Cost,
    /// The model's weight bytes: the least a ready worker is charged (see `measure`).
    pub(super) weights: u64,
    pub(super) spec: WorkerSpec,
    pub(super) env: PoolEnv,
    /// For leases and the tasks the actor starts; weak so that the pool stops when the
    /// last handle and lease are gone.
    me: mpsc::WeakUnboundedSender<Command>,
    pub(super) workers: Vec<Worker>,
    pub(super) waiters: VecDeque<Waiter>,
    pub(super) starting: usize,
    /// Consecutive failed starts (and crashes), for backoff.
    failures: u32,
    retry_at: Option<Instant>,
    pub(super) closed: bool,
    pub(super) scaler: Autoscaler,
    /// The autoscaler's last decision (for `/admin/pools`).
    pub(super) decision: Option<Decision>,
    /// A start did not fit the budget: the autoscaler should make room.
    pub(super) wants_room: bool,
    /// Where worker phase spans go (when the gateway keeps a ledger).
    pub(super) capacity: Option<Capacity>,
    /// Demand (in flight + queued) integrated over time since the last tick, so
    /// requests that start and end between two ticks still count.
    demand_area: f64,
    demand_changed: Instant,
    last_tick: Instant,
}

impl PoolActor {
    pub(super) fn spawn(
        cfg: PoolConfig,
        cost: Cost,
        weights: u64,
        spec: WorkerSpec,
        env: PoolEnv,
        tx: mpsc::UnboundedSender<Command>,
        rx: mpsc::UnboundedReceiver<Command>,
    ) {
        let now = Instant::now();
        let capacity = env
            .ledger
            .clone()
            .map(|l| Capacity::new(l, &spec.model, &spec.device));
        let actor = PoolActor {
            model: spec.model.clone(),
            scaler: Autoscaler::new(ScalePolicy::for_pool(&cfg)),
            cfg,
            cost,
            weights,
            spec,
            env,
            me: tx.downgrade(),
            workers: Vec::new(),
            waiters: VecDeque::new(),
            starting: 0,
            failures: 0,
            retry_at: None,
            closed: false,
            decision: None,
            wants_room: false,
            capacity,
            demand_area: 0.0,
            demand_changed: now,
            last_tick: now,
        };
        let runtime = actor.env.runtime.clone();
        runtime.spawn(actor.run(rx));
    }

    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Command>) {
        while let Some(cmd) = rx.recv().await {
            self.handle(cmd);
        }
    }

    fn handle(&mut self, cmd: Command) {
        match cmd {
            Command::Acquire { id, reply } => self.acquire(id, reply),
            Command::Cancel { id } => {
                if let Some(i) = self.waiters.iter().position(|w| w.id == id) {
                    self.note_demand();
                    self.waiters.remove(i);
                    self.set_queue_gauge();
                }
            }
            Command::Release { worker } => {
                self.free_slot(worker);
                self.dispatch();
            }
            Command::MarkFailed { worker } => {
                if let Some(w) = self.workers.iter_mut().find(|w| w.handle.id == worker) {
                    w.broken = true;
                }
                self.update_worker_gauges();
            }
            Command::Started(Ok(handle)) => self.add_worker(handle),
            Command::Adopt(handle) => {
                // Running already: charged whether or not it fits.
                self.env.budget.charge(&self.spec.device, self.cost);
                tracing::info!(model = %self.model, worker = handle.id, endpoint = %handle.endpoint, "adopted a running worker");
                self.put_in_service(handle);
            }
            Command::Started(Err(why)) => self.start_failed(why),
            Command::Exited { worker, why } => self.exited(worker, why),
            Command::Tick { now, done } => {
                self.tick(now);
                let _ = done.send(());
            }
            Command::Drain { n, done } => {
                let _ = done.send(self.drain(n));
            }
            Command::Evictable { reply } => {
                let _ = reply.send(self.evictable(Instant::now()));
            }
            Command::Evict {
                worker,
                for_model,
                reply,
            } => {
                let _ = reply.send(self.evict(worker, &for_model));
            }
            Command::RetryStart => self.retry_start(),
            Command::View { reply } => {
                let _ = reply.send(self.view());
            }
            Command::Workers { reply } => {
                let live = self.workers.iter().filter(|w| !w.broken);
                let _ = reply.send(live.map(|w| w.handle.clone()).collect());
            }
            Command::Close => {
                self.closed = true;
                self.note_demand();
                for w in self.waiters.drain(..) {
                    let _ = w.reply.send(Err(ApiError::ShuttingDown));
                }
                self.set_queue_gauge();
            }
            Command::StopAll { grace, done } => {
                let workers: Vec<_> = self.workers.drain(..).collect();
                if let Some(c) = &self.capacity {
                    workers.iter().for_each(|w| c.leave(w));
                }
                for w in &workers {
                    self.env.budget.release(&self.spec.device, w.charged);
                }
                let workers: Vec<_> = workers.into_iter().map(|w| w.handle).collect();
                self.update_worker_gauges();
                let prov = self.env.provisioner.clone();
                tokio::spawn(async move {
                    for w in workers {
                        prov.stop(&w, grace).await;
                    }
                    let _ = done.send(());
                });
            }
        }
    }

    fn demand(&self) -> usize {
        self.workers.iter().map(|w| w.in_flight).sum::<usize>() + self.waiters.len()
    }

    /// Call before the demand changes: accounts the time it held its current value.
    fn note_demand(&mut self) {
        let now = Instant::now();
        let held = now.saturating_duration_since(self.demand_changed);
        self.demand_area += self.demand() as f64 * held.as_secs_f64();
        self.demand_changed = now;
    }

    /// The time-weighted average demand since the last call (the autoscaler's sample).
    pub(super) fn take_average_demand(&mut self) -> f64 {
        self.note_demand();
        let now = self.demand_changed;
        let span = now.saturating_duration_since(self.last_tick).as_secs_f64();
        let avg = if span > 1e-6 {
            self.demand_area / span
        } else {
            self.demand() as f64
        };
        self.demand_area = 0.0;
        self.last_tick = now;
        avg
    }

    fn set_queue_gauge(&self) {
        self.env
            .metrics
            .queue_depth
            .with_label_values(&[&self.model])
            .set(self.waiters.len() as i64);
    }

    fn acquire(&mut self, id: u64, reply: oneshot::Sender<Result<Lease, ApiError>>) {
        if self.closed {
            let _ = reply.send(Err(ApiError::ShuttingDown));
            return;
        }
        if self.waiters.is_empty() {
            if let Some(lease) = self.take_slot() {
                if let Err(Ok(lease)) = reply.send(Ok(lease)) {
                    self.unlease(lease);
                }
                return;
            }
        }
        if self.waiters.len() >= self.cfg.queue_size {
            let _ = reply.send(Err(ApiError::QueueFull {
                model: self.model.clone(),
                retry_after: Duration::from_secs(1),
            }));
            return;
        }
        self.note_demand();
        self.waiters.push_back(Waiter { id, reply });
        self.set_queue_gauge();
        self.maybe_start();
    }

    /// A slot on the least-loaded usable worker, if any has room.
    fn take_slot(&mut self) -> Option<Lease> {
        let pool = self.me.upgrade()?;
        self.note_demand();
        let concurrency = self.cfg.concurrency;
        let w = self
            .workers
            .iter_mut()
            .filter(|w| w.live() && w.in_flight < concurrency)
            .min_by_key(|w| w.in_flight)?;
        w.in_flight += 1;
        if let Some(c) = &self.capacity {
            c.enter(w, WorkerPhase::Busy);
        }
        let worker = w.handle.clone();
        self.env
            .metrics
            .in_flight
            .with_label_values(&[&self.model])
            .inc();
        Some(Lease { worker, pool })
    }

    /// Hands free slots to waiters, first come first served.
    pub(super) fn dispatch(&mut self) {
        while let Some(front) = self.waiters.front() {
            if front.reply.is_closed() {
                self.note_demand();
                self.waiters.pop_front();
                continue;
            }
            let Some(lease) = self.take_slot() else { break };
            self.note_demand();
            let w = self.waiters.pop_front().expect("front exists");
            if let Err(Ok(lease)) = w.reply.send(Ok(lease)) {
                // The waiter left between the check and the send.
                self.unlease(lease);
            }
        }
        self.set_queue_gauge();
    }

    /// Takes back a lease that never reached its request, without the `Release`
    /// message its drop would send.
    fn unlease(&mut self, lease: Lease) {
        let id = lease.worker.id;
        std::mem::forget(lease);
        self.free_slot(id);
    }

    fn free_slot(&mut self, id: u64) {
        self.note_demand();
        if let Some(i) = self.workers.iter().position(|w| w.handle.id == id) {
            let w = &mut self.workers[i];
            w.in_flight = w.in_flight.saturating_sub(1);
            if w.in_flight == 0 {
                w.idle_since = Instant::now();
                if let (Some(c), false) = (&self.capacity, w.draining) {
                    c.enter(w, WorkerPhase::Idle);
                }
                if w.draining || w.broken {
                    let w = self.workers.remove(i);
                    self.left(&w);
                    let why = if w.broken { "broken" } else { "drained" };
                    self.stop_worker(w.handle, w.charged, why);
                }
            }
        }
        self.env
            .metrics
            .in_flight
            .with_label_values(&[&self.model])
            .dec();
    }

    /// Workers counting toward capacity: running (not broken or draining) and starting.
    pub(super) fn current(&self) -> usize {
        self.workers.iter().filter(|w| w.live()).count() + self.starting
    }

    /// Starts a worker when requests wait and nothing starting could serve them (the
    /// cold-start path, like Knative's activator: the autoscaler's tick would come up
    /// to a second later). Counted as a `panic` scale-up: demand is over capacity.
    pub(super) fn maybe_start(&mut self) {
        if self.closed || self.waiters.is_empty() {
            return;
        }
        if self.starting * self.cfg.concurrency >= self.waiters.len() {
            return;
        }
        if self.start_one() {
            self.env
                .metrics
                .scale_events
                .with_label_values(&[&self.model, "up", "panic"])
                .inc();
            self.env.recent.scaled(&self.model, "up", "panic", 1);
            tracing::info!(
                model = %self.model,
                queued = self.waiters.len(),
                starting = self.starting,
                "scale up: requests wait with no free slot"
            );
        }
    }

    /// Starts one worker if the pool is open, under `max_workers`, out of backoff and
    /// the worker fits the budget; a start that does not fit rings the autoscaler.
    pub(super) fn start_one(&mut self) -> bool {
        if self.closed
            || self.current() >= self.cfg.max_workers
            || self.retry_at.is_some_and(|t| Instant::now() < t)
        {
            return false;
        }
        if !self.env.budget.try_reserve(&self.spec.device, self.cost) {
            self.wants_room = true;
            self.env.kick.notify_one();
            return false;
        }
        let Some(me) = self.me.upgrade() else {
            self.env.budget.release(&self.spec.device, self.cost);
            return false;
        };
        self.wants_room = false;
        self.starting += 1;
        self.update_worker_gauges();
        let (prov, spec, timeout) = (
            self.env.provisioner.clone(),
            self.spec.clone(),
            self.cfg.ready_timeout,
        );
        tokio::spawn(async move {
            let started = prov.spawn(&spec, timeout).await.map(Arc::new);
            if let Err(tokio::sync::mpsc::error::SendError(Command::Started(Ok(h)))) =
                me.send(Command::Started(started))
            {
                // The pool is gone: nobody will use the worker.
                prov.stop(&h, Duration::ZERO).await;
            }
        });
        true
    }

    /// Stops a worker already taken out of `self.workers`, and frees what it was
    /// `charged`.
    pub(super) fn stop_worker(&self, handle: Arc<WorkerHandle>, charged: Cost, why: &str) {
        self.env.budget.release(&self.spec.device, charged);
        self.update_worker_gauges();
        tracing::info!(model = %self.model, worker = handle.id, why, "stopping worker");
        let prov = self.env.provisioner.clone();
        tokio::spawn(async move { prov.stop(&handle, STOP_GRACE).await });
    }

    /// Puts a ready worker into service (or stops it if the pool has closed).
    fn add_worker(&mut self, handle: Arc<WorkerHandle>) {
        self.starting -= 1;
        self.failures = 0;
        self.retry_at = None;
        let m = &self.env.metrics;
        m.cold_start_seconds
            .with_label_values(&[&self.model])
            .observe(handle.cold_start.as_secs_f64());
        for (phase, secs) in &handle.startup {
            m.cold_start_phase_seconds
                .with_label_values(&[&self.model, phase])
                .observe(*secs);
        }
        tracing::info!(
            model = %self.model,
            worker = handle.id,
            cold_start_s = handle.cold_start.as_secs_f64(),
            phases = ?handle.startup,
            "worker ready"
        );
        if let Some(c) = &self.capacity {
            c.started(&handle);
        }
        self.env
            .recent
            .cold_start(&self.model, handle.id, handle.cold_start);
        self.put_in_service(handle);
    }

    fn put_in_service(&mut self, handle: Arc<WorkerHandle>) {
        if self.closed {
            self.stop_worker(handle, self.cost, "started after shutdown");
            return;
        }
        self.workers.push(Worker {
            handle: handle.clone(),
            in_flight: 0,
            broken: false,
            draining: false,
            idle_since: Instant::now(),
            charged: self.cost,
            phase: WorkerPhase::Idle,
            phase_since_ms: capacity::now_ms(),
        });
        let last = self.workers.len() - 1;
        self.measure(last, true);
        self.update_worker_gauges();
        self.dispatch();
        self.maybe_start();
        self.watch(handle);
    }

    /// Counts the worker's lifetime when its process exits (stopped or crashed) and
    /// reports the exit to the actor.
    fn watch(&self, handle: Arc<WorkerHandle>) {
        let me = self.me.clone();
        let seconds = self
            .env
            .metrics
            .worker_seconds
            .with_label_values(&[&self.model]);
        tokio::spawn(async move {
            let why = handle.exited().await;
            seconds.inc_by(handle.started.elapsed().as_secs_f64());
            if let Some(tx) = me.upgrade() {
                let _ = tx.send(Command::Exited {
                    worker: handle.id,
                    why,
                });
            }
        });
    }

    fn backoff(&mut self, after_failures: u32) {
        let backoff = FIRST_BACKOFF
            .saturating_mul(1 << after_failures.saturating_sub(1).min(10))
            .min(MAX_BACKOFF);
        self.retry_at = Some(Instant::now() + backoff);
    }

    fn start_failed(&mut self, why: String) {
        self.env.budget.release(&self.spec.device, self.cost);
        self.starting -= 1;
        self.failures += 1;
        self.backoff(self.failures);
        tracing::warn!(model = %self.model, %why, retry_at = ?self.retry_at, "worker failed to start");
        self.update_worker_gauges();
        // With nothing running or starting, nobody can be served: fail the waiters
        // now rather than at their timeout.
        if self.workers.is_empty() && self.starting == 0 {
            self.note_demand();
            for w in self.waiters.drain(..) {
                let _ = w.reply.send(Err(ApiError::WorkerUnavailable {
                    model: self.model.clone(),
                    why: why.clone(),
                }));
            }
            self.set_queue_gauge();
        }
    }

    /// Removes an exited worker; replaces it if anyone waits.
    fn exited(&mut self, worker: u64, why: String) {
        let Some(i) = self.workers.iter().position(|w| w.handle.id == worker) else {
            // Stopped on purpose (already out of the pool and the budget).
            return;
        };
        self.note_demand();
        let w = self.workers.remove(i);
        self.left(&w);
        self.env.budget.release(&self.spec.device, w.charged);
        if !self.closed {
            tracing::warn!(model = %self.model, worker, %why, "worker died");
            self.failures += 1;
            // The first crash is replaced at once; repeated ones back off.
            if self.failures > 1 {
                self.backoff(self.failures - 1);
            }
        }
        self.update_worker_gauges();
        self.maybe_start();
    }

    /// A worker left the pool: its last phase ends now.
    pub(super) fn left(&self, w: &Worker) {
        if let Some(c) = &self.capacity {
            c.leave(w);
        }
    }

    pub(super) fn update_worker_gauges(&self) {
        let g = |state: &str, n: usize| {
            self.env
                .metrics
                .workers
                .with_label_values(&[&self.model, state])
                .set(n as i64)
        };
        let count = |f: fn(&Worker) -> bool| self.workers.iter().filter(|w| f(w)).count();
        g("starting", self.starting);
        g("ready", count(Worker::live));
        g("draining", count(|w| w.draining && !w.broken));
        g("failed", count(|w| w.broken));
    }
}
