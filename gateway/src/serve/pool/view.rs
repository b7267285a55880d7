//! What `GET /admin/pools` shows: each pool's workers, queue and last scaling decision,
//! and the machine's budgets. Built by the pool's actor, so it is one consistent moment.

use std::collections::BTreeMap;
use std::time::Instant;

use serde::Serialize;

use super::actor::PoolActor;

#[derive(Debug, Clone, Serialize)]
pub struct PoolsView {
    pub pools: Vec<PoolView>,
    /// `{device: {capacity, used, memory: {capacity, used}, cores: {capacity, used},
    /// workers}}` ([`crate::serve::budget::Budget::json`]).
    pub budget: serde_json::Value,
}

#[derive(Debug, Clone, Serialize)]
pub struct PoolView {
    pub model: String,
    pub device: String,
    pub min_workers: usize,
    pub max_workers: usize,
    pub concurrency: usize,
    pub target_concurrency: f64,
    pub idle_timeout_seconds: f64,
    /// What a new worker is charged in the device's main dimension: cores on the CPU,
    /// bytes of GPU memory on a GPU (as `budget.DEVICE.used`).
    pub worker_cost: f64,
    /// What a new worker is charged, per dimension: cores (0 on a GPU)...
    pub worker_cores: f64,
    /// ...and bytes of memory (its estimate; a running worker is charged its measured
    /// resident memory, `workers[].memory_bytes`).
    pub worker_memory_bytes: u64,
    pub evict_idle_after_seconds: f64,
    pub starting: usize,
    pub ready: usize,
    pub in_flight: usize,
    pub queued: usize,
    pub desired: Option<usize>,
    pub reason: Option<&'static str>,
    pub stable_concurrency: Option<f64>,
    pub panic_concurrency: Option<f64>,
    pub waiting_for_room: bool,
    pub workers: Vec<WorkerView>,
}

#[derive(Debug, Clone, Serialize)]
pub struct WorkerView {
    pub id: u64,
    pub pid: Option<u32>,
    /// `ready`, `draining` or `failed`.
    pub state: &'static str,
    pub in_flight: usize,
    /// Seconds since its last request ended; `None` while it serves one.
    pub idle_seconds: Option<f64>,
    pub age_seconds: f64,
    pub cold_start_seconds: f64,
    pub cold_start_phases: BTreeMap<String, f64>,
    /// Bytes it is charged against its device's memory budget (measured resident
    /// memory for a local CPU worker, else the pool's estimate).
    pub memory_bytes: u64,
    /// `unix:PATH` or `tcp:ADDR`.
    pub endpoint: String,
}

impl PoolActor {
    pub(super) fn view(&self) -> PoolView {
        let now = Instant::now();
        let workers = self
            .workers
            .iter()
            .map(|w| WorkerView {
                id: w.handle.id,
                pid: w.handle.pid,
                state: if w.broken {
                    "failed"
                } else if w.draining {
                    "draining"
                } else {
                    "ready"
                },
                in_flight: w.in_flight,
                idle_seconds: (w.in_flight == 0)
                    .then(|| now.duration_since(w.idle_since).as_secs_f64()),
                age_seconds: w.handle.started.elapsed().as_secs_f64(),
                cold_start_seconds: w.handle.cold_start.as_secs_f64(),
                cold_start_phases: w.handle.startup.iter().cloned().collect(),
                memory_bytes: w.charged.memory as u64,
                endpoint: w.handle.endpoint.to_string(),
            })
            .collect();
        let d = self.decision.as_ref();
        PoolView {
            model: self.model.clone(),
            device: self.spec.device.clone(),
            min_workers: self.cfg.min_workers,
            max_workers: self.cfg.max_workers,
            concurrency: self.cfg.concurrency,
            target_concurrency: self.scaler.policy().target_concurrency,
            idle_timeout_seconds: self.cfg.idle_timeout.as_secs_f64(),
            worker_cost: if self.spec.device.starts_with("cuda") {
                self.cost.memory
            } else {
                self.cost.cores
            },
            worker_cores: self.cost.cores,
            worker_memory_bytes: self.cost.memory as u64,
            evict_idle_after_seconds: self.cfg.evict_idle_after.as_secs_f64(),
            starting: self.starting,
            ready: self.workers.iter().filter(|w| w.live()).count(),
            in_flight: self.workers.iter().map(|w| w.in_flight).sum(),
            queued: self.waiters.len(),
            desired: d.map(|d| d.desired),
            reason: d.map(|d| d.reason.label()),
            stable_concurrency: d.map(|d| d.stable_concurrency),
            panic_concurrency: d.map(|d| d.panic_concurrency),
            waiting_for_room: self.wants_room,
            workers,
        }
    }
}
