//! Per-model worker pools: leases on worker slots, the cold-start admission queue, and
//! worker lifecycle (start on demand, replace crashed, reap idle).
//!
//! A request asks its model's [`Pool`] for a [`Lease`]: a slot on the least-loaded
//! ready worker (in-flight below `concurrency`). With no free slot it waits in a
//! bounded FIFO queue — the "activator" — and the pool starts a worker when there is
//! room under `max_workers`; the waiter is released when a worker becomes ready or a
//! slot frees. Queue full → 429, waited past `queue_timeout` → 503, both with
//! `Retry-After`. Dropping a lease frees its slot and hands it to the next waiter.
//! Workers that crash are removed (their in-flight requests fail at the proxy) and
//! replaced while anyone waits, with exponential backoff after repeated failures.
//!
//! How many workers a pool runs beyond that first on-demand start is the autoscaler's
//! call ([`super::scaling`]): it starts workers on spikes and drains them when demand
//! falls (a draining worker takes no new leases and is stopped when its last one
//! ends). Every worker, starting or running, is charged against its device's
//! [`Budget`]; a start that does not fit asks the autoscaler to make room.

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use tokio::sync::{oneshot, Notify};

use super::autoscale::{Autoscaler, Decision, ScalePolicy};
use super::budget::{worker_cost, Budget, Placer};
use super::config::{GatewayConfig, PoolConfig};
use super::errors::GatewayError;
use super::gpus;
use super::metrics::GatewayMetrics;
use super::provision::{Provisioner, WorkerHandle, WorkerSpec};
use super::registry::Registry;

/// How long a stopped worker may take to exit before it is killed (it has no requests
/// left when it is stopped, so this only bounds a stuck process).
pub(super) const STOP_GRACE: Duration = Duration::from_secs(30);
/// Backoff after the first failed start, doubling up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// What every pool shares: how to start workers, where to count, the machine's budget
/// and the autoscaler's doorbell.
#[derive(Clone)]
pub struct PoolEnv {
    pub provisioner: Arc<dyn Provisioner>,
    pub metrics: Arc<GatewayMetrics>,
    pub budget: Arc<Budget>,
    /// Rung when a start does not fit the budget, so room is made without waiting for
    /// the next autoscaler tick.
    pub kick: Arc<Notify>,
}

/// Every model's pool.
pub struct Pools {
    pools: HashMap<String, Arc<Pool>>,
    pub env: PoolEnv,
}

impl Pools {
    pub fn new(
        cfg: &GatewayConfig,
        registry: &Registry,
        provisioner: Arc<dyn Provisioner>,
        metrics: Arc<GatewayMetrics>,
    ) -> Arc<Pools> {
        let gpus = gpus::discover();
        let env = PoolEnv {
            provisioner,
            metrics,
            budget: Arc::new(Budget::new(cfg.cpu_budget, &gpus, cfg.gpu_memory_fraction)),
            kick: Arc::new(Notify::new()),
        };
        let mut placer = Placer::new(gpus);
        let pools = registry
            .entries()
            .iter()
            .map(|e| {
                let mut pc = cfg.pool(&e.name, &e.aliases);
                if pc.device == "auto" {
                    pc.device = placer.place(e);
                }
                let cost = worker_cost(&pc.device, &pc, Some(e));
                tracing::info!(model = %e.name, device = %pc.device, cost, "pool");
                let pool = Pool::new(&e.name, pc, cost, env.clone());
                (e.name.clone(), pool)
            })
            .collect();
        Arc::new(Pools { pools, env })
    }

    pub fn get(&self, model: &str) -> Option<Arc<Pool>> {
        self.pools.get(model).cloned()
    }

    pub fn all(&self) -> impl Iterator<Item = &Arc<Pool>> {
        self.pools.values()
    }

    /// Stops admitting, waits (at most `grace`) for in-flight requests, stops workers.
    pub async fn shutdown(&self, grace: Duration) {
        for p in self.all() {
            p.close();
        }
        let deadline = Instant::now() + grace;
        while self.all().any(|p| p.in_flight() > 0) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        for p in self.all() {
            p.stop_all(Duration::from_secs(5)).await;
        }
    }
}

/// One model's workers and waiting requests.
pub struct Pool {
    pub model: String,
    pub cfg: PoolConfig,
    /// What one worker costs on `spec.device` (see [`Budget`]).
    pub cost: f64,
    pub(super) spec: WorkerSpec,
    pub(super) env: PoolEnv,
    state: Mutex<State>,
    me: Weak<Pool>,
}

