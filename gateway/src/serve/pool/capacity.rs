//! The capacity ledger's side of a pool: each worker's life cut into phases — starting
//! (spawn → ready), busy (serving at least one request), idle, draining — each written to
//! the usage ledger as a [`WorkerSpan`] when it ends. This is what the same traffic would
//! cost on capacity reserved by the worker-hour, beside the per-request records.

use std::sync::{Arc, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

use super::actor::Worker;
use crate::metering::{Ledger, WorkerPhase, WorkerSpan};
use crate::serve::provision::WorkerHandle;

/// Milliseconds since the Unix epoch.
pub(super) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Tells this gateway run's workers from earlier runs' (worker ids restart at 1).
fn run_id() -> &'static str {
    static RUN: OnceLock<String> = OnceLock::new();
    RUN.get_or_init(|| format!("{}-{}", now_ms(), std::process::id()))
}

/// Where one pool's spans go.
#[derive(Clone)]
pub(super) struct Capacity(Arc<Sink>);

struct Sink {
    ledger: Arc<Ledger>,
    model: String,
    device: String,
}

impl Capacity {
    pub(super) fn new(ledger: Arc<Ledger>, model: &str, device: &str) -> Capacity {
        Capacity(Arc::new(Sink {
            ledger,
            model: model.to_string(),
            device: device.to_string(),
        }))
    }

    fn write(&self, worker: u64, phase: WorkerPhase, start_ms: i64, end_ms: i64) {
        if end_ms <= start_ms {
            // Passed through within a millisecond (ready and at once busy): nothing to bill.
            return;
        }
        let s = &self.0;
        let span = WorkerSpan {
            worker: format!("{}-{worker}", run_id()),
            model: s.model.clone(),
            device: s.device.clone(),
            phase,
            start_ms,
            end_ms,
        };
        if let Err(e) = s.ledger.span(span) {
            tracing::error!(error = %e, "capacity ledger");
        }
    }

    /// The start that just finished: spawn → ready.
    pub(super) fn started(&self, handle: &WorkerHandle) {
        let end = now_ms();
        let start = end - handle.cold_start.as_millis() as i64;
        self.write(handle.id, WorkerPhase::Starting, start, end);
    }

    /// Ends `w`'s current phase and begins `phase` (no-op when it is the same).
    pub(super) fn enter(&self, w: &mut Worker, phase: WorkerPhase) {
        if w.phase == phase {
            return;
        }
        let now = now_ms();
        self.write(w.handle.id, w.phase, w.phase_since_ms, now);
        w.phase = phase;
        w.phase_since_ms = now;
    }

    /// Ends `w`'s current phase: it leaves the pool.
    pub(super) fn leave(&self, w: &Worker) {
        self.write(w.handle.id, w.phase, w.phase_since_ms, now_ms());
    }
}
