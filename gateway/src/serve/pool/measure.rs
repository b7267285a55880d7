//! Workers charged at their measured memory: a local CPU worker's resident set
//! (`VmRSS`) replaces the pool's estimate once it is ready and is re-read every
//! autoscaler tick, so the memory budget reflects what the workers really hold.

use super::actor::PoolActor;
use super::Cost;
use crate::serve::sizing;

impl PoolActor {
    /// Re-charges worker `i` at its resident memory (`VmRSS`), when it is a local CPU
    /// process: at ready (`at_ready`) the measurement replaces the pool's estimate, but
    /// never below the model's weight bytes: weights are mapped, not read, at start, so
    /// they only become resident on the first request;
    /// later (each autoscaler tick) the charge only grows, to the largest resident set
    /// seen, because memory a worker has used once (KV caches of a busy moment) it may
    /// use again and the allocator seldom hands back. A GPU worker's charge is GPU
    /// memory, which `VmRSS` does not measure; a worker without a pid (another
    /// backend's) keeps its estimate.
    pub(super) fn measure(&mut self, i: usize, at_ready: bool) {
        if self.spec.device.starts_with("cuda") {
            return;
        }
        let w = &self.workers[i];
        let Some(rss) = w.handle.pid.and_then(sizing::resident_memory) else {
            return;
        };
        let to = measured_charge(w.charged, rss, self.weights, at_ready);
        if to != w.charged {
            self.env.budget.recharge(&self.spec.device, w.charged, to);
            self.workers[i].charged = to;
        }
    }

    /// [`PoolActor::measure`] for every worker (an autoscaler tick).
    pub(super) fn measure_all(&mut self) {
        for i in 0..self.workers.len() {
            self.measure(i, false);
        }
    }
}

/// A worker's charge once `rss` bytes are measured: its memory becomes `rss` at ready
/// (replacing the estimate, up or down), at least the `weights` it has mapped, and
/// afterwards the larger of the charge and `rss`.
pub(super) fn measured_charge(charged: Cost, rss: u64, weights: u64, at_ready: bool) -> Cost {
    let rss = rss as f64;
    let memory = if at_ready {
        rss.max(weights as f64)
    } else {
        charged.memory.max(rss)
    };
    Cost { memory, ..charged }
}