pub(super) struct State {
    pub(super) workers: Vec<Worker>,
    pub(super) waiters: VecDeque<Waiter>,
    pub(super) starting: usize,
    /// Consecutive failed starts, for backoff.
    failures: u32,
    retry_at: Option<Instant>,
    pub(super) closed: bool,
    pub(super) scaler: Autoscaler,
    /// The autoscaler's last decision (for `/admin/pools`).
    pub(super) decision: Option<Decision>,
    /// A start did not fit the budget: the autoscaler should make room.
    pub(super) wants_room: bool,
    /// Demand (in flight + queued) integrated over time since the last autoscaler tick,
    /// so requests that start and end between two ticks still count.
    demand_area: f64,
    demand_changed: Instant,
    last_tick: Instant,
}

impl State {
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
}

pub(super) struct Worker {
    pub(super) handle: Arc<WorkerHandle>,
    pub(super) in_flight: usize,
    pub(super) broken: bool,
    /// Takes no new leases; stopped when its last one ends.
    pub(super) draining: bool,
    pub(super) idle_since: Instant,
}

impl Worker {
    /// Counts toward the pool's capacity.
    pub(super) fn live(&self) -> bool {
        !self.broken && !self.draining
    }
}

type Waiter = oneshot::Sender<Result<Lease, GatewayError>>;

/// A slot on one worker; dropping it frees the slot.
pub struct Lease {
    pool: Arc<Pool>,
    worker: Arc<WorkerHandle>,
}

impl Lease {
    pub fn socket(&self) -> &Path {
        &self.worker.socket
    }

    pub fn worker_id(&self) -> u64 {
        self.worker.id
    }

    /// The worker failed this request (could not connect, died): send it no more.
    pub fn mark_failed(&self) {
        let mut st = self.pool.lock();
        if let Some(w) = st
            .workers
            .iter_mut()
            .find(|w| w.handle.id == self.worker.id)
        {
            w.broken = true;
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.pool.release(self.worker.id);
    }
}

impl Pool {
    pub fn new(model: &str, cfg: PoolConfig, cost: f64, env: PoolEnv) -> Arc<Pool> {
        let device = match cfg.device.as_str() {
            // Placed by `Pools::new`; a pool built alone has no GPU list.
            "auto" => "cpu".to_string(),
            d => d.to_string(),
        };
        Arc::new_cyclic(|me| Pool {
            model: model.to_string(),
            spec: WorkerSpec {
                model: model.to_string(),
                device,
                args: cfg.worker_args.clone(),
            },
            state: Mutex::new(State {
                workers: Vec::new(),
                waiters: VecDeque::new(),
                starting: 0,
                failures: 0,
                retry_at: None,
                closed: false,
                scaler: Autoscaler::new(ScalePolicy::for_pool(&cfg)),
                decision: None,
                wants_room: false,
                demand_area: 0.0,
                demand_changed: Instant::now(),
                last_tick: Instant::now(),
            }),
            cfg,
            cost,
            env,
            me: me.clone(),
        })
    }

    pub(super) fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn arc(&self) -> Arc<Pool> {
        self.me
            .upgrade()
            .expect("a pool is only used through its Arc")
    }

    /// Requests being served by this pool's workers.
    pub fn in_flight(&self) -> usize {
        self.lock().workers.iter().map(|w| w.in_flight).sum()
    }

    /// Waits for a worker slot (see the module docs).
    pub async fn acquire(self: &Arc<Self>) -> Result<Lease, GatewayError> {
        let arrived = Instant::now();
        let rx = {
            let mut st = self.lock();
            if st.closed {
                return Err(GatewayError::ShuttingDown);
            }
            if st.waiters.is_empty() {
                if let Some(lease) = self.take_slot(&mut st) {
                    self.observe_wait(arrived);
                    return Ok(lease);
                }
            }
            if st.waiters.len() >= self.cfg.queue_size {
                return Err(GatewayError::QueueFull {
                    model: self.model.clone(),
                    retry_after: Duration::from_secs(1),
                });
            }
            let (tx, rx) = oneshot::channel();
            st.note_demand();
            st.waiters.push_back(tx);
            self.env
                .metrics
                .queue_depth
                .with_label_values(&[&self.model])
                .set(st.waiters.len() as i64);
            self.maybe_start(&mut st);
            rx
        };
        let got = tokio::time::timeout(self.cfg.queue_timeout, rx).await;
        self.observe_wait(arrived);
        match got {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err(GatewayError::ShuttingDown),
            Err(_) => Err(GatewayError::QueueTimeout {
                model: self.model.clone(),
                retry_after: Duration::from_secs(1),
            }),
        }
    }

    fn observe_wait(&self, arrived: Instant) {
        self.env
            .metrics
            .queue_wait_seconds
            .with_label_values(&[&self.model])
            .observe(arrived.elapsed().as_secs_f64());
    }

