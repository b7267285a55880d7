//! What the machine can hold: placing pools on devices, and charging every running
//! worker against its device's budget so that a traffic spike on one model cannot
//! start more workers than the machine has room for.
//!
//! Budgets are per device, in two dimensions, cores and memory ([`Cost`]). `cpu` has
//! `cpu_budget` cores and `cpu_memory_budget` bytes: each CPU worker costs its pool's
//! `worker_cores` and its memory — estimated from the model before it starts
//! ([`super::sizing::estimate_worker_memory`]), its measured resident set once it runs.
//! A GPU has `gpu_memory_fraction` of its memory (and no core limit) and each worker
//! placed on it costs its weights × [`GPU_MEMORY_FACTOR`]. A worker starts only if
//! both dimensions fit. When a device is full the autoscaler stops idle workers of
//! other models, least recently used first, until the short dimension has room
//! ([`super::pool::Pools::make_room`], [`pick_victims`]), like a cache of warm models.
//! One worker is always allowed on an empty device, whatever it costs, so a large
//! model is slow rather than unservable.

use std::collections::HashMap;
use std::sync::Mutex;

use serde_json::{json, Value};
use surge_models::ModelKind;

use super::config::PoolConfig;
use super::gpus::Gpu;
use super::registry::ModelEntry;

/// Weights plus KV cache and activations, as a multiple of the weights' size.
const GPU_MEMORY_FACTOR: u64 = 3;

/// Chooses a device for pools configured with `device = "auto"`: the emptiest GPU whose
/// unclaimed memory still fits one worker of the model, otherwise the CPU. GPUs are
/// shared between models this way; a pool's further workers go to the same device
/// (and are charged against its [`Budget`]). Whisper runs on the CPU kernels only. A
/// binary built without the `cuda` feature places everything on the CPU: its workers
/// could not use a GPU.
pub struct Placer {
    gpus: Vec<(Gpu, u64)>,
}

impl Placer {
    /// A placer for this binary ([`surge_runtime::CUDA`] says whether it can use GPUs).
    pub fn new(gpus: Vec<Gpu>) -> Self {
        Self::with_cuda(gpus, surge_runtime::CUDA)
    }

