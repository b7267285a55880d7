//! GPU discovery. A binary built with the `cuda` feature asks the CUDA driver (through
//! candle's cudarc): a machine without the driver (or without GPUs) simply has none, and
//! gets CPU workers. A binary built without it can use no GPU ([`usable`]); it only reads
//! the NVIDIA kernel driver's `/proc` entries to say which GPUs it ignores.

use std::path::Path;
use std::sync::Once;

/// One CUDA device.
#[derive(Debug, Clone, PartialEq)]
pub struct Gpu {
    pub ordinal: usize,
    pub name: String,
    pub total_memory: u64,
}

impl Gpu {
    /// The `--device` value for a worker on this GPU.
    pub fn device_arg(&self) -> String {
        format!("cuda:{}", self.ordinal)
    }
}

/// The GPUs this binary can run workers on: every device the driver reports when it was
/// built with the `cuda` feature, else none (logged once when that ignores GPUs).
pub fn discover() -> Vec<Gpu> {
    usable(discover_all(), surge_runtime::CUDA)
}

/// `gpus` when the build supports CUDA (`cuda`); otherwise none, with a warning (once per
/// process) naming what was ignored and why.
pub fn usable(gpus: Vec<Gpu>, cuda: bool) -> Vec<Gpu> {
    if cuda || gpus.is_empty() {
        return gpus;
    }
    static WARNED: Once = Once::new();
    WARNED.call_once(|| {
        let names: Vec<String> = gpus
            .iter()
            .map(|g| format!("{} ({})", g.device_arg(), g.name))
            .collect();
        tracing::warn!(
            gpus = %names.join(", "),
            "GPUs ignored: this surge was built without the `cuda` feature, so every pool \
             runs on the CPU (rebuild with `--features cuda` to use them)"
        );
    });
    Vec::new()
}

/// Every CUDA device the driver reports; empty when there is no driver or no device.
#[cfg(feature = "cuda")]
pub fn discover_all() -> Vec<Gpu> {
    // Treat a driver that fails in unexpected ways (a panic in the bindings) like none.
    std::panic::catch_unwind(list).unwrap_or_default()
}

#[cfg(feature = "cuda")]
fn list() -> Vec<Gpu> {
    use candle_core::cuda_backend::cudarc::driver::result;
    if result::init().is_err() {
        return Vec::new();
    }
    let count = result::device::get_count().unwrap_or(0).max(0);
    (0..count)
        .filter_map(|i| {
            let dev = result::device::get(i).ok()?;
            // SAFETY: `dev` came from `get`.
            let total_memory = unsafe { result::device::total_mem(dev) }.ok()? as u64;
            Some(Gpu {
                ordinal: i as usize,
                name: result::device::get_name(dev).unwrap_or_else(|_| "unknown".into()),
                total_memory,
            })
        })
        .collect()
}

/// The GPUs the NVIDIA kernel driver lists (names only, memory 0): what a CPU-only
/// build ignores. Loads no CUDA library.
#[cfg(not(feature = "cuda"))]
pub fn discover_all() -> Vec<Gpu> {
    proc_gpus(Path::new("/proc/driver/nvidia/gpus"))
}

/// `DIR/*/information` files of the NVIDIA driver (`Model:` and `Device Minor:` lines).
#[cfg_attr(feature = "cuda", allow(dead_code))]
fn proc_gpus(dir: &Path) -> Vec<Gpu> {
    let mut gpus: Vec<Gpu> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| std::fs::read_to_string(e.path().join("information")).ok())
        .map(|info| {
            let field = |key: &str| {
                info.lines()
                    .find_map(|l| l.strip_prefix(key)?.trim_start().strip_prefix(':'))
                    .map(|v| v.trim().to_string())
            };
            Gpu {
                ordinal: field("Device Minor")
                    .and_then(|m| m.parse().ok())
                    .unwrap_or(0),
                name: field("Model").unwrap_or_else(|| "unknown".into()),
                total_memory: 0,
            }
        })
        .collect();
    gpus.sort_by_key(|g| g.ordinal);
    gpus
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs everywhere: CPU-only machines get an empty list, not an error or a panic.
    #[test]
    fn discovery_never_fails() {
        let gpus = discover_all();
        eprintln!("GPUs: {gpus:?}");
        for g in &gpus {
            // Only the driver API knows the memory; a CPU-only build reads /proc.
            assert!(g.total_memory > 0 || !surge_runtime::CUDA);
            assert!(g.device_arg().starts_with("cuda:"));
        }
        if !surge_runtime::CUDA {
            assert!(discover().is_empty());
        }
    }

    #[test]
    fn the_kernel_drivers_gpu_list_is_read() {
        let dir = tempfile::tempdir().unwrap();
        for (pci, minor, model) in [
            ("0000:c1:00.0", 1, "NVIDIA H100 80GB HBM3"),
            ("0000:41:00.0", 0, "NVIDIA L4"),
        ] {
            let d = dir.path().join(pci);
            std::fs::create_dir(&d).unwrap();
            std::fs::write(
                d.join("information"),
                format!("Model: \t\t {model}\nIRQ:   \t\t 42\nDevice Minor: \t {minor}\n"),
            )
            .unwrap();
        }
        let gpus = proc_gpus(dir.path());
        assert_eq!(gpus.len(), 2);
        assert_eq!((gpus[0].ordinal, gpus[0].name.as_str()), (0, "NVIDIA L4"));
        assert_eq!(gpus[1].device_arg(), "cuda:1");
        assert!(proc_gpus(&dir.path().join("none")).is_empty());
    }

    #[test]
    fn gpus_are_usable_only_with_cuda() {
        let g = vec![Gpu {
            ordinal: 0,
            name: "H100".into(),
            total_memory: 80 << 30,
        }];
        assert_eq!(usable(g.clone(), true), g);
        assert!(usable(g, false).is_empty());
        assert!(usable(Vec::new(), false).is_empty());
    }
}