    /// A slot on the least-loaded usable worker, if any has room.
    fn take_slot(&self, st: &mut State) -> Option<Lease> {
        st.note_demand();
        let w = st
            .workers
            .iter_mut()
            .filter(|w| w.live() && w.in_flight < self.cfg.concurrency)
            .min_by_key(|w| w.in_flight)?;
        w.in_flight += 1;
        let worker = w.handle.clone();
        self.env
            .metrics
            .in_flight
            .with_label_values(&[&self.model])
            .inc();
        Some(Lease {
            pool: self.arc(),
            worker,
        })
    }

    /// Hands free slots to waiters, first come first served.
    fn dispatch(&self, st: &mut State) {
        while let Some(front) = st.waiters.front() {
            if front.is_closed() {
                st.note_demand();
                st.waiters.pop_front();
                continue;
            }
            let Some(lease) = self.take_slot(st) else {
                break;
            };
            st.note_demand();
            let tx = st.waiters.pop_front().expect("front exists");
            if let Err(Ok(lease)) = tx.send(Ok(lease)) {
                // The waiter left between the check and the send: take the slot back
                // without re-entering the lock through Drop.
                self.unlease(st, lease);
            }
        }
        self.env
            .metrics
            .queue_depth
            .with_label_values(&[&self.model])
            .set(st.waiters.len() as i64);
    }

    fn unlease(&self, st: &mut State, lease: Lease) {
        let id = lease.worker.id;
        std::mem::forget(lease);
        self.free_slot(st, id);
    }

    fn free_slot(&self, st: &mut State, id: u64) {
        st.note_demand();
        if let Some(i) = st.workers.iter().position(|w| w.handle.id == id) {
            let w = &mut st.workers[i];
            w.in_flight = w.in_flight.saturating_sub(1);
            if w.in_flight == 0 {
                w.idle_since = Instant::now();
                if w.draining {
                    let w = st.workers.remove(i);
                    self.stop_worker(st, w.handle, "drained");
                }
            }
        }
        self.env
            .metrics
            .in_flight
            .with_label_values(&[&self.model])
            .dec();
    }

    fn release(&self, id: u64) {
        let mut st = self.lock();
        self.free_slot(&mut st, id);
        self.dispatch(&mut st);
    }

    /// Workers counting toward capacity: running (not broken or draining) and starting.
    pub(super) fn current(st: &State) -> usize {
        st.workers.iter().filter(|w| w.live()).count() + st.starting
    }

    /// Starts a worker when requests wait and nothing starting could serve them (the
    /// cold-start path, like Knative's activator: the autoscaler's tick would come up
    /// to a second later). Counted as a `panic` scale-up: demand is over capacity.
    pub(super) fn maybe_start(&self, st: &mut State) {
        if st.closed || st.waiters.is_empty() {
            return;
        }
        let spare_slots_soon = st.starting * self.cfg.concurrency;
        if spare_slots_soon >= st.waiters.len() {
            return;
        }
        if self.start_one(st) {
            self.env
                .metrics
                .scale_events
                .with_label_values(&[&self.model, "up", "panic"])
                .inc();
            tracing::info!(
                model = %self.model,
                queued = st.waiters.len(),
                starting = st.starting,
                "scale up: requests wait with no free slot"
            );
        }
    }

    /// Starts one worker if the pool is open, under `max_workers`, out of backoff and
    /// the worker fits the budget; a start that does not fit rings the autoscaler.
    pub(super) fn start_one(&self, st: &mut State) -> bool {
        if st.closed
            || Self::current(st) >= self.cfg.max_workers
            || st.retry_at.is_some_and(|t| Instant::now() < t)
        {
            return false;
        }
        if !self.env.budget.try_reserve(&self.spec.device, self.cost) {
            st.wants_room = true;
            self.env.kick.notify_one();
            return false;
        }
        st.wants_room = false;
        st.starting += 1;
        self.update_worker_gauges(st);
        let pool = self.arc();
        tokio::spawn(async move { pool.start_worker().await });
        true
    }

    async fn start_worker(self: Arc<Self>) {
        let result = self
            .env
            .provisioner
            .spawn(&self.spec, self.cfg.ready_timeout)
            .await;
        let orphan = match result {
            Ok(handle) => self.add_worker(Arc::new(handle)),
            Err(why) => {
                self.start_failed(why);
                None
            }
        };
        // Started after shutdown began: nobody will use it.
        if let Some(h) = orphan {
            self.env.budget.release(&self.spec.device, self.cost);
            self.env.provisioner.stop(&h, Duration::ZERO).await;
        }
    }

    /// Stops a worker already taken out of `st.workers`, and frees its budget.
    pub(super) fn stop_worker(&self, st: &State, handle: Arc<WorkerHandle>, why: &str) {
        self.env.budget.release(&self.spec.device, self.cost);
        self.update_worker_gauges(st);
        tracing::info!(model = %self.model, worker = handle.id, why, "stopping worker");
        let prov = self.env.provisioner.clone();
        tokio::spawn(async move { prov.stop(&handle, STOP_GRACE).await });
    }

