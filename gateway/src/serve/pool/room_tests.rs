//! Pools sharing a budget in two dimensions: memory-short evictions, the eviction
//! hysteresis, and workers re-charged at their measured memory.

use super::*;
use crate::serve::pool::measure::measured_charge;

const MIB: f64 = (1u64 << 20) as f64;

fn cpu_pool(e: &PoolEnv, name: &str, cost: Cost, evict_after_ms: u64) -> Arc<Pool> {
    let cfg = PoolConfig {
        evict_idle_after: Duration::from_millis(evict_after_ms),
        queue_timeout: Duration::from_secs(5),
        ..PoolConfig::default()
    };
    Pool::new(name, cfg, cost, 0, e.clone())
}

fn spawn_acquire(p: &Arc<Pool>) -> tokio::task::JoinHandle<Result<Lease, ApiError>> {
    let p = p.clone();
    tokio::spawn(async move { p.acquire().await })
}

/// Cores to spare but memory short: the start evicts least recently used idle
/// workers until enough memory is free, and no more.
#[tokio::test]
async fn a_memory_short_start_evicts_until_the_memory_fits() {
    let fake = Fake::new(0, false);
    let e = env(&fake, Budget::new(16.0, 1024.0 * MIB, &[], 1.0));
    let small = Cost::new(1.0, 300.0 * MIB);
    let (a, b, c) = (
        cpu_pool(&e, "a", small, 0),
        cpu_pool(&e, "b", small, 0),
        cpu_pool(&e, "c", small, 0),
    );
    let big = cpu_pool(&e, "big", Cost::new(2.0, 700.0 * MIB), 0);
    let pools = Pools::from_pools(vec![a.clone(), b.clone(), c.clone(), big.clone()], e);
    for p in [&a, &b, &c] {
        drop(p.acquire().await.unwrap());
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let waiting = spawn_acquire(&big);
    tokio::time::sleep(Duration::from_millis(5)).await;
    assert!(
        big.view().await.unwrap().waiting_for_room,
        "900 + 700 MiB > 1 GiB"
    );
    pools.make_room().await;
    waiting.await.unwrap().unwrap();
    // 576 MiB short: `a` and `b` (the least recently used) free 600; `c` stays.
    assert!(a.worker_endpoints().await.is_empty());
    assert!(b.worker_endpoints().await.is_empty());
    assert_eq!(c.worker_endpoints().await.len(), 1);
    let budget = pools.view().await.budget;
    assert_eq!(budget["cpu"]["memory"]["used"], 1000.0 * MIB);
    assert_eq!(budget["cpu"]["cores"]["used"], 3.0);
    assert_eq!(budget["cpu"]["workers"], 2);
}

/// What cannot make enough room evicts nobody: the busy worker's model keeps its idle
/// neighbour, and the request waits for a tick that finds room.
#[tokio::test]
async fn no_worker_is_evicted_for_a_start_that_still_would_not_fit() {
    let fake = Fake::new(0, false);
    let e = env(&fake, Budget::new(16.0, 1024.0 * MIB, &[], 1.0));
    let half = Cost::new(1.0, 500.0 * MIB);
    let (a, b) = (cpu_pool(&e, "a", half, 0), cpu_pool(&e, "b", half, 0));
    let big = cpu_pool(&e, "big", Cost::new(1.0, 900.0 * MIB), 0);
    let pools = Pools::from_pools(vec![a.clone(), b.clone(), big.clone()], e);
    drop(a.acquire().await.unwrap());
    let held = b.acquire().await.unwrap();
    let waiting = spawn_acquire(&big);
    tokio::time::sleep(Duration::from_millis(5)).await;
    pools.make_room().await;
    // Evicting `a` would free 500 MiB of the 876 missing: `a` stays.
    assert_eq!(a.worker_endpoints().await.len(), 1);
    assert!(big.view().await.unwrap().waiting_for_room);
    // `b` finishes: both idle are every worker on the device, and an empty device
    // takes any one worker.
    drop(held);
    tokio::time::sleep(Duration::from_millis(5)).await;
    pools.make_room().await;
    waiting.await.unwrap().unwrap();
    assert!(a.worker_endpoints().await.is_empty() && b.worker_endpoints().await.is_empty());
}

/// The eviction thrash fix: a worker that served within `evict_idle_after` is not
/// evicted for another model; once it has been idle that long, it is.
#[tokio::test]
async fn a_worker_that_just_served_is_not_evicted() {
    let fake = Fake::new(0, false);
    let e = env(&fake, Budget::new(1.0, f64::INFINITY, &[], 1.0));
    let a = cpu_pool(&e, "a", Cost::cores(1.0), 300);
    let b = cpu_pool(&e, "b", Cost::cores(1.0), 300);
    let pools = Pools::from_pools(vec![a.clone(), b.clone()], e);
    drop(a.acquire().await.unwrap());
    let waiting = spawn_acquire(&b);
    tokio::time::sleep(Duration::from_millis(5)).await;
    pools.make_room().await;
    assert_eq!(a.worker_endpoints().await.len(), 1, "served 5 ms ago");
    assert!(b.view().await.unwrap().waiting_for_room);
    assert_eq!(scale_events(&a, "down", "evict"), 0);
    tokio::time::sleep(Duration::from_millis(320)).await;
    pools.make_room().await;
    waiting.await.unwrap().unwrap();
    assert!(a.worker_endpoints().await.is_empty());
    assert_eq!(scale_events(&a, "down", "evict"), 1);
}

/// A local CPU worker is charged its estimate while it starts, its resident memory
/// (`VmRSS`) once ready, the largest resident memory seen at later ticks, and
/// nothing once it is gone. The fake's workers report this test process's pid.
#[tokio::test]
async fn a_ready_worker_is_recharged_at_its_resident_memory() {
    if !cfg!(target_os = "linux") {
        return;
    }
    let fake = Fake::with_pid(20, false, Some(std::process::id()));
    let e = env(&fake, Budget::new(4.0, 64.0 * 1024.0 * MIB, &[], 1.0));
    let estimate = Cost::new(1.0, 10.0 * 1024.0 * MIB);
    let p = cpu_pool(&e, "m", estimate, 0);
    let pools = Pools::from_pools(vec![p.clone()], e);
    let waiting = spawn_acquire(&p);
    tokio::time::sleep(Duration::from_millis(5)).await;
    let used = |b: &serde_json::Value| b["cpu"]["memory"]["used"].as_f64().unwrap();
    assert_eq!(
        used(&pools.view().await.budget),
        estimate.memory,
        "starting"
    );
    drop(waiting.await.unwrap().unwrap());
    let v = pools.view().await;
    let charged = v.pools[0].workers[0].memory_bytes;
    assert!((MIB as u64..10 << 30).contains(&charged), "{charged}");
    assert_eq!(used(&v.budget), charged as f64);
    assert_eq!(
        v.pools[0].worker_memory_bytes,
        10 << 30,
        "a new worker's estimate"
    );
    p.tick(Instant::now()).await;
    let after = pools.view().await.pools[0].workers[0].memory_bytes;
    assert!(
        after >= charged,
        "never lowered after ready: {after} < {charged}"
    );
    assert_eq!(p.drain(1).await, 1);
    assert_eq!(used(&pools.view().await.budget), 0.0);
}

#[test]
fn measured_memory_replaces_the_estimate_then_only_grows() {
    let est = Cost::new(2.0, 1000.0);
    assert_eq!(measured_charge(est, 300, 100, true), Cost::new(2.0, 300.0));
    let ready = Cost::new(2.0, 300.0);
    assert_eq!(measured_charge(ready, 250, 100, false), ready);
    assert_eq!(
        measured_charge(ready, 400, 100, false),
        Cost::new(2.0, 400.0)
    );
    // Weights mapped but not yet touched: charged as if resident.
    assert_eq!(measured_charge(est, 60, 90, true), Cost::new(2.0, 90.0));
}
