//! Open-loop arrival schedules: the time each request is *meant* to be sent.
//!
//! Every schedule (constant, Poisson, steps, spike) is a piecewise-linear request rate
//! over named phases. Arrivals are drawn by inverting the cumulative rate Λ(t): uniform
//! arrivals sit at Λ(t) = 0, 1, 2, …; Poisson arrivals at Λ(t) = E₁, E₁+E₂, … with
//! Eᵢ ~ Exp(1) (the time-rescaling theorem), which gives a non-homogeneous Poisson
//! process for ramps too. The schedule is computed before the run and does not depend
//! on how fast the server answers, so a slow server cannot slow the offered load down
//! and hide its latency (no coordinated omission). Pure and seeded: unit-testable.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

/// How arrivals are spaced at a given rate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Spacing {
    /// Evenly spaced (k6's constant-arrival-rate, vegeta): easiest to reason about.
    Uniform,
    /// Exponential gaps: bursty like independent users.
    Poisson,
}

/// One phase: the rate goes linearly from `from_rps` to `to_rps` over `duration` seconds.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Phase {
    pub name: String,
    pub start: f64,
    pub duration: f64,
    pub from_rps: f64,
    pub to_rps: f64,
}

impl Phase {
    pub fn end(&self) -> f64 {
        self.start + self.duration
    }

    /// Expected requests in this phase (the area under its rate).
    pub fn mass(&self) -> f64 {
        0.5 * (self.from_rps + self.to_rps) * self.duration
    }

    /// The time into the phase at which the cumulative rate reaches `y` (0 ≤ y ≤ mass):
    /// the root of from·τ + (to−from)/(2d)·τ² = y, in the form that stays exact when the
    /// rate is flat.
    fn invert(&self, y: f64) -> f64 {
        let a = (self.to_rps - self.from_rps) / (2.0 * self.duration);
        let r0 = self.from_rps;
        let disc = (r0 * r0 + 4.0 * a * y).max(0.0);
        let denom = r0 + disc.sqrt();
        if denom <= 0.0 {
            return 0.0;
        }
        (2.0 * y / denom).min(self.duration)
    }
}

/// The spike profile: baseline, a ramp to `multiplier` × baseline, a hold at the peak,
/// an optional ramp back down, and recovery at the baseline.
#[derive(Debug, Clone, PartialEq)]
pub struct Spike {
    pub baseline_rps: f64,
    pub multiplier: f64,
    /// Seconds at the baseline before the ramp.
    pub baseline: f64,
    pub ramp: f64,
    pub hold: f64,
    pub ramp_down: f64,
    pub recovery: f64,
}

/// A whole schedule: phases back to back from t = 0 and how arrivals are spaced.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Profile {
    pub phases: Vec<Phase>,
    pub spacing: Spacing,
}

/// One intended send: seconds from the start of the run and the index of its phase.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Arrival {
    pub at: f64,
    pub phase: usize,
}

impl Profile {
    /// Phases from (name, from_rps, to_rps, duration); zero-length phases are dropped.
    pub fn from_parts(parts: &[(&str, f64, f64, f64)], spacing: Spacing) -> Profile {
        let mut start = 0.0;
        let mut phases = Vec::new();
        for &(name, from_rps, to_rps, duration) in parts {
            if duration <= 0.0 {
                continue;
            }
            phases.push(Phase {
                name: name.to_string(),
                start,
                duration,
                from_rps,
                to_rps,
            });
            start += duration;
        }
        Profile { phases, spacing }
    }

    /// A flat rate for `duration` seconds (one phase named `name`).
    pub fn constant(name: &str, rps: f64, duration: f64, spacing: Spacing) -> Profile {
        Profile::from_parts(&[(name, rps, rps, duration)], spacing)
    }

    /// Back-to-back flat steps of (name, rps, duration).
    pub fn steps(steps: &[(String, f64, f64)], spacing: Spacing) -> Profile {
        let parts: Vec<(&str, f64, f64, f64)> = steps
            .iter()
            .map(|(n, r, d)| (n.as_str(), *r, *r, *d))
            .collect();
        Profile::from_parts(&parts, spacing)
    }

    /// The spike shape; phases `baseline`, `ramp`, `spike`, `ramp_down`, `recovery`.
    pub fn spike(s: &Spike, spacing: Spacing) -> Profile {
        let (b, peak) = (s.baseline_rps, s.baseline_rps * s.multiplier);
        Profile::from_parts(
            &[
                ("baseline", b, b, s.baseline),
                ("ramp", b, peak, s.ramp),
                ("spike", peak, peak, s.hold),
                ("ramp_down", peak, b, s.ramp_down),
                ("recovery", b, b, s.recovery),
            ],
            spacing,
        )
    }

