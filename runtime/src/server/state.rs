//! The worker's lifecycle as the gateway sees it through `/health`: loading → ready →
//! draining, or failed when the engine died.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use super::startup::StartupReport;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Loading = 0,
    Ready = 1,
    Draining = 2,
    Failed = 3,
}

/// Shared, lock-free view of the phase plus facts for `/health`.
#[derive(Debug, Clone)]
pub struct Lifecycle(Arc<Inner>);

#[derive(Debug)]
struct Inner {
    phase: AtomicU8,
    started: Instant,
    load_seconds: OnceLock<f64>,
    failure: OnceLock<String>,
    /// When the listening socket was bound.
    listening_at: OnceLock<Instant>,
    /// Where the cold start's time went; set just before ready.
    startup: OnceLock<StartupReport>,
}

impl Default for Lifecycle {
    fn default() -> Self {
        Lifecycle(Arc::new(Inner {
            phase: AtomicU8::new(Phase::Loading as u8),
            started: Instant::now(),
            load_seconds: OnceLock::new(),
            failure: OnceLock::new(),
            listening_at: OnceLock::new(),
            startup: OnceLock::new(),
        }))
    }
}

impl Lifecycle {
    pub fn phase(&self) -> Phase {
        match self.0.phase.load(Ordering::SeqCst) {
            0 => Phase::Loading,
            1 => Phase::Ready,
            2 => Phase::Draining,
            _ => Phase::Failed,
        }
    }

    pub fn set_ready(&self, load_seconds: f64) {
        let _ = self.0.load_seconds.set(load_seconds);
        let _ = self.0.phase.compare_exchange(
            Phase::Loading as u8,
            Phase::Ready as u8,
            Ordering::SeqCst,
            Ordering::SeqCst,
        );
    }

    /// Records that the listener is bound (the first call wins).
    pub fn set_listening(&self) {
        let _ = self.0.listening_at.set(Instant::now());
    }

    pub fn listening_at(&self) -> Option<Instant> {
        self.0.listening_at.get().copied()
    }

    /// Records the cold start's breakdown; call before [`Lifecycle::set_ready`] so
    /// `/health` never answers 200 without it.
    pub fn set_startup(&self, report: StartupReport) {
        let _ = self.0.startup.set(report);
    }

    pub fn startup(&self) -> Option<&StartupReport> {
        self.0.startup.get()
    }

    pub fn set_draining(&self) {
        let _ = self.0.phase.compare_exchange(
            Phase::Ready as u8,
            Phase::Draining as u8,
            Ordering::SeqCst,
            Ordering::SeqCst,
        );
        let _ = self.0.phase.compare_exchange(
            Phase::Loading as u8,
            Phase::Draining as u8,
            Ordering::SeqCst,
            Ordering::SeqCst,
        );
    }

    pub fn set_failed(&self, why: impl Into<String>) {
        let _ = self.0.failure.set(why.into());
        self.0.phase.store(Phase::Failed as u8, Ordering::SeqCst);
    }

    pub fn load_seconds(&self) -> Option<f64> {
        self.0.load_seconds.get().copied()
    }

    pub fn failure(&self) -> Option<&str> {
        self.0.failure.get().map(String::as_str)
    }

    pub fn uptime_seconds(&self) -> f64 {
        self.0.started.elapsed().as_secs_f64()
    }

    /// The error a request gets when the worker cannot take it now.
    pub fn admission_error(&self) -> Option<super::ApiError> {
        match self.phase() {
            Phase::Ready => None,
            Phase::Loading => Some(super::ApiError::Loading),
            Phase::Draining => Some(super::ApiError::ShuttingDown),
            Phase::Failed => Some(super::ApiError::Internal(format!(
                "the engine failed: {}",
                self.failure().unwrap_or("unknown error")
            ))),
        }
    }
}
