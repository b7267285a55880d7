//! Pool unit tests with a fake provisioner (workers that start after a delay).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use async_trait::async_trait;
use tokio::sync::watch;

use super::*;

#[path = "room_tests.rs"]
mod room;

/// Starts "workers" after `delay` (or fails), and lets a test kill them.
struct Fake {
    delay: Duration,
    fail: bool,
    /// The pid its workers report (a real process, so `VmRSS` can be read).
    pid: Option<u32>,
    spawned: AtomicUsize,
    stopped: AtomicUsize,
    exits: Mutex<Vec<watch::Sender<Option<String>>>>,
}

impl Fake {
    fn new(delay_ms: u64, fail: bool) -> Arc<Fake> {
        Self::with_pid(delay_ms, fail, None)
    }

    fn with_pid(delay_ms: u64, fail: bool, pid: Option<u32>) -> Arc<Fake> {
        Arc::new(Fake {
            delay: Duration::from_millis(delay_ms),
            fail,
            pid,
            spawned: AtomicUsize::new(0),
            stopped: AtomicUsize::new(0),
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
        let (h, tx) = WorkerHandle::new(
            n,
            Endpoint::Unix(format!("/tmp/w{n}").into()),
            self.pid,
            self.delay,
        );
        self.exits.lock().unwrap().push(tx);
        Ok(h)
    }

    async fn stop(&self, w: &WorkerHandle, _: Duration) {
        self.stopped.fetch_add(1, Ordering::SeqCst);
        let _ = self.exits.lock().unwrap()[w.id as usize].send(Some("stopped".into()));
    }
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
    Pool::new(
        "m",
        cfg,
        Cost::cores(1.0),
        0,
        env(fake, Budget::unlimited()),
    )
}

fn env(fake: &Arc<Fake>, budget: Budget) -> PoolEnv {
    PoolEnv {
        provisioner: fake.clone(),
        metrics: Arc::new(GatewayMetrics::new().unwrap()),
        budget: Arc::new(budget),
        kick: Arc::new(Notify::new()),
        runtime: tokio::runtime::Handle::current(),
        ledger: None,
        recent: crate::serve::status::Recent::new(),
    }
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
    p.tick(Instant::now()).await;
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
    assert!(p.worker_endpoints().await.is_empty());
    let lease = p.acquire().await.unwrap();
    assert_eq!(lease.worker_id(), 1);
}

fn scale_events(p: &Pool, direction: &str, reason: &str) -> u64 {
    p.metrics
        .scale_events
        .with_label_values(&[&p.model, direction, reason])
        .get()
}

fn fast_scaling(c: &mut PoolConfig) {
    c.max_workers = 4;
    c.concurrency = 2;
    c.queue_size = 16;
    c.target_utilization = 1.0;
    c.stable_window = Duration::from_secs(4);
    c.panic_window = Duration::from_secs(1);
    c.idle_timeout = Duration::from_secs(3);
}

/// A burst on an empty pool starts workers from the queue at once (one per
/// `concurrency` waiters), the autoscaler's decision agrees, and when the demand is
/// gone for `idle_timeout` every worker is stopped (scale to zero).
#[tokio::test]
async fn a_burst_scales_up_at_once_and_idle_scales_to_zero() {
    let fake = Fake::new(20, false);
    let p = pool(&fake, fast_scaling);
    let t0 = Instant::now();
    let waiting: Vec<_> = (0..6)
        .map(|_| {
            let p = p.clone();
            tokio::spawn(async move { p.acquire().await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(5)).await;
    p.tick(t0).await;
    assert_eq!(p.view().await.unwrap().desired, Some(3), "ceil(6 / 2)");
    let mut leases = Vec::new();
    for w in waiting {
        leases.push(w.await.unwrap().unwrap());
    }
    // The queue itself started them (one per two waiters), before the tick did.
    assert_eq!(fake.spawned.load(Ordering::SeqCst), 3);
    assert_eq!(scale_events(&p, "up", "panic"), 3);
    drop(leases);
    // The requests served since the last tick count as demand...
    p.tick(t0 + Duration::from_secs(5)).await;
    assert_ne!(p.view().await.unwrap().reason, Some("idle"));
    // ...then nothing for longer than idle_timeout: to zero, each worker stopped.
    p.tick(t0 + Duration::from_secs(10)).await;
    assert!(p.worker_endpoints().await.is_empty());
    tokio::time::sleep(Duration::from_millis(5)).await;
    assert_eq!(fake.stopped.load(Ordering::SeqCst), 3);
    assert_eq!(scale_events(&p, "down", "idle"), 3);
    assert_eq!(p.view().await.unwrap().ready, 0);
}

/// The status page's events: each worker that became ready (its cold start) and each
/// scaling step, newest first.
#[tokio::test]
async fn cold_starts_and_scaling_steps_are_recorded_for_the_status_page() {
    let fake = Fake::new(20, false);
    let e = env(&fake, Budget::unlimited());
    let recent = e.recent.clone();
    let mut cfg = PoolConfig::default();
    fast_scaling(&mut cfg);
    let p = Pool::new("m", cfg, Cost::cores(1.0), 0, e);
    let t0 = Instant::now();
    drop(p.acquire().await.unwrap());
    let cold = recent.cold_starts(10);
    assert_eq!(cold.len(), 1);
    assert_eq!((cold[0].model.as_str(), cold[0].worker), ("m", 0));
    assert_eq!(cold[0].seconds, 0.02);
    p.tick(t0 + Duration::from_secs(5)).await;
    p.tick(t0 + Duration::from_secs(10)).await;
    let steps: Vec<_> = recent
        .scale_events(10)
        .into_iter()
        .map(|e| (e.direction, e.reason, e.workers))
        .collect();
    let step = |d: &str, r: &str| (d.to_string(), r.to_string(), 1);
    assert_eq!(steps, [step("down", "idle"), step("up", "panic")]);
}

/// A worker chosen for scale-down takes no new leases, finishes what it serves, and is
/// stopped when its last lease ends.
#[tokio::test]
async fn scale_down_drains_a_busy_worker_before_stopping_it() {
    let fake = Fake::new(0, false);
    let p = pool(&fake, |c| {
        fast_scaling(c);
        c.min_workers = 1;
    });
    let t0 = Instant::now();
    let lease = p.acquire().await.unwrap();
    assert_eq!(p.drain(1).await, 1);
    assert_eq!(p.view().await.unwrap().workers[0].state, "draining");
    assert_eq!(fake.stopped.load(Ordering::SeqCst), 0);
    drop(lease);
    tokio::time::sleep(Duration::from_millis(5)).await;
    assert_eq!(fake.stopped.load(Ordering::SeqCst), 1);
    // min_workers = 1 brings a fresh one up.
    p.tick(t0 + Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(p.worker_endpoints().await.len(), 1);
}

/// With the CPU budget full, a cold model's start evicts the least recently used idle
/// worker of another model.
#[tokio::test]
async fn a_full_budget_evicts_the_least_recently_used_idle_worker() {
    let fake = Fake::new(0, false);
    let e = env(&fake, Budget::new(2.0, f64::INFINITY, &[], 1.0));
    let cfg = PoolConfig {
        evict_idle_after: Duration::ZERO,
        ..PoolConfig::default()
    };
    let mk = |name: &str| Pool::new(name, cfg.clone(), Cost::cores(1.0), 0, e.clone());
    let (a, b, c) = (mk("a"), mk("b"), mk("c"));
    let pools = Pools::from_pools(vec![a.clone(), b.clone(), c.clone()], e.clone());
    drop(a.acquire().await.unwrap());
    tokio::time::sleep(Duration::from_millis(5)).await;
    drop(b.acquire().await.unwrap());
    // `c` has no room: its request waits while the pool rings for room.
    let waiting = tokio::spawn({
        let c = c.clone();
        async move { c.acquire().await }
    });
    tokio::time::sleep(Duration::from_millis(5)).await;
    assert!(c.view().await.unwrap().waiting_for_room);
    pools.make_room().await;
    waiting.await.unwrap().unwrap();
    // `a` was used longest ago.
    assert!(a.worker_endpoints().await.is_empty());
    assert_eq!(b.worker_endpoints().await.len(), 1);
    assert_eq!(scale_events(&a, "down", "evict"), 1);
    assert_eq!(pools.view().await.budget["cpu"]["used"], 2.0);
}

fn queue_depth(p: &Pool) -> i64 {
    p.metrics.queue_depth.with_label_values(&[&p.model]).get()
}

/// Waiters that time out leave the queue, the depth gauge and the demand at once: the
/// next request queues (and times out itself) instead of getting 429 `queue_full`.
#[tokio::test]
async fn timed_out_waiters_leave_the_queue() {
    let fake = Fake::new(0, false);
    let p = pool(&fake, |c| {
        c.queue_size = 3;
        c.queue_timeout = Duration::from_millis(100);
    });
    let held = p.acquire().await.unwrap();
    let waiters: Vec<_> = (0..3)
        .map(|_| {
            let p = p.clone();
            tokio::spawn(async move { p.acquire().await.map(|_| ()) })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(queue_depth(&p), 3);
    for w in waiters {
        assert_eq!(w.await.unwrap().unwrap_err().status(), 503);
    }
    let v = p.view().await.unwrap();
    assert_eq!((v.queued, queue_depth(&p)), (0, 0));
    // Demand is the held request only.
    p.tick(Instant::now()).await;
    let e = p.acquire().await.err().expect("no free slot");
    assert_eq!(
        e.status(),
        503,
        "queued and timed out, not refused as full: {e}"
    );
    drop(held);
    drop(p.acquire().await.unwrap());
}

/// A client that hangs up while queued (its request future dropped) leaves at once.
#[tokio::test]
async fn a_waiter_that_hangs_up_leaves_the_queue() {
    let fake = Fake::new(0, false);
    let p = pool(&fake, |c| c.queue_size = 1);
    let held = p.acquire().await.unwrap();
    let waiter = tokio::spawn({
        let p = p.clone();
        async move { p.acquire().await.map(|_| ()) }
    });
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(p.view().await.unwrap().queued, 1);
    waiter.abort();
    let _ = waiter.await;
    assert_eq!(p.view().await.unwrap().queued, 0);
    assert_eq!(queue_depth(&p), 0);
    // The freed slot goes to a live request, not the one that left.
    drop(held);
    let lease = p.acquire().await.unwrap();
    assert_eq!(p.view().await.unwrap().in_flight, 1);
    drop(lease);
}

/// A worker the pool did not start (recovered after a gateway restart) serves requests
/// like its own, and is charged against the budget.
#[tokio::test]
async fn an_adopted_worker_serves_without_a_start() {
    let fake = Fake::new(0, false);
    let p = pool(&fake, |_| {});
    let (h, _exit) = WorkerHandle::new(
        77,
        Endpoint::Tcp {
            addr: "10.0.0.2:9000".into(),
            secret: Some("s3cret".into()),
        },
        None,
        Duration::ZERO,
    );
    p.adopt(h);
    let lease = p.acquire().await.unwrap();
    assert_eq!(lease.worker_id(), 77);
    assert_eq!(
        lease.endpoint().authorization().as_deref(),
        Some("Bearer s3cret")
    );
    assert_eq!(fake.spawned.load(Ordering::SeqCst), 0);
    assert_eq!(p.worker_endpoints().await, ["tcp:10.0.0.2:9000"]);
}

/// Each worker's life reaches the capacity ledger as phase spans: starting (its cold
/// start), busy while it serves, idle between requests, draining at the end.
#[tokio::test]
async fn worker_phases_reach_the_capacity_ledger() {
    use crate::metering::{ledger, Ledger, LedgerOptions};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.db");
    let fake = Fake::new(30, false);
    let mut e = env(&fake, Budget::unlimited());
    let book = Arc::new(Ledger::start(&path, LedgerOptions::default()).unwrap());
    e.ledger = Some(book.clone());
    let p = Pool::new("m", PoolConfig::default(), Cost::cores(1.0), 0, e);
    let lease = p.acquire().await.unwrap();
    tokio::time::sleep(Duration::from_millis(40)).await;
    drop(lease);
    tokio::time::sleep(Duration::from_millis(20)).await;
    let busy = p.acquire().await.unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(p.drain(1).await, 1);
    tokio::time::sleep(Duration::from_millis(20)).await;
    drop(busy);
    tokio::time::sleep(Duration::from_millis(20)).await;
    book.flush().unwrap();
    let conn = ledger::open_read_only(&path).unwrap();
    let mut q = conn
        .prepare("SELECT phase, end_ms - start_ms FROM worker_spans ORDER BY start_ms, rowid")
        .unwrap();
    let spans: Vec<(String, i64)> = q
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    // A ready worker is idle until the actor hands it the waiting request: on a busy
    // machine that can take a millisecond, a real (and correctly recorded) idle span.
    let spans: Vec<(String, i64)> = spans
        .into_iter()
        .enumerate()
        .filter(|(i, (p, ms))| !(*i == 1 && p == "idle" && *ms <= 5))
        .map(|(_, s)| s)
        .collect();
    let phases: Vec<&str> = spans.iter().map(|(p, _)| p.as_str()).collect();
    assert_eq!(
        phases,
        ["starting", "busy", "idle", "busy", "draining"],
        "{spans:?}"
    );
    assert!(spans[0].1 >= 25, "the cold start: {spans:?}");
    assert!(spans[1].1 >= 35, "the first request: {spans:?}");
}
