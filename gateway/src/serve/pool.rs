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
//! Idle workers beyond `min_workers` stop after `idle_timeout`.

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use super::config::{GatewayConfig, PoolConfig};
use super::errors::GatewayError;
use super::gpus::{self, Gpu};
use super::metrics::GatewayMetrics;
use super::provision::{Provisioner, WorkerHandle, WorkerSpec};
use super::registry::{ModelEntry, Registry};
use surge_models::ModelKind;

/// How long a drained worker may take to finish before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(30);
/// Backoff after the first failed start, doubling up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Every model's pool.
pub struct Pools {
    pools: HashMap<String, Arc<Pool>>,
}

impl Pools {
    pub fn new(
        cfg: &GatewayConfig,
        registry: &Registry,
        provisioner: Arc<dyn Provisioner>,
        metrics: Arc<GatewayMetrics>,
    ) -> Arc<Pools> {
        let mut placer = Placer::new(gpus::discover());
        let pools = registry
            .entries()
            .iter()
            .map(|e| {
                let mut pc = cfg.pool(&e.name, &e.aliases);
                if pc.device == "auto" {
                    pc.device = placer.place(e);
                }
                tracing::info!(model = %e.name, device = %pc.device, "pool");
                let pool = Pool::new(&e.name, pc, provisioner.clone(), metrics.clone());
                (e.name.clone(), pool)
            })
            .collect();
        Arc::new(Pools { pools })
    }

    pub fn get(&self, model: &str) -> Option<Arc<Pool>> {
        self.pools.get(model).cloned()
    }

    pub fn all(&self) -> impl Iterator<Item = &Arc<Pool>> {
        self.pools.values()
    }

    /// Starts the once-a-second housekeeping (idle reaping, `min_workers`).
    pub fn start_background(self: &Arc<Self>) {
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tick.tick().await;
                let Some(pools) = weak.upgrade() else { return };
                for p in pools.all() {
                    p.housekeep();
                }
            }
        });
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

/// Chooses a device for pools configured with `device = "auto"`: the emptiest GPU whose
/// unclaimed memory still fits one worker of the model (weights × [`GPU_MEMORY_FACTOR`]),
/// otherwise the CPU. GPUs are shared between models this way; a pool's further
/// workers go to the same device. Whisper runs on the CPU kernels only.
struct Placer {
    gpus: Vec<(Gpu, u64)>,
}

/// Weights plus KV cache and activations, as a multiple of the weights' size.
const GPU_MEMORY_FACTOR: u64 = 3;

impl Placer {
    fn new(gpus: Vec<Gpu>) -> Self {
        let gpus = gpus
            .into_iter()
            .map(|g| {
                // Leave a tenth for the driver and fragmentation.
                let budget = g.total_memory / 10 * 9;
                (g, budget)
            })
            .collect();
        Self { gpus }
    }

    fn place(&mut self, e: &ModelEntry) -> String {
        if e.kind != ModelKind::Llm {
            return "cpu".into();
        }
        let need = e.size.saturating_mul(GPU_MEMORY_FACTOR);
        match self
            .gpus
            .iter_mut()
            .filter(|(_, free)| *free >= need)
            .max_by_key(|(_, free)| *free)
        {
            Some((g, free)) => {
                *free -= need;
                g.device_arg()
            }
            None => "cpu".into(),
        }
    }
}

/// One model's workers and waiting requests.
pub struct Pool {
    pub model: String,
    pub cfg: PoolConfig,
    spec: WorkerSpec,
    provisioner: Arc<dyn Provisioner>,
    metrics: Arc<GatewayMetrics>,
    state: Mutex<State>,
    me: Weak<Pool>,
}

#[derive(Default)]
struct State {
    workers: Vec<Worker>,
    waiters: VecDeque<Waiter>,
    starting: usize,
    /// Consecutive failed starts, for backoff.
    failures: u32,
    retry_at: Option<Instant>,
    closed: bool,
}