    /// Puts a ready worker into service; returns it back if the pool has closed.
    fn add_worker(self: &Arc<Self>, handle: Arc<WorkerHandle>) -> Option<Arc<WorkerHandle>> {
        let mut st = self.lock();
        st.starting -= 1;
        st.failures = 0;
        st.retry_at = None;
        self.env
            .metrics
            .cold_start_seconds
            .with_label_values(&[&self.model])
            .observe(handle.cold_start.as_secs_f64());
        for (phase, secs) in &handle.startup {
            self.env
                .metrics
                .cold_start_phase_seconds
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
        if st.closed {
            return Some(handle);
        }
        st.workers.push(Worker {
            handle: handle.clone(),
            in_flight: 0,
            broken: false,
            draining: false,
            idle_since: Instant::now(),
        });
        self.update_worker_gauges(&st);
        self.dispatch(&mut st);
        self.maybe_start(&mut st);
        drop(st);
        self.watch(handle);
        None
    }

    fn start_failed(&self, why: String) {
        self.env.budget.release(&self.spec.device, self.cost);
        let mut st = self.lock();
        st.starting -= 1;
        st.failures += 1;
        let backoff = FIRST_BACKOFF
            .saturating_mul(1 << (st.failures - 1).min(10))
            .min(MAX_BACKOFF);
        st.retry_at = Some(Instant::now() + backoff);
        tracing::warn!(model = %self.model, %why, backoff_s = backoff.as_secs_f64(), "worker failed to start");
        self.update_worker_gauges(&st);
        // With nothing running or starting, nobody can be served: fail the waiters
        // now rather than at their timeout.
        if st.workers.is_empty() && st.starting == 0 {
            for w in st.waiters.drain(..) {
                let _ = w.send(Err(GatewayError::WorkerUnavailable {
                    model: self.model.clone(),
                    why: why.clone(),
                }));
            }
            self.dispatch(&mut st);
        }
    }

    /// Removes the worker when its process exits; replaces it if anyone waits.
    fn watch(self: &Arc<Self>, handle: Arc<WorkerHandle>) {
        let pool = self.clone();
        tokio::spawn(async move {
            let why = handle.exited().await;
            let mut st = pool.lock();
            let before = st.workers.len();
            st.workers.retain(|w| w.handle.id != handle.id);
            if st.workers.len() < before {
                // Still in the pool: it was not stopped on purpose.
                pool.env.budget.release(&pool.spec.device, pool.cost);
            }
            if st.workers.len() < before && !st.closed {
                tracing::warn!(model = %pool.model, worker = handle.id, %why, "worker died");
                st.failures += 1;
                // The first crash is replaced at once; repeated ones back off.
                if st.failures > 1 {
                    let backoff = FIRST_BACKOFF
                        .saturating_mul(1 << (st.failures - 2).min(10))
                        .min(MAX_BACKOFF);
                    st.retry_at = Some(Instant::now() + backoff);
                }
            }
            pool.env
                .metrics
                .worker_seconds
                .with_label_values(&[&pool.model])
                .inc_by(handle.started.elapsed().as_secs_f64());
            pool.update_worker_gauges(&st);
            pool.maybe_start(&mut st);
        });
    }

    pub(super) fn update_worker_gauges(&self, st: &State) {
        let g = |state: &str, n: usize| {
            self.env
                .metrics
                .workers
                .with_label_values(&[&self.model, state])
                .set(n as i64)
        };
        let count = |f: fn(&Worker) -> bool| st.workers.iter().filter(|w| f(w)).count();
        g("starting", st.starting);
        g("ready", count(Worker::live));
        g("draining", count(|w| w.draining && !w.broken));
        g("failed", count(|w| w.broken));
    }

    /// Stops admitting: waiters get 503, new requests too.
    fn close(&self) {
        let mut st = self.lock();
        st.closed = true;
        for w in st.waiters.drain(..) {
            let _ = w.send(Err(GatewayError::ShuttingDown));
        }
    }

    async fn stop_all(&self, grace: Duration) {
        let workers: Vec<Arc<WorkerHandle>> = {
            let mut st = self.lock();
            st.workers.drain(..).map(|w| w.handle).collect()
        };
        for w in workers {
            self.env.budget.release(&self.spec.device, self.cost);
            self.env.provisioner.stop(&w, grace).await;
        }
    }

    /// Sockets of ready workers (for tests and the admin view).
    pub fn worker_sockets(&self) -> Vec<PathBuf> {
        self.lock()
            .workers
            .iter()
            .map(|w| w.handle.socket.clone())
            .collect()
    }
}

#[cfg(test)]
#[path = "pool_tests.rs"]
mod tests;
