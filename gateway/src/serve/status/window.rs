//! Figures over the last few minutes from the gateway's cumulative Prometheus metrics:
//! a small ring of snapshots (one every [`SAMPLE_EVERY`], kept for [`WINDOW`]), and the
//! difference between now and the oldest one. Quantiles come from the bucket deltas the
//! way Prometheus's `histogram_quantile` computes them: find the bucket the rank falls
//! in, interpolate linearly inside it.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use prometheus::core::Collector;
use prometheus::proto::MetricFamily;
use serde::Serialize;

use crate::serve::metrics::GatewayMetrics;

/// How far back the windowed figures look.
pub const WINDOW: Duration = Duration::from_secs(300);
/// How often a snapshot is kept.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(10);

/// One cumulative histogram: the finite buckets' upper bounds and cumulative counts,
/// and the total count (the `+Inf` bucket).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Hist {
    pub bounds: Vec<f64>,
    pub cumulative: Vec<u64>,
    pub count: u64,
}

impl Hist {
    /// What was observed after `earlier` (the same histogram, older); everything when
    /// there is no earlier snapshot of it.
    pub fn since(&self, earlier: Option<&Hist>) -> Hist {
        let Some(e) = earlier.filter(|e| e.bounds == self.bounds) else {
            return self.clone();
        };
        Hist {
            bounds: self.bounds.clone(),
            cumulative: self
                .cumulative
                .iter()
                .zip(&e.cumulative)
                .map(|(now, then)| now.saturating_sub(*then))
                .collect(),
            count: self.count.saturating_sub(e.count),
        }
    }
}

/// The `q` quantile (0..=1) of `h`, as Prometheus's `histogram_quantile`: the bucket
/// whose cumulative count first reaches `q × count`, linearly interpolated between its
/// lower bound (the previous bucket's upper bound, 0 for the first) and its upper bound.
/// A rank in the `+Inf` bucket gives the highest finite bound. `None` with no
/// observations.
pub fn quantile(q: f64, h: &Hist) -> Option<f64> {
    if h.count == 0 || !(0.0..=1.0).contains(&q) {
        return None;
    }
    let rank = q * h.count as f64;
    let Some(b) = h.cumulative.iter().position(|&c| c as f64 >= rank) else {
        return h.bounds.last().copied();
    };
    let upper = h.bounds[b];
    if b == 0 && upper <= 0.0 {
        return Some(upper);
    }
    let (lower, below) = match b {
        0 => (0.0, 0),
        _ => (h.bounds[b - 1], h.cumulative[b - 1]),
    };
    let in_bucket = h.cumulative[b] - below;
    if in_bucket == 0 {
        return Some(upper);
    }
    Some(lower + (upper - lower) * (rank - below as f64) / in_bucket as f64)
}

/// Requests by model: all of them, and those answered with a 5xx.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Counts {
    pub total: u64,
    pub errors: u64,
}

/// The metrics the windows are computed from, at one moment.
#[derive(Debug, Clone)]
pub struct Sample {
    pub at: Instant,
    /// `surge_time_to_first_token_seconds` by model.
    pub ttft: HashMap<String, Hist>,
    /// `surge_requests_total` by model.
    pub requests: HashMap<String, Counts>,
}

impl Sample {
    /// Nothing observed yet (the gateway's start).
    pub fn empty(at: Instant) -> Sample {
        Sample {
            at,
            ttft: HashMap::new(),
            requests: HashMap::new(),
        }
    }

    pub fn take(m: &GatewayMetrics, at: Instant) -> Sample {
        Sample {
            at,
            ttft: histograms(&m.ttft_seconds.collect(), "model"),
            requests: requests(&m.requests.collect()),
        }
    }
}

/// The value of a series' label `name`.
pub fn label<'a>(m: &'a prometheus::proto::Metric, name: &str) -> Option<&'a str> {
    m.get_label()
        .iter()
        .find(|l| l.name() == name)
        .map(|l| l.value())
}

/// A histogram family's series, by the value of `key`.
fn histograms(families: &[MetricFamily], key: &str) -> HashMap<String, Hist> {
    let mut out = HashMap::new();
    for m in families.iter().flat_map(|f| f.get_metric()) {
        let Some(k) = label(m, key) else { continue };
        let h = m.get_histogram();
        let buckets = h.get_bucket();
        out.insert(
            k.to_string(),
            Hist {
                bounds: buckets.iter().map(|b| b.upper_bound()).collect(),
                cumulative: buckets.iter().map(|b| b.cumulative_count()).collect(),
                count: h.get_sample_count(),
            },
        );
    }
    out
}

