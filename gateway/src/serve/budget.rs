//! What the machine can hold: placing pools on devices, and charging every running
//! worker against its device's budget so that a traffic spike on one model cannot
//! start more workers than the machine has room for.
//!
//! Budgets are per device: `cpu` has `cpu_budget` cores and each CPU worker costs its
//! pool's `worker_cores`; a GPU has `gpu_memory_fraction` of its memory and each worker
//! placed on it costs its weights × [`GPU_MEMORY_FACTOR`]. When a device is full the
//! autoscaler stops idle workers of other models, least recently used first
//! ([`super::pool::Pools::make_room`]), like a cache of warm models. One worker is always allowed on an
//! empty device, whatever it costs, so a large model is slow rather than unservable.

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

/// What one worker of a pool costs on its device.
pub fn worker_cost(device: &str, cfg: &PoolConfig, e: Option<&ModelEntry>) -> f64 {
    if device.starts_with("cuda") {
        e.map(gpu_cost).unwrap_or(0) as f64
    } else {
        cfg.cores()
    }
}

/// Capacity and use per device (`cpu`, `cuda:N`).
pub struct Budget {
    capacity: HashMap<String, f64>,
    used: Mutex<HashMap<String, f64>>,
}

impl Budget {
    pub fn new(cpu_cores: f64, gpus: &[Gpu], gpu_memory_fraction: f64) -> Self {
        let mut capacity = HashMap::from([("cpu".to_string(), cpu_cores)]);
        for g in gpus {
            capacity.insert(g.device_arg(), g.total_memory as f64 * gpu_memory_fraction);
        }
        Self {
            capacity,
            used: Mutex::new(HashMap::new()),
        }
    }

    /// Unlimited (tests of a single pool).
    pub fn unlimited() -> Self {
        Self::new(f64::INFINITY, &[], 1.0)
    }

    /// `cuda` means GPU 0.
    fn key(device: &str) -> &str {
        if device == "cuda" {
            "cuda:0"
        } else {
            device
        }
    }

    /// Charges `cost` to `device` if it fits (or the device has nothing running).
    pub fn try_reserve(&self, device: &str, cost: f64) -> bool {
        let key = Self::key(device);
        let mut used = self.used.lock().unwrap_or_else(|p| p.into_inner());
        let now = used.get(key).copied().unwrap_or(0.0);
        // A device the gateway did not discover (an explicit `cuda:N`) is not limited.
        let cap = self.capacity.get(key).copied().unwrap_or(f64::INFINITY);
        if now > 0.0 && now + cost > cap + 1e-9 {
            return false;
        }
        used.insert(key.to_string(), now + cost);
        true
    }

    /// Charges `cost` to `device` whether or not it fits (a worker already running).
    pub fn charge(&self, device: &str, cost: f64) {
        let key = Self::key(device);
        let mut used = self.used.lock().unwrap_or_else(|p| p.into_inner());
        *used.entry(key.to_string()).or_insert(0.0) += cost;
    }

    pub fn release(&self, device: &str, cost: f64) {
        let key = Self::key(device);
        let mut used = self.used.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(u) = used.get_mut(key) {
            *u = (*u - cost).max(0.0);
        }
    }

    /// `{device: {capacity, used}}` for `/admin/pools`.
    pub fn json(&self) -> Value {
        let used = self.used.lock().unwrap_or_else(|p| p.into_inner());
        let mut out = serde_json::Map::new();
        let mut keys: Vec<&String> = self.capacity.keys().chain(used.keys()).collect();
        keys.sort();
        keys.dedup();
        for k in keys {
            let cap = self.capacity.get(k).copied().filter(|c| c.is_finite());
            out.insert(
                k.clone(),
                json!({"capacity": cap, "used": used.get(k).copied().unwrap_or(0.0)}),
            );
        }
        Value::Object(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gpu(i: usize, gib: u64) -> Gpu {
        Gpu {
            ordinal: i,
            name: "test".into(),
            total_memory: gib << 30,
        }
    }

    #[test]
    fn auto_placement_fits_gpus_by_memory() {
        let model = |kind, mib: u64| ModelEntry {
            name: "m".into(),
            kind,
            aliases: vec![],
            size: mib << 20,
        };
        let mut p = Placer::with_cuda(vec![gpu(0, 1), gpu(1, 2)], true);
        assert_eq!(p.place(&model(ModelKind::Whisper, 75)), "cpu");
        assert_eq!(p.place(&model(ModelKind::Llm, 400)), "cuda:1"); // 1.2 GiB: only GPU 1 fits
        assert_eq!(p.place(&model(ModelKind::Llm, 200)), "cuda:0"); // now the emptier one
        assert_eq!(p.place(&model(ModelKind::Llm, 400)), "cpu"); // nothing left fits
        assert_eq!(Placer::new(vec![]).place(&model(ModelKind::Llm, 1)), "cpu");
    }

    /// Defect 5: a binary without CUDA support puts every pool on the CPU, whatever GPUs
    /// the driver reports (its workers would fail on `--device cuda:N`).
    #[test]
    fn a_cpu_only_build_places_everything_on_the_cpu() {
        let llm = ModelEntry {
            name: "m".into(),
            kind: ModelKind::Llm,
            aliases: vec![],
            size: 100 << 20,
        };
        let gpus = vec![gpu(0, 80), gpu(1, 40)];
        let mut cpu_only = Placer::with_cuda(gpus.clone(), false);
        assert_eq!(cpu_only.place(&llm), "cpu");
        assert_eq!(cpu_only.place(&llm), "cpu");
        assert_eq!(Placer::with_cuda(gpus.clone(), true).place(&llm), "cuda:0");
        assert_eq!(
            Placer::new(gpus).place(&llm) == "cpu",
            !surge_runtime::CUDA,
            "Placer::new follows this build"
        );
    }

    #[test]
    fn budgets_are_per_device_and_one_worker_always_fits() {
        let b = Budget::new(2.0, &[gpu(0, 10)], 0.9);
        assert!(b.try_reserve("cpu", 1.0));
        assert!(b.try_reserve("cpu", 1.0));
        assert!(!b.try_reserve("cpu", 0.5));
        b.release("cpu", 1.0);
        assert!(b.try_reserve("cpu", 0.5));
        // 9 GiB of GPU 0: one 6 GiB worker, not two; `cuda` is GPU 0.
        let six = (6u64 << 30) as f64;
        assert!(b.try_reserve("cuda", six));
        assert!(!b.try_reserve("cuda:0", six));
        // Too big for the device, but the device is empty: it may run alone.
        let b = Budget::new(1.0, &[], 0.9);
        assert!(b.try_reserve("cpu", 4.0));
        assert!(!b.try_reserve("cpu", 0.1));
        // An undiscovered GPU is not limited.
        assert!(b.try_reserve("cuda:3", 1e12));
        assert_eq!(b.json()["cpu"]["capacity"], 1.0);
    }
}