struct Worker {
    handle: Arc<WorkerHandle>,
    in_flight: usize,
    broken: bool,
    idle_since: Instant,
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
    pub fn new(
        model: &str,
        cfg: PoolConfig,
        provisioner: Arc<dyn Provisioner>,
        metrics: Arc<GatewayMetrics>,
    ) -> Arc<Pool> {
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
            cfg,
            provisioner,
            metrics,
            state: Mutex::new(State::default()),
            me: me.clone(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn arc(&self) -> Arc<Pool> {
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
            st.waiters.push_back(tx);
            self.metrics
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
        self.metrics
            .queue_wait_seconds
            .with_label_values(&[&self.model])
            .observe(arrived.elapsed().as_secs_f64());
    }

    /// A slot on the least-loaded usable worker, if any has room.
    fn take_slot(&self, st: &mut State) -> Option<Lease> {
        let w = st
            .workers
            .iter_mut()
            .filter(|w| !w.broken && w.in_flight < self.cfg.concurrency)
            .min_by_key(|w| w.in_flight)?;
        w.in_flight += 1;
        let worker = w.handle.clone();
        self.metrics
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
                st.waiters.pop_front();
                continue;
            }
            let Some(lease) = self.take_slot(st) else {
                break;
            };
            let tx = st.waiters.pop_front().expect("front exists");
            if let Err(Ok(lease)) = tx.send(Ok(lease)) {
                // The waiter left between the check and the send: take the slot back
                // without re-entering the lock through Drop.
                self.unlease(st, lease);
            }
        }
        self.metrics
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
        if let Some(w) = st.workers.iter_mut().find(|w| w.handle.id == id) {
            w.in_flight = w.in_flight.saturating_sub(1);
            if w.in_flight == 0 {
                w.idle_since = Instant::now();
            }
        }
        self.metrics
            .in_flight
            .with_label_values(&[&self.model])
            .dec();
    }

    fn release(&self, id: u64) {
        let mut st = self.lock();
        self.free_slot(&mut st, id);
        self.dispatch(&mut st);
    }

    /// Starts a worker when requests wait, nothing starting could serve them, and
    /// there is room under `max_workers` (and no backoff in force).
    fn maybe_start(&self, st: &mut State) {
        if st.closed || st.waiters.is_empty() {
            return;
        }
        let live = st.workers.iter().filter(|w| !w.broken).count();
        let spare_slots_soon = st.starting * self.cfg.concurrency;
        if spare_slots_soon >= st.waiters.len() || live + st.starting >= self.cfg.max_workers {
            return;
        }
        if st.retry_at.is_some_and(|t| Instant::now() < t) {
            return;
        }
        st.starting += 1;
        self.update_worker_gauges(st);
        let pool = self.arc();
        tokio::spawn(async move { pool.start_worker().await });
    }