/// `surge_requests_total{model,route,status}` summed by model.
fn requests(families: &[MetricFamily]) -> HashMap<String, Counts> {
    let mut out: HashMap<String, Counts> = HashMap::new();
    for m in families.iter().flat_map(|f| f.get_metric()) {
        let Some(model) = label(m, "model") else {
            continue;
        };
        let n = m.get_counter().get_value() as u64;
        let c = out.entry(model.to_string()).or_default();
        c.total += n;
        if label(m, "status").is_some_and(|s| s.starts_with('5')) {
            c.errors += n;
        }
    }
    out
}

/// One model's figures over the window.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ModelWindow {
    pub requests: u64,
    /// Answered with a 5xx.
    pub errors: u64,
    /// `errors / requests`; `None` without requests.
    pub error_rate: Option<f64>,
    /// Streamed requests that got a first token.
    pub ttft_count: u64,
    pub ttft_p50_seconds: Option<f64>,
    pub ttft_p95_seconds: Option<f64>,
}

/// The snapshots; the oldest is the window's start.
#[derive(Debug)]
pub struct Samples {
    ring: VecDeque<Sample>,
}

impl Samples {
    /// Starts from `first` (an empty sample at the gateway's start).
    pub fn new(first: Sample) -> Samples {
        Samples {
            ring: VecDeque::from([first]),
        }
    }

    /// Whether a new snapshot is due at `now`.
    pub fn due(&self, now: Instant) -> bool {
        self.ring
            .back()
            .is_none_or(|s| now.saturating_duration_since(s.at) >= SAMPLE_EVERY)
    }

    /// Keeps `s`, and drops the snapshots no longer needed: one at or before
    /// `now - WINDOW` is kept as the window's start, older ones go.
    pub fn push(&mut self, s: Sample) {
        let now = s.at;
        self.ring.push_back(s);
        self.prune(now);
    }

    fn prune(&mut self, now: Instant) {
        let Some(start) = now.checked_sub(WINDOW) else {
            return;
        };
        while self.ring.len() > 1 && self.ring[1].at <= start {
            self.ring.pop_front();
        }
    }

    /// The window's start for `now`: the newest snapshot at or before `now - WINDOW`,
    /// else the oldest (the window is then shorter: the gateway is younger).
    pub fn start(&mut self, now: Instant) -> Option<&Sample> {
        self.prune(now);
        self.ring.front()
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.ring.len()
    }
}

