//! GPU discovery through the CUDA driver, loaded at run time: a machine without the
//! driver (or without GPUs) simply has none, and gets CPU workers.

use cudarc::driver::{result, sys};

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

/// Every CUDA device the driver reports; empty when there is no driver or no device.
pub fn discover() -> Vec<Gpu> {
    // SAFETY: only checks whether the driver library can be loaded.
    if !unsafe { sys::is_culib_present() } {
        return Vec::new();
    }
    // The loader panics on a missing symbol (a driver older than the API we bind);
    // treat that like no driver.
    std::panic::catch_unwind(list).unwrap_or_default()
}

fn list() -> Vec<Gpu> {
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs everywhere: CPU-only machines get an empty list, not an error or a panic.
    #[test]
    fn discovery_never_fails() {
        let gpus = discover();
        eprintln!("GPUs: {gpus:?}");
        for g in &gpus {
            assert!(g.total_memory > 0);
            assert!(g.device_arg().starts_with("cuda:"));
        }
    }
}
