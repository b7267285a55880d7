//! The scaling decision of one model pool, as pure logic over a clock the caller passes
//! in (so tests drive it with a fake clock), modelled on Knative's KPA.
//!
//! Each tick the pool reports its concurrency (requests in flight + queued). Desired
//! workers = ceil(concurrency ÷ target per worker), from the average over a stable
//! window (60 s) — or, in panic mode, over a panic window (6 s). Panic starts when the
//! panic-window demand reaches 2× current capacity (or any demand meets zero workers):
//! scale up at once, and never down, until the panic condition has been false for a
//! whole stable window. Scale-ups are bounded by a rate, scale-downs by a step per
//! decision, and a worker is only removed once demand is 10% below the smaller pool's
//! capacity, so a steady load at a boundary does not flap. With no demand for
//! `idle_timeout` the pool goes to `min_workers` (zero: scale to zero).
//!
//! The pool actors apply the decisions on each tick ([`super::pool`]), driven by a pingora
//! background service ([`super::pool::Autoscaling`]).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::config::PoolConfig;

/// Knobs of one pool's autoscaler.
#[derive(Debug, Clone, PartialEq)]
pub struct ScalePolicy {
    /// Concurrent requests one worker should carry.
    pub target_concurrency: f64,
    pub min_workers: usize,
    pub max_workers: usize,
    pub stable_window: Duration,
    pub panic_window: Duration,
    /// Panic when panic-window demand ≥ this × current capacity.
    pub panic_threshold: f64,
    /// A decision may multiply the workers by at most this.
    pub max_scale_up_rate: f64,
    /// A decision may remove at most this many workers.
    pub scale_down_step: usize,
    /// No demand for this long → `min_workers`.
    pub idle_timeout: Duration,
}

impl Default for ScalePolicy {
    fn default() -> Self {
        Self {
            target_concurrency: 16.0,
            min_workers: 0,
            max_workers: 4,
            stable_window: Duration::from_secs(60),
            panic_window: Duration::from_secs(6),
            panic_threshold: 2.0,
            max_scale_up_rate: 10.0,
            scale_down_step: 1,
            idle_timeout: Duration::from_secs(60),
        }
    }
}

impl ScalePolicy {
    /// A pool's policy from its configuration.
    pub fn for_pool(c: &PoolConfig) -> Self {
        Self {
            target_concurrency: (c.concurrency as f64 * c.target_utilization).max(0.01),
            min_workers: c.min_workers,
            max_workers: c.max_workers,
            stable_window: c.stable_window,
            panic_window: c.panic_window,
            panic_threshold: c.panic_threshold,
            max_scale_up_rate: c.max_scale_up_rate,
            scale_down_step: c.scale_down_step,
            idle_timeout: c.idle_timeout,
        }
    }
}

/// Why a pool scaled (a metrics label). `decide` gives the first three; `Evict` is a
/// worker stopped to make room in the machine's budget for another model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    Panic,
    Stable,
    Idle,
    Evict,
}

impl Reason {
    pub fn label(self) -> &'static str {
        match self {
            Reason::Panic => "panic",
            Reason::Stable => "stable",
            Reason::Idle => "idle",
            Reason::Evict => "evict",
        }
    }
}

/// One decision and the numbers behind it (for logs and `/admin/pools`).
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    pub desired: usize,
    pub reason: Reason,
    pub stable_concurrency: f64,
    pub panic_concurrency: f64,
}

/// One pool's autoscaler state.
pub struct Autoscaler {
    policy: ScalePolicy,
    samples: VecDeque<(Instant, f64)>,
    /// When the panic condition last held, while in panic mode.
    panic_since_last_trigger: Option<Instant>,
    /// The most workers asked for during this panic (panic never scales down).
    panic_desired: usize,
    last_demand: Option<Instant>,
}

impl Autoscaler {
    pub fn new(policy: ScalePolicy) -> Self {
        Self {
            policy,
            samples: VecDeque::new(),
            panic_since_last_trigger: None,
            panic_desired: 0,
            last_demand: None,
        }
    }