    async fn start_worker(self: Arc<Self>) {
        let result = self
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
            self.provisioner.stop(&h, Duration::ZERO).await;
        }
    }

    /// Puts a ready worker into service; returns it back if the pool has closed.
    fn add_worker(self: &Arc<Self>, handle: Arc<WorkerHandle>) -> Option<Arc<WorkerHandle>> {
        let mut st = self.lock();
        st.starting -= 1;
        st.failures = 0;
        st.retry_at = None;
        self.metrics
            .cold_start_seconds
            .with_label_values(&[&self.model])
            .observe(handle.cold_start.as_secs_f64());
        tracing::info!(
            model = %self.model,
            worker = handle.id,
            cold_start_s = handle.cold_start.as_secs_f64(),
            "worker ready"
        );
        if st.closed {
            return Some(handle);
        }
        st.workers.push(Worker {
            handle: handle.clone(),
            in_flight: 0,
            broken: false,
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
            pool.metrics
                .worker_seconds
                .with_label_values(&[&pool.model])
                .inc_by(handle.started.elapsed().as_secs_f64());
            pool.update_worker_gauges(&st);
            pool.maybe_start(&mut st);
        });
    }

    /// Reaps idle and broken workers, keeps `min_workers`, retries starts after backoff.
    fn housekeep(&self) {
        let mut st = self.lock();
        if st.closed {
            return;
        }
        let now = Instant::now();
        let live = st.workers.iter().filter(|w| !w.broken).count();
        let mut excess = live.saturating_sub(self.cfg.min_workers);
        let mut stop = Vec::new();
        st.workers.retain(|w| {
            let idle =
                w.in_flight == 0 && now.duration_since(w.idle_since) >= self.cfg.idle_timeout;
            let reap = (w.broken && w.in_flight == 0) || (idle && excess > 0 && !w.broken);
            if reap {
                if !w.broken {
                    excess -= 1;
                }
                stop.push(w.handle.clone());
            }
            !reap
        });
        let want = self
            .cfg
            .min_workers
            .saturating_sub(st.workers.len() + st.starting);
        for _ in 0..want {
            if st.retry_at.is_some_and(|t| now < t) {
                break;
            }
            st.starting += 1;
            let pool = self.arc();
            tokio::spawn(async move { pool.start_worker().await });
        }
        self.maybe_start(&mut st);
        self.update_worker_gauges(&st);
        drop(st);
        for h in stop {
            tracing::info!(model = %self.model, worker = h.id, "stopping idle worker");
            let prov = self.provisioner.clone();
            tokio::spawn(async move { prov.stop(&h, STOP_GRACE).await });
        }
    }

    fn update_worker_gauges(&self, st: &State) {
        let g = |state: &str, n: usize| {
            self.metrics
                .workers
                .with_label_values(&[&self.model, state])
                .set(n as i64)
        };
        let broken = st.workers.iter().filter(|w| w.broken).count();
        g("starting", st.starting);
        g("ready", st.workers.len() - broken);
        g("failed", broken);
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
            self.provisioner.stop(&w, grace).await;
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
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use async_trait::async_trait;
    use tokio::sync::watch;

    use super::*;

    /// Starts "workers" after `delay` (or fails), and lets a test kill them.
    struct Fake {
        delay: Duration,
        fail: bool,
        spawned: AtomicUsize,
        exits: Mutex<Vec<watch::Sender<Option<String>>>>,
    }

    impl Fake {
        fn new(delay_ms: u64, fail: bool) -> Arc<Fake> {
            Arc::new(Fake {
                delay: Duration::from_millis(delay_ms),
                fail,
                spawned: AtomicUsize::new(0),
                exits: Mutex::new(Vec::new()),
            })
        }

        fn kill(&self, i: usize) {
            let _ = self.exits.lock().unwrap()[i].send(Some("killed".into()));
        }
    }

    #[async_trait]
    impl Provisioner for Fake {
        async fn spawn(&self, _: &WorkerSpec, _: Duration) -> Result<WorkerHandle, String> {
            tokio::time::sleep(self.delay).await;
            if self.fail {
                return Err("boom".into());
            }
            let n = self.spawned.fetch_add(1, Ordering::SeqCst) as u64;
            let (h, tx) = WorkerHandle::new(n, format!("/tmp/w{n}").into(), None, self.delay);
            self.exits.lock().unwrap().push(tx);
            Ok(h)
        }

        async fn stop(&self, _: &WorkerHandle, _: Duration) {}
    }

    fn pool(fake: &Arc<Fake>, f: impl FnOnce(&mut PoolConfig)) -> Arc<Pool> {
        let mut cfg = PoolConfig {
            max_workers: 1,
            concurrency: 1,
            queue_size: 2,
            queue_timeout: Duration::from_secs(5),
            ..PoolConfig::default()
        };
        f(&mut cfg);
        let metrics = Arc::new(GatewayMetrics::new().unwrap());
        Pool::new("m", cfg, fake.clone(), metrics)
    }

    #[test]
    fn auto_placement_fits_gpus_by_memory() {
        let gpu = |i, gib: u64| Gpu {
            ordinal: i,
            name: "test".into(),
            total_memory: gib << 30,
        };
        let model = |kind, mib: u64| ModelEntry {
            name: "m".into(),
            kind,
            aliases: vec![],
            size: mib << 20,
        };
        let mut p = Placer::new(vec![gpu(0, 1), gpu(1, 2)]);
        assert_eq!(p.place(&model(ModelKind::Whisper, 75)), "cpu");
        assert_eq!(p.place(&model(ModelKind::Llm, 400)), "cuda:1"); // 1.2 GiB: only GPU 1 fits
        assert_eq!(p.place(&model(ModelKind::Llm, 200)), "cuda:0"); // now the emptier one
        assert_eq!(p.place(&model(ModelKind::Llm, 400)), "cpu"); // nothing left fits
        assert_eq!(Placer::new(vec![]).place(&model(ModelKind::Llm, 1)), "cpu");
    }

    #[tokio::test]
    async fn a_cold_request_waits_for_the_worker_it_starts() {
        let fake = Fake::new(50, false);
        let p = pool(&fake, |_| {});
        let t = Instant::now();
        let lease = p.acquire().await.unwrap();
        assert!(t.elapsed() >= Duration::from_millis(50));
        assert_eq!(fake.spawned.load(Ordering::SeqCst), 1);
        drop(lease);
        // Warm now: no new worker, no wait.
        let _again = p.acquire().await.unwrap();
        assert_eq!(fake.spawned.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn full_queue_is_429_and_a_long_wait_503() {
        let fake = Fake::new(0, false);
        let p = pool(&fake, |c| c.queue_timeout = Duration::from_millis(100));
        let held = p.acquire().await.unwrap();
        let (a, b) = (p.clone(), p.clone());
        let w1 = tokio::spawn(async move { a.acquire().await.map(|_| ()) });
        let w2 = tokio::spawn(async move { b.acquire().await.map(|_| ()) });
        tokio::time::sleep(Duration::from_millis(20)).await;
        let e = p.acquire().await.err().unwrap();
        assert_eq!(e.status(), 429, "{e}");
        for w in [w1, w2] {
            let e = w.await.unwrap().err().unwrap();
            assert_eq!(e.status(), 503, "{e}");
            assert!(e.retry_after().is_some());
        }
        drop(held);
    }

    #[tokio::test]
    async fn a_freed_slot_goes_to_the_first_waiter() {
        let fake = Fake::new(0, false);
        let p = pool(&fake, |_| {});
        let held = p.acquire().await.unwrap();
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for i in 0..2 {
            let (p, order) = (p.clone(), order.clone());
            tasks.push(tokio::spawn(async move {
                let l = p.acquire().await.unwrap();
                order.lock().unwrap().push(i);
                tokio::time::sleep(Duration::from_millis(10)).await;
                drop(l);
            }));
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        drop(held);
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(*order.lock().unwrap(), vec![0, 1]);
    }

    #[tokio::test]
    async fn leases_go_to_the_least_loaded_worker() {
        let fake = Fake::new(0, false);
        let p = pool(&fake, |c| {
            c.max_workers = 2;
            c.concurrency = 4;
            c.min_workers = 2;
        });
        p.housekeep();
        tokio::time::sleep(Duration::from_millis(20)).await;
        let leases: Vec<Lease> = futures_collect(&p, 4).await;
        let on0 = leases.iter().filter(|l| l.worker_id() == 0).count();
        assert_eq!(on0, 2, "two workers share four leases evenly");
    }

    async fn futures_collect(p: &Arc<Pool>, n: usize) -> Vec<Lease> {
        let mut v = Vec::new();
        for _ in 0..n {
            v.push(p.acquire().await.unwrap());
        }
        v
    }

    #[tokio::test]
    async fn failed_starts_fail_waiters_fast_then_back_off() {
        let fake = Fake::new(10, true);
        let p = pool(&fake, |_| {});
        let e = p.acquire().await.err().unwrap();
        assert_eq!(e.status(), 503);
        assert!(e.to_string().contains("boom"), "{e}");
        // Within the backoff no new start is attempted: the request waits, then times out.
        let p2 = pool(&fake, |c| c.queue_timeout = Duration::from_millis(50));
        let _ = p2.acquire().await;
        let e = p2.acquire().await.err().unwrap();
        assert_eq!(e.status(), 503);
    }

    #[tokio::test]
    async fn a_dead_worker_is_replaced_for_the_next_request() {
        let fake = Fake::new(0, false);
        let p = pool(&fake, |_| {});
        drop(p.acquire().await.unwrap());
        fake.kill(0);
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(p.worker_sockets().is_empty());
        let lease = p.acquire().await.unwrap();
        assert_eq!(lease.worker_id(), 1);
    }
}
