//! What the status page remembers between requests: the pools' recent cold starts and
//! scaling events (their actors append them here), the metric snapshots its windows
//! start from, and the last usage figures read from the ledger.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde::Serialize;

use super::window::{Sample, Samples, SAMPLE_EVERY};
use crate::serve::metrics::GatewayMetrics;
use crate::serve::spend::now_ms;

/// How many events of each kind are kept.
pub const KEEP: usize = 50;

/// A worker that became ready.
#[derive(Debug, Clone, Serialize)]
pub struct ColdStart {
    pub model: String,
    pub worker: u64,
    /// Spawn to ready.
    pub seconds: f64,
    /// When it became ready (Unix seconds).
    pub at: f64,
}

/// Workers started or stopped by the autoscaler (or the cold-start path, or an
/// eviction).
#[derive(Debug, Clone, Serialize)]
pub struct ScaleEvent {
    pub model: String,
    /// `up` or `down`.
    pub direction: String,
    /// `panic`, `stable`, `idle` or `evict`.
    pub reason: String,
    /// How many workers.
    pub workers: usize,
    /// Unix seconds.
    pub at: f64,
}

/// Shared by the pools (through [`PoolEnv`](crate::serve::pool::PoolEnv)) and the
/// status page.
pub struct Recent {
    started: Instant,
    cold_starts: Mutex<VecDeque<ColdStart>>,
    scale_events: Mutex<VecDeque<ScaleEvent>>,
    samples: Mutex<Samples>,
    /// The last usage figures and when they were read (the ledger is summed at most
    /// once per [`super::USAGE_TTL`]).
    pub(super) usage: tokio::sync::Mutex<Option<(Instant, super::Usage)>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn push<T>(ring: &Mutex<VecDeque<T>>, item: T) {
    let mut r = lock(ring);
    if r.len() == KEEP {
        r.pop_front();
    }
    r.push_back(item);
}

/// The newest `n`, newest first.
fn newest<T: Clone>(ring: &Mutex<VecDeque<T>>, n: usize) -> Vec<T> {
    lock(ring).iter().rev().take(n).cloned().collect()
}

fn unix_now() -> f64 {
    now_ms() as f64 / 1000.0
}

impl Recent {
    /// Nothing happened yet: the windows start now.
    pub fn new() -> Arc<Recent> {
        let started = Instant::now();
        Arc::new(Recent {
            started,
            cold_starts: Mutex::new(VecDeque::with_capacity(KEEP)),
            scale_events: Mutex::new(VecDeque::with_capacity(KEEP)),
            samples: Mutex::new(Samples::new(Sample::empty(started))),
            usage: tokio::sync::Mutex::new(None),
        })
    }

    /// [`Recent::new`], with a task on `runtime` that snapshots `metrics` every
    /// [`SAMPLE_EVERY`] (until the `Recent` is dropped), so the windows cover the last
    /// minutes whether or not anyone watches the page.
    pub fn sampling(
        metrics: &Arc<GatewayMetrics>,
        runtime: &tokio::runtime::Handle,
    ) -> Arc<Recent> {
        let recent = Recent::new();
        let (weak, metrics) = (Arc::downgrade(&recent), metrics.clone());
        runtime.spawn(async move {
            let mut tick = tokio::time::interval(SAMPLE_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tick.tick().await;
                let Some(r) = weak.upgrade() else { return };
                r.sample_if_due(&metrics, Instant::now());
            }
        });
        recent
    }

    /// A worker of `model` became ready after `cold_start`.
    pub fn cold_start(&self, model: &str, worker: u64, cold_start: Duration) {
        push(
            &self.cold_starts,
            ColdStart {
                model: model.to_string(),
                worker,
                seconds: cold_start.as_secs_f64(),
                at: unix_now(),
            },
        );
    }

    /// `workers` of `model` were started (`up`) or stopped (`down`) for `reason`.
    pub fn scaled(&self, model: &str, direction: &str, reason: &str, workers: usize) {
        push(
            &self.scale_events,
            ScaleEvent {
                model: model.to_string(),
                direction: direction.to_string(),
                reason: reason.to_string(),
                workers,
                at: unix_now(),
            },
        );
    }

    /// The newest `n` cold starts, newest first.
    pub fn cold_starts(&self, n: usize) -> Vec<ColdStart> {
        newest(&self.cold_starts, n)
    }

    /// The newest `n` scale events, newest first.
    pub fn scale_events(&self, n: usize) -> Vec<ScaleEvent> {
        newest(&self.scale_events, n)
    }

    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }

    /// Keeps a snapshot of `metrics` if the last one is [`SAMPLE_EVERY`] old.
    pub fn sample_if_due(&self, metrics: &GatewayMetrics, now: Instant) {
        let mut s = lock(&self.samples);
        if s.due(now) {
            s.push(Sample::take(metrics, now));
        }
    }

    /// Keeps `sample` (taken just now) if a snapshot is due.
    pub fn keep_if_due(&self, sample: &Sample) {
        let mut s = lock(&self.samples);
        if s.due(sample.at) {
            s.push(sample.clone());
        }
    }

    /// The snapshot the windows start from at `now`.
    pub fn window_start(&self, now: Instant) -> Sample {
        let mut s = lock(&self.samples);
        s.start(now)
            .cloned()
            .unwrap_or_else(|| Sample::empty(self.started))
    }
}

#[cfg(test)]
mod tests {
    use super::super::window::WINDOW;
    use super::*;

    #[test]
    fn events_are_bounded_and_read_newest_first() {
        let r = Recent::new();
        for i in 0..(KEEP as u64 + 10) {
            r.cold_start("m", i, Duration::from_millis(1500));
            r.scaled("m", "up", "panic", 1);
        }
        let all = r.cold_starts(usize::MAX);
        assert_eq!(all.len(), KEEP);
        assert_eq!(all[0].worker, KEEP as u64 + 9);
        assert_eq!(all[KEEP - 1].worker, 10);
        assert_eq!(all[0].seconds, 1.5);
        assert_eq!(r.cold_starts(20).len(), 20);
        assert_eq!(r.scale_events(usize::MAX).len(), KEEP);
        let e = &r.scale_events(1)[0];
        assert_eq!(
            (e.direction.as_str(), e.reason.as_str(), e.workers),
            ("up", "panic", 1)
        );
        assert!(e.at > 1.6e9, "Unix seconds: {}", e.at);
    }

    #[test]
    fn the_window_starts_at_the_gateway_start_until_snapshots_are_old_enough() {
        let m = GatewayMetrics::new().unwrap();
        m.requests.with_label_values(&["a", "chat", "200"]).inc();
        let r = Recent::new();
        let now = Instant::now();
        // Right after the start nothing is due; the window starts empty.
        r.sample_if_due(&m, now);
        let start = r.window_start(now);
        assert!(start.requests.is_empty());
        r.sample_if_due(&m, now + SAMPLE_EVERY);
        assert!(r.window_start(now + SAMPLE_EVERY).requests.is_empty());
        // Once the window has passed the first snapshot, it starts there.
        let later = now + SAMPLE_EVERY + WINDOW;
        assert_eq!(r.window_start(later).requests["a"].total, 1);
    }
}