    /// A placer for a build with (`cuda`) or without CUDA support: without it, `gpus`
    /// are ignored.
    pub fn with_cuda(gpus: Vec<Gpu>, cuda: bool) -> Self {
        let gpus = if cuda { gpus } else { Vec::new() };
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

    pub fn place(&mut self, e: &ModelEntry) -> String {
        if e.kind != ModelKind::Llm {
            return "cpu".into();
        }
        let need = gpu_cost(e);
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

fn gpu_cost(e: &ModelEntry) -> u64 {
    e.size.saturating_mul(GPU_MEMORY_FACTOR)
}

/// What one worker costs on its device: cores (CPU workers) and bytes of the device's
/// memory (host memory for CPU workers, GPU memory for GPU workers).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Cost {
    pub cores: f64,
    pub memory: f64,
}

impl Cost {
    pub fn new(cores: f64, memory: f64) -> Cost {
        Cost { cores, memory }
    }

    /// Cores only (tests, and a pool whose memory is not known).
    pub fn cores(cores: f64) -> Cost {
        Cost::new(cores, 0.0)
    }

    pub fn is_zero(&self) -> bool {
        self.cores <= 0.0 && self.memory <= 0.0
    }
}

/// What one worker of a pool costs on its device before it has started: on a GPU its
/// weights × [`GPU_MEMORY_FACTOR`] of GPU memory; on the CPU `worker_cores` and the
/// memory estimate of [`super::sizing::estimate_worker_memory`] (none without a
/// registry entry).
pub fn worker_cost(device: &str, cfg: &PoolConfig, e: Option<&ModelEntry>) -> Cost {
    if device.starts_with("cuda") {
        Cost::new(0.0, e.map(gpu_cost).unwrap_or(0) as f64)
    } else {
        let memory = e.map_or(0, super::sizing::estimate_worker_memory);
        Cost::new(cfg.cores(), memory as f64)
    }
}

/// One dimension of one device.
#[derive(Debug, Clone, Copy)]
struct Dim {
    capacity: f64,
    used: f64,
}

impl Dim {
    fn unlimited() -> Dim {
        Dim::of(f64::INFINITY)
    }

    fn of(capacity: f64) -> Dim {
        Dim {
            capacity,
            used: 0.0,
        }
    }

    /// How much must be freed for `cost` more to fit (0: it fits).
    fn short(&self, cost: f64) -> f64 {
        let over = self.used + cost - self.capacity;
        // Float sums of fractional cores: within 1e-9 is a fit.
        if over > 1e-9 {
            over
        } else {
            0.0
        }
    }

    fn json(&self) -> Value {
        json!({
            "capacity": Some(self.capacity).filter(|c| c.is_finite()),
            "used": self.used,
        })
    }
}

#[derive(Debug, Clone, Copy)]
struct Device {
    cores: Dim,
    memory: Dim,
    /// Workers charged (starting or running): an empty device takes any one worker.
    workers: usize,
}

impl Device {
    fn new(cores: f64, memory: f64) -> Device {
        Device {
            cores: Dim::of(cores),
            memory: Dim::of(memory),
            workers: 0,
        }
    }

    fn shortfall(&self, cost: Cost) -> Cost {
        if self.workers == 0 {
            return Cost::default();
        }
        Cost::new(self.cores.short(cost.cores), self.memory.short(cost.memory))
    }

    fn add(&mut self, c: Cost, sign: f64) {
        self.cores.used = (self.cores.used + sign * c.cores).max(0.0);
        self.memory.used = (self.memory.used + sign * c.memory).max(0.0);
    }
}

/// Capacity and use per device (`cpu`, `cuda:N`).
pub struct Budget {
    devices: Mutex<HashMap<String, Device>>,
}

impl Budget {
    /// `cpu_cores` and `cpu_memory` bytes for CPU workers; `gpu_memory_fraction` of
    /// each GPU's memory.
    pub fn new(cpu_cores: f64, cpu_memory: f64, gpus: &[Gpu], gpu_memory_fraction: f64) -> Self {
        let mut devices = HashMap::from([("cpu".to_string(), Device::new(cpu_cores, cpu_memory))]);
        for g in gpus {
            let memory = g.total_memory as f64 * gpu_memory_fraction;
            devices.insert(g.device_arg(), Device::new(f64::INFINITY, memory));
        }
        Self {
            devices: Mutex::new(devices),
        }
    }

    /// Unlimited (tests of a single pool).
    pub fn unlimited() -> Self {
        Self::new(f64::INFINITY, f64::INFINITY, &[], 1.0)
    }

    /// `cuda` means GPU 0.
    fn key(device: &str) -> &str {
        if device == "cuda" {
            "cuda:0"
        } else {
            device
        }
    }

    fn with<T>(&self, device: &str, f: impl FnOnce(&mut Device) -> T) -> T {
        let mut devices = self.devices.lock().unwrap_or_else(|p| p.into_inner());
        // A device the gateway did not discover (an explicit `cuda:N`) is not limited.
        let d = devices
            .entry(Self::key(device).to_string())
            .or_insert(Device {
                cores: Dim::unlimited(),
                memory: Dim::unlimited(),
                workers: 0,
            });
        f(d)
    }

    /// How much of each dimension must be freed on `device` before a worker costing
    /// `cost` fits (zero: it fits now, or the device is empty).
    pub fn shortfall(&self, device: &str, cost: Cost) -> Cost {
        self.with(device, |d| d.shortfall(cost))
    }

    /// Workers charged to `device` (starting or running).
    pub fn workers(&self, device: &str) -> usize {
        self.with(device, |d| d.workers)
    }

    /// Charges a new worker costing `cost` to `device` if both dimensions fit (or the
    /// device has nothing running).
    pub fn try_reserve(&self, device: &str, cost: Cost) -> bool {
        self.with(device, |d| {
            if !d.shortfall(cost).is_zero() {
                return false;
            }
            d.add(cost, 1.0);
            d.workers += 1;
            true
        })
    }

    /// Charges a worker whether or not it fits (one already running).
    pub fn charge(&self, device: &str, cost: Cost) {
        self.with(device, |d| {
            d.add(cost, 1.0);
            d.workers += 1;
        })
    }

    /// A worker charged `from` is now charged `to` (its measured memory), whether or
    /// not that fits: it runs already.
    pub fn recharge(&self, device: &str, from: Cost, to: Cost) {
        self.with(device, |d| {
            d.add(from, -1.0);
            d.add(to, 1.0);
        })
    }

    /// A worker charged `cost` is gone.
    pub fn release(&self, device: &str, cost: Cost) {
        self.with(device, |d| {
            d.add(cost, -1.0);
            d.workers = d.workers.saturating_sub(1);
        })
    }

    /// `{device: {capacity, used, memory: {capacity, used}, cores: {capacity, used}}}`
    /// for `/admin/pools`: `memory` in bytes (host memory on `cpu`, GPU memory on
    /// `cuda:N`), `cores` on `cpu` only; `capacity` and `used` repeat the device's
    /// main dimension (cores on `cpu`, memory on a GPU) as they always have. A
    /// `capacity` of `null` is unlimited.
    pub fn json(&self) -> Value {
        let devices = self.devices.lock().unwrap_or_else(|p| p.into_inner());
        let mut keys: Vec<&String> = devices.keys().collect();
        keys.sort();
        let mut out = serde_json::Map::new();
        for k in keys {
            let d = &devices[k];
            let cpu = !k.starts_with("cuda");
            let main = if cpu { d.cores } else { d.memory };
            let mut v = main.json();
            v["memory"] = d.memory.json();
            if cpu {
                v["cores"] = d.cores.json();
            }
            v["workers"] = json!(d.workers);
            out.insert(k.clone(), v);
        }
        Value::Object(out)
    }
}

/// Which idle workers to evict, given as `(cost, lru order)` (least recently used
/// first), so that `short` (what [`Budget::shortfall`] says is missing) is freed:
/// least recently used first, skipping workers that free nothing of a dimension that
/// is still short. `empties` says that the candidates are every worker on the device:
/// then evicting them all makes room for any one worker. When the candidates cannot
/// free enough, none is evicted (evicting them would stop warm workers and still not
/// let the start through). Returns indices into `idle`.
pub fn pick_victims(short: Cost, idle: &[Cost], empties: bool) -> Vec<usize> {
    let mut left = short;
    let mut picked = Vec::new();
    for (i, c) in idle.iter().enumerate() {
        if left.cores <= 1e-9 && left.memory <= 1e-9 {
            break;
        }
        let helps = (left.cores > 1e-9 && c.cores > 0.0) || (left.memory > 1e-9 && c.memory > 0.0);
        if helps {
            picked.push(i);
            left.cores -= c.cores;
            left.memory -= c.memory;
        }
    }
    if left.cores <= 1e-9 && left.memory <= 1e-9 {
        picked
    } else if empties {
        (0..idle.len()).collect()
    } else {
        Vec::new()
    }
}

#[cfg(test)]
#[path = "budget_tests.rs"]
mod tests;