    pub fn duration(&self) -> f64 {
        self.phases.last().map_or(0.0, Phase::end)
    }

    /// Expected number of requests over the whole schedule.
    pub fn expected_requests(&self) -> f64 {
        self.phases.iter().map(Phase::mass).sum()
    }

    /// The intended rate at time `t` (0 outside the schedule).
    pub fn rate_at(&self, t: f64) -> f64 {
        self.phases
            .iter()
            .find(|p| t >= p.start && t < p.end())
            .map_or(0.0, |p| {
                p.from_rps + (p.to_rps - p.from_rps) * (t - p.start) / p.duration
            })
    }

    /// The phase index at time `t` (the last phase for t past the end).
    pub fn phase_at(&self, t: f64) -> usize {
        self.phases
            .iter()
            .position(|p| t < p.end())
            .unwrap_or(self.phases.len().saturating_sub(1))
    }

    /// The arrivals of this schedule, at most `limit`, drawn with `seed` (Poisson only).
    pub fn arrivals(&self, seed: u64, limit: usize) -> Vec<Arrival> {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut out = Vec::new();
        // Cumulative target: next arrival happens where Λ(t) reaches `y`.
        let mut y = match self.spacing {
            Spacing::Uniform => 0.0,
            Spacing::Poisson => exp1(&mut rng),
        };
        let mut base = 0.0; // Λ at the start of the current phase
        for (i, p) in self.phases.iter().enumerate() {
            let m = p.mass();
            while y < base + m && out.len() < limit {
                out.push(Arrival {
                    at: p.start + p.invert(y - base),
                    phase: i,
                });
                y += match self.spacing {
                    Spacing::Uniform => 1.0,
                    Spacing::Poisson => exp1(&mut rng),
                };
            }
            base += m;
        }
        out
    }
}

