//! The actor's side of autoscaling: each tick feeds the pool's demand (in flight +
//! queued, time-weighted since the last tick) to its [`Autoscaler`](crate::serve::autoscale::Autoscaler)
//! and applies the decision — start workers, or drain the least busy (no new leases,
//! SIGTERM when their last request ends) — plus the evictions another pool asks for.
//!
//! Every step is counted in `surge_scale_events_total{model,direction,reason}` and
//! logged with the numbers behind it.

use std::time::Instant;

use super::actor::{PoolActor, Worker};
use super::Cost;
use crate::metering::WorkerPhase;
use crate::serve::autoscale::{Decision, Reason};

impl PoolActor {
    /// One autoscaler step at `now`: reaps broken idle workers, records the demand
    /// since the last step, decides, and starts or drains workers to match.
    pub(super) fn tick(&mut self, now: Instant) {
        if self.closed {
            return;
        }
        self.stop_idle_where(|w| w.broken, "broken");
        // What the workers hold now, so the budget (and the next start) sees it.
        self.measure_all();
        // Time-weighted since the last tick: a request that came and went between two
        // ticks still counts (an instantaneous sample would miss it and let an idle
        // decision stop the worker it just used).
        let demand = self.take_average_demand();
        self.scaler.observe(now, demand);
        let current = self.current();
        let d = self.scaler.decide(now, current);
        let m = &self.env.metrics;
        m.desired_workers
            .with_label_values(&[&self.model])
            .set(d.desired as i64);
        m.scaler_concurrency
            .with_label_values(&[&self.model, "stable"])
            .set(d.stable_concurrency);
        m.scaler_concurrency
            .with_label_values(&[&self.model, "panic"])
            .set(d.panic_concurrency);
        if d.desired > current {
            let mut started = 0;
            while self.current() < d.desired && self.start_one() {
                started += 1;
            }
            self.scaled(&d, current, started, "up");
        } else if d.desired < current {
            let stopped = self.drain(current - d.desired);
            self.scaled(&d, current, stopped, "down");
        }
        self.decision = Some(d);
        // Requests still waiting after a backoff or a budget refusal.
        self.maybe_start();
        self.update_worker_gauges();
    }

    fn scaled(&self, d: &Decision, from: usize, n: usize, direction: &str) {
        if n == 0 {
            return;
        }
        self.env
            .metrics
            .scale_events
            .with_label_values(&[&self.model, direction, d.reason.label()])
            .inc_by(n as u64);
        self.env
            .recent
            .scaled(&self.model, direction, d.reason.label(), n);
        tracing::info!(
            model = %self.model,
            direction,
            reason = d.reason.label(),
            from,
            workers = n,
            desired = d.desired,
            stable_concurrency = d.stable_concurrency,
            panic_concurrency = d.panic_concurrency,
            target = self.cfg.concurrency as f64 * self.cfg.target_utilization,
            "scale"
        );
    }

    /// Drains up to `n` ready workers, least busy (then longest idle) first; idle ones
    /// stop at once. Returns how many.
    pub(super) fn drain(&mut self, n: usize) -> usize {
        let mut order: Vec<usize> = (0..self.workers.len())
            .filter(|&i| self.workers[i].live())
            .collect();
        order.sort_by_key(|&i| (self.workers[i].in_flight, self.workers[i].idle_since));
        order.truncate(n);
        for &i in &order {
            let w = &mut self.workers[i];
            w.draining = true;
            if let Some(c) = &self.capacity {
                c.enter(w, WorkerPhase::Draining);
            }
        }
        self.stop_idle_where(|w| w.draining, "scaled down");
        self.update_worker_gauges();
        order.len()
    }

    /// Stops the workers with nothing in flight for which `pick` holds.
    fn stop_idle_where(&mut self, pick: fn(&Worker) -> bool, why: &str) {
        let mut i = 0;
        while i < self.workers.len() {
            if pick(&self.workers[i]) && self.workers[i].in_flight == 0 {
                let w = self.workers.remove(i);
                self.left(&w);
                self.stop_worker(w.handle, w.charged, why);
            } else {
                i += 1;
            }
        }
    }

    /// Idle workers that may be evicted for another model at `now`: `(idle since,
    /// worker id, its charge)`, keeping `min_workers`, and only those idle for at
    /// least `evict_idle_after` (hysteresis: a worker between two requests of a busy
    /// model is not spare capacity).
    pub(super) fn evictable(&self, now: Instant) -> Vec<(Instant, u64, Cost)> {
        let live = self.workers.iter().filter(|w| w.live()).count();
        let spare = live.saturating_sub(self.cfg.min_workers);
        if self.closed || !self.waiters.is_empty() || spare == 0 {
            return Vec::new();
        }
        let mut idle: Vec<(Instant, u64, Cost)> = self
            .workers
            .iter()
            .filter(|w| w.live() && w.in_flight == 0)
            .filter(|w| now.saturating_duration_since(w.idle_since) >= self.cfg.evict_idle_after)
            .map(|w| (w.idle_since, w.handle.id, w.charged))
            .collect();
        idle.sort_by_key(|&(t, id, _)| (t, id));
        idle.truncate(spare);
        idle
    }

    /// Stops worker `id` if it is still idle; true if it did.
    pub(super) fn evict(&mut self, id: u64, for_model: &str) -> bool {
        let Some(i) = self.workers.iter().position(|w| {
            // Still idle, and not served since it was offered: the hysteresis holds.
            w.handle.id == id
                && w.live()
                && w.in_flight == 0
                && w.idle_since.elapsed() >= self.cfg.evict_idle_after
        }) else {
            return false;
        };
        let w = self.workers.remove(i);
        self.left(&w);
        self.env
            .metrics
            .scale_events
            .with_label_values(&[&self.model, "down", Reason::Evict.label()])
            .inc();
        self.env
            .recent
            .scaled(&self.model, "down", Reason::Evict.label(), 1);
        tracing::info!(model = %self.model, worker = id, for_model, cores = w.charged.cores, memory = w.charged.memory, "evicting idle worker for room");
        self.stop_worker(w.handle, w.charged, "evicted");
        true
    }

    /// After room was made: start what the pool was refused.
    pub(super) fn retry_start(&mut self) {
        self.wants_room = false;
        let wanted = self.decision.as_ref().map_or(0, |d| d.desired);
        while self.current() < wanted && self.start_one() {}
        self.maybe_start();
    }
}
