//! Order statistics for latency samples: one nearest-rank quantile used by every bench and
//! by the load tester's report, so figures from different tools agree on the definition.

use serde::Serialize;

/// The q-quantile (0..=1) by nearest rank of `samples`; 0 for an empty set.
pub fn quantile(samples: &[f64], q: f64) -> f64 {
    if samples.is_empty() {
        return 0.0;
    }
    let mut s = samples.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    quantile_sorted(&s, q)
}

/// [`quantile`] on samples already sorted ascending (no copy); 0 for an empty set.
pub fn quantile_sorted(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((q.clamp(0.0, 1.0) * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

pub fn median(samples: &[f64]) -> f64 {
    quantile(samples, 0.5)
}

/// The distribution of one latency (or any) sample set as the report shows it. Empty sets
/// have `count` 0 and every figure `None`, so a report never shows an invented 0 s latency.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Summary {
    pub count: usize,
    pub mean: Option<f64>,
    pub p50: Option<f64>,
    pub p90: Option<f64>,
    pub p95: Option<f64>,
    pub p99: Option<f64>,
    pub max: Option<f64>,
}

impl Summary {
    /// Nearest-rank percentiles of `samples` (NaNs are dropped).
    pub fn of(samples: &[f64]) -> Summary {
        let mut s: Vec<f64> = samples.iter().copied().filter(|x| !x.is_nan()).collect();
        if s.is_empty() {
            return Summary::default();
        }
        s.sort_by(|a, b| a.total_cmp(b));
        let q = |q| Some(quantile_sorted(&s, q));
        Summary {
            count: s.len(),
            mean: Some(s.iter().sum::<f64>() / s.len() as f64),
            p50: q(0.50),
            p90: q(0.90),
            p95: q(0.95),
            p99: q(0.99),
            max: s.last().copied(),
        }
    }

    /// A statistic by its report name (`p50`, `p90`, `p95`, `p99`, `max`, `mean`).
    pub fn get(&self, stat: &str) -> Option<Option<f64>> {
        Some(match stat {
            "p50" => self.p50,
            "p90" => self.p90,
            "p95" => self.p95,
            "p99" => self.p99,
            "max" => self.max,
            "mean" => self.mean,
            _ => return None,
        })
    }
}

/// The statistic names [`Summary::get`] knows.
pub const STATS: [&str; 6] = ["p50", "p90", "p95", "p99", "max", "mean"];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_quantiles() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(quantile(&v, 0.5), 50.0);
        assert_eq!(quantile(&v, 0.95), 95.0);
        assert_eq!(quantile(&v, 0.99), 99.0);
        assert_eq!(quantile(&v, 1.0), 100.0);
        assert_eq!(quantile(&[3.0, 1.0, 2.0], 0.5), 2.0);
        assert_eq!(median(&[]), 0.0);
    }

    #[test]
    fn summary_of_known_samples() {
        // 1..=1000 ms shuffled: nearest rank gives the exact per-mille values.
        let mut v: Vec<f64> = (1..=1000).map(|i| f64::from(i) / 1000.0).collect();
        v.reverse();
        v.swap(3, 700);
        let s = Summary::of(&v);
        assert_eq!(s.count, 1000);
        assert_eq!(s.p50, Some(0.5));
        assert_eq!(s.p90, Some(0.9));
        assert_eq!(s.p95, Some(0.95));
        assert_eq!(s.p99, Some(0.99));
        assert_eq!(s.max, Some(1.0));
        assert!((s.mean.unwrap() - 0.5005).abs() < 1e-12);
        // Ten samples: p90 is the 9th, p95 and p99 round up to the 10th.
        let s = Summary::of(&[10.0, 1.0, 9.0, 2.0, 8.0, 3.0, 7.0, 4.0, 6.0, 5.0]);
        assert_eq!(
            (s.p50, s.p90, s.p95, s.p99, s.max),
            (Some(5.0), Some(9.0), Some(10.0), Some(10.0), Some(10.0))
        );
        // One sample is every percentile; NaN is ignored; empty has no figures.
        let s = Summary::of(&[0.25, f64::NAN]);
        assert_eq!((s.count, s.p50, s.p99), (1, Some(0.25), Some(0.25)));
        assert_eq!(Summary::of(&[]), Summary::default());
        assert_eq!(Summary::of(&[]).get("p95"), Some(None));
        assert_eq!(Summary::of(&[1.0]).get("p42"), None);
    }
}