    pub fn policy(&self) -> &ScalePolicy {
        &self.policy
    }

    /// Records the pool's concurrency (in flight + queued) at `now`.
    pub fn observe(&mut self, now: Instant, concurrency: f64) {
        self.samples.push_back((now, concurrency));
        if concurrency > 0.0 {
            self.last_demand = Some(now);
        }
        let keep = self.policy.stable_window.max(self.policy.panic_window);
        while self
            .samples
            .front()
            .is_some_and(|&(t, _)| now.duration_since(t) > keep)
        {
            self.samples.pop_front();
        }
    }

    fn average(&self, now: Instant, window: Duration) -> f64 {
        let (sum, n) = self
            .samples
            .iter()
            .filter(|&&(t, _)| now.duration_since(t) <= window)
            .fold((0.0, 0usize), |(s, n), &(_, c)| (s + c, n + 1));
        if n == 0 {
            0.0
        } else {
            sum / n as f64
        }
    }

    /// The workers the pool should have, given it has `current` (ready + starting).
    pub fn decide(&mut self, now: Instant, current: usize) -> Decision {
        let p = &self.policy;
        let stable = self.average(now, p.stable_window);
        let panic = self.average(now, p.panic_window);
        let want = |c: f64| (c / p.target_concurrency).ceil() as usize;
        let clamp = |d: usize| d.clamp(p.min_workers, p.max_workers.max(p.min_workers));
        let decision = |desired, reason| Decision {
            desired,
            reason,
            stable_concurrency: stable,
            panic_concurrency: panic,
        };

        let idle = self
            .last_demand
            .is_none_or(|t| now.duration_since(t) >= p.idle_timeout);
        if idle {
            self.panic_since_last_trigger = None;
            return decision(clamp(p.min_workers), Reason::Idle);
        }

        let capacity = current as f64 * p.target_concurrency;
        let triggered = panic > 0.0 && panic >= p.panic_threshold * capacity;
        if triggered {
            self.panic_since_last_trigger = Some(now);
        }
        let in_panic = self
            .panic_since_last_trigger
            .is_some_and(|t| now.duration_since(t) < p.stable_window);
        // At most `max_scale_up_rate` × current (from zero: straight to the demand).
        let rate_cap = if current == 0 {
            usize::MAX
        } else {
            (current as f64 * p.max_scale_up_rate).ceil() as usize
        };
        if in_panic {
            let desired = want(panic).max(want(stable)).min(rate_cap).max(current);
            self.panic_desired = self.panic_desired.max(desired);
            return decision(clamp(self.panic_desired), Reason::Panic);
        }
        self.panic_since_last_trigger = None;
        self.panic_desired = 0;

        let mut desired = want(stable).min(rate_cap).max(1);
        if desired < current {
            // Remove a worker only when demand is 10% below the smaller pool's capacity.
            let with_margin = (stable / (p.target_concurrency * 0.9)).ceil() as usize;
            desired = desired
                .max(with_margin)
                .max(current.saturating_sub(p.scale_down_step));
        }
        decision(clamp(desired), Reason::Stable)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Drives an autoscaler with a fake clock: one sample and one decision per second,
    /// applying each decision as the new current count.
    struct Sim {
        a: Autoscaler,
        t0: Instant,
        now: Duration,
        current: usize,
    }

    impl Sim {
        fn new(policy: ScalePolicy, current: usize) -> Sim {
            Sim {
                a: Autoscaler::new(policy),
                t0: Instant::now(),
                now: Duration::ZERO,
                current,
            }
        }

        /// `secs` ticks at `load`; returns every decision.
        fn run(&mut self, secs: u64, load: impl Fn(u64) -> f64) -> Vec<Decision> {
            (0..secs)
                .map(|s| {
                    self.now += Duration::from_secs(1);
                    let t = self.t0 + self.now;
                    self.a.observe(t, load(s));
                    let d = self.a.decide(t, self.current);
                    self.current = d.desired;
                    d
                })
                .collect()
        }
    }

    fn policy() -> ScalePolicy {
        ScalePolicy {
            target_concurrency: 10.0,
            max_workers: 20,
            ..ScalePolicy::default()
        }
    }

    #[test]
    fn steady_load_settles_on_the_stable_desire() {
        let mut s = Sim::new(policy(), 1);
        let d = s.run(120, |_| 25.0);
        assert_eq!(d.last().unwrap().desired, 3);
        assert_eq!(d.last().unwrap().reason, Reason::Stable);
    }

    #[test]
    fn a_spike_panics_up_at_once_and_holds_until_the_stable_window_agrees() {
        let mut s = Sim::new(policy(), 1);
        s.run(120, |_| 8.0);
        assert_eq!(s.current, 1);
        // 10× spike: within a few ticks the panic window sees ≥ 2× capacity.
        let spike = s.run(10, |_| 80.0);
        let first_panic = spike
            .iter()
            .position(|d| d.reason == Reason::Panic)
            .unwrap();
        assert!(first_panic <= 1, "{spike:?}");
        assert!(spike.last().unwrap().desired >= 8, "{spike:?}");
        // Back to baseline: no scale-down while the panic lasts (one stable window).
        let after = s.run(50, |_| 8.0);
        assert!(after.iter().all(|d| d.desired >= 8), "{after:?}");
        // Then down, one worker per decision, to the stable desire.
        let later = s.run(120, |_| 8.0);
        assert_eq!(later.last().unwrap().desired, 1);
        let steps: Vec<usize> = later.iter().map(|d| d.desired).collect();
        assert!(steps.windows(2).all(|w| w[0] <= w[1] + 1), "{steps:?}");
    }

    #[test]
    fn decisions_are_clamped() {
        let p = ScalePolicy {
            min_workers: 2,
            max_workers: 4,
            ..policy()
        };
        let mut s = Sim::new(p, 2);
        assert_eq!(s.run(30, |_| 500.0).last().unwrap().desired, 4);
        assert_eq!(s.run(200, |_| 1.0).last().unwrap().desired, 2);
    }

    #[test]
    fn idle_pools_scale_to_zero_or_to_min_workers() {
        let p = ScalePolicy {
            idle_timeout: Duration::from_secs(30),
            ..policy()
        };
        let mut s = Sim::new(p.clone(), 0);
        let d = s.run(5, |_| 3.0);
        assert_eq!(d.last().unwrap().desired, 1, "cold start from zero");
        let d = s.run(40, |_| 0.0);
        let zero = d.iter().position(|d| d.desired == 0).unwrap();
        assert_eq!(d[zero].reason, Reason::Idle);
        assert!((29..=30).contains(&zero), "scaled to zero after {zero} s");
        let mut warm = Sim::new(
            ScalePolicy {
                min_workers: 1,
                ..p
            },
            1,
        );
        assert_eq!(warm.run(100, |_| 0.0).last().unwrap().desired, 1);
    }

    #[test]
    fn no_flapping_on_a_noisy_load_at_a_boundary() {
        let mut s = Sim::new(policy(), 2);
        // 20 ± 1 concurrent requests: exactly two workers' worth.
        let d = s.run(600, |t| 20.0 + if t % 2 == 0 { 1.0 } else { -1.0 });
        let changes = d
            .windows(2)
            .filter(|w| w[0].desired != w[1].desired)
            .count();
        assert!(changes <= 1, "{changes} changes");
    }

    #[test]
    fn scale_up_rate_is_bounded() {
        let p = ScalePolicy {
            max_scale_up_rate: 2.0,
            ..policy()
        };
        let mut s = Sim::new(p, 1);
        let d = s.run(3, |_| 150.0);
        let seq: Vec<usize> = d.iter().map(|d| d.desired).collect();
        assert_eq!(seq, vec![2, 4, 8]);
    }
}