/// One draw of Exp(1).
fn exp1(rng: &mut StdRng) -> f64 {
    let u: f64 = rng.random();
    -(1.0 - u).ln()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn count_in(a: &[Arrival], from: f64, to: f64) -> usize {
        a.iter().filter(|x| x.at >= from && x.at < to).count()
    }

    #[test]
    fn constant_uniform_is_exact() {
        let p = Profile::constant("constant", 10.0, 5.0, Spacing::Uniform);
        let a = p.arrivals(1, usize::MAX);
        assert_eq!(a.len(), 50);
        assert_eq!(a[0].at, 0.0);
        for w in a.windows(2) {
            assert!((w[1].at - w[0].at - 0.1).abs() < 1e-9);
        }
        assert!(a.iter().all(|x| x.phase == 0 && x.at < 5.0));
        assert_eq!(p.arrivals(1, 7).len(), 7, "the limit caps the count");
    }

    #[test]
    fn poisson_rate_and_gaps_within_tolerance() {
        let p = Profile::constant("poisson", 50.0, 100.0, Spacing::Poisson);
        let a = p.arrivals(42, usize::MAX);
        // Count ~ Poisson(5000): sd ≈ 71; allow 4 sd.
        assert!((a.len() as f64 - 5000.0).abs() < 4.0 * 71.0, "{}", a.len());
        let gaps: Vec<f64> = a.windows(2).map(|w| w[1].at - w[0].at).collect();
        let mean = gaps.iter().sum::<f64>() / gaps.len() as f64;
        let var = gaps.iter().map(|g| (g - mean).powi(2)).sum::<f64>() / gaps.len() as f64;
        // Exponential gaps: mean 1/λ, coefficient of variation 1.
        assert!((mean - 0.02).abs() < 0.001, "mean gap {mean}");
        assert!(
            (var.sqrt() / mean - 1.0).abs() < 0.06,
            "cv {}",
            var.sqrt() / mean
        );
        // Per-second counts vary like a Poisson process (variance ≈ mean ≈ 50).
        let per_s: Vec<f64> = (0..100)
            .map(|s| count_in(&a, s as f64, s as f64 + 1.0) as f64)
            .collect();
        let m = per_s.iter().sum::<f64>() / 100.0;
        let v = per_s.iter().map(|c| (c - m).powi(2)).sum::<f64>() / 99.0;
        assert!(v > 25.0 && v < 80.0, "per-second variance {v}");
        // Seeded: the same seed gives the same arrivals, another seed others.
        assert_eq!(a, p.arrivals(42, usize::MAX));
        assert_ne!(a, p.arrivals(43, usize::MAX));
    }

    #[test]
    fn steps_follow_their_rates() {
        let steps = vec![
            ("low".to_string(), 2.0, 10.0),
            ("high".to_string(), 20.0, 5.0),
            ("off".to_string(), 0.0, 3.0),
            ("back".to_string(), 4.0, 5.0),
        ];
        let p = Profile::steps(&steps, Spacing::Uniform);
        assert_eq!(p.duration(), 23.0);
        let a = p.arrivals(0, usize::MAX);
        let by_phase = |i| a.iter().filter(|x| x.phase == i).count();
        assert_eq!(
            (by_phase(0), by_phase(1), by_phase(2), by_phase(3)),
            (20, 100, 0, 20)
        );
        assert_eq!(
            count_in(&a, 15.0, 18.0),
            0,
            "nothing sent while the rate is 0"
        );
        assert_eq!(p.phase_at(12.0), 1);
        assert_eq!(p.rate_at(16.0), 0.0);
    }

    fn spike(multiplier: f64) -> Profile {
        Profile::spike(
            &Spike {
                baseline_rps: 2.0,
                multiplier,
                baseline: 20.0,
                ramp: 4.0,
                hold: 10.0,
                ramp_down: 2.0,
                recovery: 20.0,
            },
            Spacing::Poisson,
        )
    }

    #[test]
    fn spike_shape_10x_and_100x() {
        for mult in [10.0, 100.0] {
            let p = spike(mult);
            let names: Vec<&str> = p.phases.iter().map(|x| x.name.as_str()).collect();
            assert_eq!(
                names,
                ["baseline", "ramp", "spike", "ramp_down", "recovery"]
            );
            assert_eq!(p.duration(), 56.0);
            let peak = 2.0 * mult;
            assert_eq!(p.rate_at(10.0), 2.0);
            assert!((p.rate_at(26.0) - peak).abs() < 1e-9);
            assert!(
                (p.rate_at(22.0) - (2.0 + peak) / 2.0).abs() < 1e-9,
                "ramp midpoint"
            );
            // Averages over several seeds: each phase's count is its expected mass within
            // 10% (plus a little slack for the small baseline phases).
            let seeds = 200;
            for (i, ph) in p.phases.iter().enumerate() {
                let total: usize = (0..seeds)
                    .map(|s| {
                        p.arrivals(s, usize::MAX)
                            .iter()
                            .filter(|a| a.phase == i)
                            .count()
                    })
                    .sum();
                let got = total as f64 / seeds as f64;
                let want = ph.mass();
                assert!(
                    (got - want).abs() <= 0.1 * want + 1.0,
                    "{mult}x {}: {got} vs {want}",
                    ph.name
                );
            }
            let a = p.arrivals(7, usize::MAX);
            // The hold runs at the multiplied rate, the baseline and recovery do not.
            let hold_rate = count_in(&a, 24.0, 34.0) as f64 / 10.0;
            let base_rate = count_in(&a, 0.0, 20.0) as f64 / 20.0;
            let rec_rate = count_in(&a, 36.0, 56.0) as f64 / 20.0;
            assert!(
                (hold_rate / peak - 1.0).abs() < 0.15 + 2.0 / peak,
                "hold {hold_rate}"
            );
            assert!(base_rate < 3.5 && rec_rate < 3.5, "{base_rate} {rec_rate}");
            // The ramp rises: its second half holds about 3× the first half's arrivals
            // for 10× (areas of a trapezoid), more for 100×.
            let (first, second) = (count_in(&a, 20.0, 22.0), count_in(&a, 22.0, 24.0));
            assert!(
                second as f64 > 1.5 * first as f64,
                "ramp {first} then {second}"
            );
            // Phase indices agree with the times.
            assert!(a.iter().all(|x| p.phase_at(x.at) == x.phase));
            assert!(a.windows(2).all(|w| w[0].at <= w[1].at));
        }
    }

    #[test]
    fn uniform_ramp_inverts_the_cumulative_rate() {
        // 0 → 10 rps over 10 s: Λ(t) = t²/2, so arrival k sits at sqrt(2k).
        let p = Profile::from_parts(&[("ramp", 0.0, 10.0, 10.0)], Spacing::Uniform);
        let a = p.arrivals(0, usize::MAX);
        assert_eq!(a.len(), 50);
        for (k, x) in a.iter().enumerate() {
            assert!(
                (x.at - (2.0 * k as f64).sqrt()).abs() < 1e-9,
                "{k}: {}",
                x.at
            );
        }
    }
}