/// Each model's figures between `start` and `now`.
pub fn between(start: &Sample, now: &Sample) -> HashMap<String, ModelWindow> {
    let mut out: HashMap<String, ModelWindow> = HashMap::new();
    for (model, c) in &now.requests {
        let before = start.requests.get(model).copied().unwrap_or_default();
        let w = out.entry(model.clone()).or_default();
        w.requests = c.total.saturating_sub(before.total);
        w.errors = c.errors.saturating_sub(before.errors);
        w.error_rate = (w.requests > 0).then(|| w.errors as f64 / w.requests as f64);
    }
    for (model, h) in &now.ttft {
        let d = h.since(start.ttft.get(model));
        let w = out.entry(model.clone()).or_default();
        w.ttft_count = d.count;
        w.ttft_p50_seconds = quantile(0.5, &d);
        w.ttft_p95_seconds = quantile(0.95, &d);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hist(bounds: &[f64], per_bucket: &[u64], inf: u64) -> Hist {
        let mut c = 0;
        let cumulative = per_bucket
            .iter()
            .map(|n| {
                c += n;
                c
            })
            .collect();
        Hist {
            bounds: bounds.to_vec(),
            cumulative,
            count: c + inf,
        }
    }

    fn close(a: Option<f64>, b: f64) -> bool {
        a.is_some_and(|a| (a - b).abs() < 1e-9)
    }

    #[test]
    fn quantiles_interpolate_inside_the_bucket_like_histogram_quantile() {
        // 10 observations: 2 in (0, 0.1], 6 in (0.1, 0.5], 2 in (0.5, 1].
        let h = hist(&[0.1, 0.5, 1.0], &[2, 6, 2], 0);
        // p50: rank 5 → the second bucket, 3 of its 6 → 0.1 + 0.4 × 3/6.
        assert!(close(quantile(0.5, &h), 0.3), "{:?}", quantile(0.5, &h));
        // p95: rank 9.5 → the third bucket, 1.5 of its 2 → 0.5 + 0.5 × 0.75.
        assert!(close(quantile(0.95, &h), 0.875));
        // p10: rank 1 → the first bucket, from 0: 0.1 × 1/2.
        assert!(close(quantile(0.1, &h), 0.05));
        // A rank exactly on a bucket's top is that bucket's upper bound.
        assert!(close(quantile(0.2, &h), 0.1));
        assert!(close(quantile(1.0, &h), 1.0));
        assert!(close(quantile(0.0, &h), 0.0));
    }

    #[test]
    fn a_rank_past_the_last_finite_bucket_is_its_upper_bound() {
        let h = hist(&[0.1, 0.5], &[1, 1], 8);
        assert!(close(quantile(0.95, &h), 0.5));
        assert!(close(quantile(0.5, &h), 0.5));
    }

    #[test]
    fn no_observations_no_quantile() {
        assert_eq!(quantile(0.5, &hist(&[0.1, 1.0], &[0, 0], 0)), None);
        assert_eq!(quantile(0.5, &Hist::default()), None);
        assert_eq!(quantile(1.5, &hist(&[1.0], &[3], 0)), None);
    }

    #[test]
    fn empty_buckets_below_are_skipped() {
        // All 4 in (0.25, 0.5]: p50 is halfway through it.
        let h = hist(&[0.1, 0.25, 0.5, 1.0], &[0, 0, 4, 0], 0);
        assert!(close(quantile(0.5, &h), 0.375));
    }

    #[test]
    fn deltas_count_only_what_came_after_the_earlier_snapshot() {
        let bounds = [0.1, 0.5, 1.0];
        // Before: 5 fast requests. After: the same 5 plus 4 slow ones.
        let before = hist(&bounds, &[5, 0, 0], 0);
        let after = hist(&bounds, &[5, 0, 4], 0);
        let d = after.since(Some(&before));
        assert_eq!(d, hist(&bounds, &[0, 0, 4], 0));
        // The window sees only the slow ones: p50 is inside (0.5, 1], not 0.1.
        assert!(close(quantile(0.5, &d), 0.75));
        assert!(close(quantile(0.5, &after), 0.09));
        // No earlier snapshot of the series: all of it is new.
        assert_eq!(after.since(None), after);
    }

    #[test]
    fn windows_per_model_with_the_5xx_share() {
        let t0 = Instant::now();
        let mut start = Sample::empty(t0);
        start.requests.insert(
            "a".into(),
            Counts {
                total: 10,
                errors: 1,
            },
        );
        start
            .ttft
            .insert("a".into(), hist(&[0.1, 1.0], &[10, 0], 0));
        let mut now = Sample::empty(t0 + Duration::from_secs(60));
        now.requests.insert(
            "a".into(),
            Counts {
                total: 14,
                errors: 2,
            },
        );
        now.requests.insert(
            "b".into(),
            Counts {
                total: 2,
                errors: 0,
            },
        );
        now.ttft.insert("a".into(), hist(&[0.1, 1.0], &[10, 4], 0));
        let w = between(&start, &now);
        let a = &w["a"];
        assert_eq!((a.requests, a.errors, a.ttft_count), (4, 1, 4));
        assert_eq!(a.error_rate, Some(0.25));
        assert!(close(a.ttft_p50_seconds, 0.55));
        assert!(close(a.ttft_p95_seconds, 0.1 + 0.9 * 3.8 / 4.0));
        let b = &w["b"];
        assert_eq!(
            (b.requests, b.error_rate, b.ttft_p50_seconds),
            (2, Some(0.0), None)
        );
    }

    #[test]
    fn the_ring_keeps_one_snapshot_at_the_window_start() {
        let t0 = Instant::now();
        let mut s = Samples::new(Sample::empty(t0));
        let at = |secs: u64| t0 + Duration::from_secs(secs);
        // Young gateway: the window starts at the gateway's start.
        assert!(!s.due(at(5)));
        assert!(s.due(at(10)));
        assert_eq!(s.start(at(100)).unwrap().at, t0);
        for secs in (10..=400).step_by(10) {
            s.push(Sample::empty(at(secs)));
        }
        // At 400 s: the newest snapshot at or before 100 s starts the window.
        assert_eq!(s.start(at(400)).unwrap().at, at(100));
        assert_eq!(s.len(), 31);
        // Later reads without new snapshots move the start forward as far as they can.
        assert_eq!(s.start(at(405)).unwrap().at, at(100));
        assert_eq!(s.start(at(412)).unwrap().at, at(110));
    }

    #[test]
    fn samples_read_the_gateway_metrics() {
        let m = GatewayMetrics::new().unwrap();
        m.ttft_seconds.with_label_values(&["a"]).observe(0.3);
        m.ttft_seconds.with_label_values(&["a"]).observe(0.7);
        for status in ["200", "200", "503", "0"] {
            m.requests.with_label_values(&["a", "chat", status]).inc();
        }
        let s = Sample::take(&m, Instant::now());
        assert_eq!(
            s.requests["a"],
            Counts {
                total: 4,
                errors: 1
            }
        );
        let h = &s.ttft["a"];
        assert_eq!(h.count, 2);
        assert_eq!(h.bounds.len(), h.cumulative.len());
        assert_eq!(*h.cumulative.last().unwrap(), 2);
        // 0.3 in (0.25, 0.5], 0.7 in (0.5, 1]: p50 = rank 1 = top of (0.25, 0.5].
        assert!(close(quantile(0.5, h), 0.5));
    }
}
