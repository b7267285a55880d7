//! The autoscaler at work: a pingora background service that, every
//! `autoscale_interval`, feeds each pool's demand (in flight + queued) to its
//! [`Autoscaler`](super::autoscale::Autoscaler) and applies the decision — start
//! workers, or drain the least busy ones (no new leases; SIGTERM when their last
//! request ends). It also makes room in the machine's budget when a pool cannot start
//! a worker: idle workers of other models on the same device are stopped, least
//! recently used first.
//!
//! Every scaling step is counted in `surge_scale_events_total{model,direction,reason}`,
//! logged with the numbers behind it, and visible on `GET /admin/pools`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use serde_json::{json, Value};

use super::autoscale::{Decision, Reason};
use super::pool::{Pool, Pools, State, Worker};

impl Pool {
    /// One autoscaler step at `now` (the autoscaler's clock; tests pass a fake one):
    /// reaps broken workers, records the demand since the last step, decides, and
    /// starts or drains workers to match.
    pub fn autoscale(&self, now: Instant) {
        let mut st = self.lock();
        if st.closed {
            return;
        }
        // Broken workers with nothing in flight (a failed connect) are done for.
        self.stop_idle_where(&mut st, |w| w.broken, "broken");
        // Time-weighted since the last tick: a request that came and went between two
        // ticks still counts (an instantaneous sample would miss it and let an idle
        // decision stop the worker it just used).
        let demand = st.take_average_demand();
        st.scaler.observe(now, demand);
        let current = Pool::current(&st);
        let d = st.scaler.decide(now, current);
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
            while Pool::current(&st) < d.desired && self.start_one(&mut st) {
                started += 1;
            }
            self.scaled(&d, current, started, "up");
        } else if d.desired < current {
            let stopped = self.drain(&mut st, current - d.desired);
            self.scaled(&d, current, stopped, "down");
        }
        st.decision = Some(d);
        // Requests still waiting after a backoff or a budget refusal.
        self.maybe_start(&mut st);
        self.update_worker_gauges(&st);
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
    fn drain(&self, st: &mut State, n: usize) -> usize {
        let mut order: Vec<usize> = (0..st.workers.len())
            .filter(|&i| st.workers[i].live())
            .collect();
        order.sort_by_key(|&i| (st.workers[i].in_flight, st.workers[i].idle_since));
        order.truncate(n);
        let count = order.len();
        for &i in &order {
            st.workers[i].draining = true;
        }
        self.stop_idle_where(st, |w| w.draining, "scaled down");
        count
    }

    #[cfg(test)]
    pub(super) fn drain_for_test(&self, st: &mut State, n: usize) -> usize {
        self.drain(st, n)
    }

    /// Stops the workers with nothing in flight for which `pick` holds.
    fn stop_idle_where(&self, st: &mut State, pick: fn(&Worker) -> bool, why: &str) {
        let mut i = 0;
        while i < st.workers.len() {
            if pick(&st.workers[i]) && st.workers[i].in_flight == 0 {
                let w = st.workers.remove(i);
                self.stop_worker(st, w.handle, why);
            } else {
                i += 1;
            }
        }
    }

    /// Idle workers that may be evicted for another model: `(idle since, worker id)`,
    /// keeping `min_workers`.
    fn evictable(&self) -> Vec<(Instant, u64)> {
        let st = self.lock();
        let live = st.workers.iter().filter(|w| w.live()).count();
        let spare = live.saturating_sub(self.cfg.min_workers);
        if st.closed || !st.waiters.is_empty() || spare == 0 {
            return Vec::new();
        }
        let mut idle: Vec<(Instant, u64)> = st
            .workers
            .iter()
            .filter(|w| w.live() && w.in_flight == 0)
            .map(|w| (w.idle_since, w.handle.id))
            .collect();
        idle.sort();
        idle.truncate(spare);
        idle
    }

    /// Stops worker `id` if it is still idle; true if it did.
    fn evict(&self, id: u64, for_model: &str) -> bool {
        let mut st = self.lock();
        let Some(i) = st
            .workers
            .iter()
            .position(|w| w.handle.id == id && w.live() && w.in_flight == 0)
        else {
            return false;
        };
        let w = st.workers.remove(i);
        self.env
            .metrics
            .scale_events
            .with_label_values(&[&self.model, "down", Reason::Evict.label()])
            .inc();
        tracing::info!(model = %self.model, worker = id, for_model, "evicting idle worker for room");
        self.stop_worker(&st, w.handle, "evicted");
        true
    }

    /// The pool as `/admin/pools` shows it.
    pub fn json(&self) -> Value {
        let st = self.lock();
        let now = Instant::now();
        let workers: Vec<Value> = st
            .workers
            .iter()
            .map(|w| {
                let state = if w.broken {
                    "failed"
                } else if w.draining {
                    "draining"
                } else {
                    "ready"
                };
                json!({
                    "id": w.handle.id,
                    "pid": w.handle.pid,
                    "state": state,
                    "in_flight": w.in_flight,
                    "idle_seconds": if w.in_flight == 0 {
                        Some(now.duration_since(w.idle_since).as_secs_f64())
                    } else {
                        None
                    },
                    "age_seconds": w.handle.started.elapsed().as_secs_f64(),
                    "cold_start_seconds": w.handle.cold_start.as_secs_f64(),
                    "cold_start_phases": w
                        .handle
                        .startup
                        .iter()
                        .map(|(k, v)| (k.clone(), Value::from(*v)))
                        .collect::<serde_json::Map<String, Value>>(),
                })
            })
            .collect();
        let d = st.decision.as_ref();
        json!({
            "model": self.model,
            "device": self.spec.device,
            "min_workers": self.cfg.min_workers,
            "max_workers": self.cfg.max_workers,
            "concurrency": self.cfg.concurrency,
            "target_concurrency": st.scaler.policy().target_concurrency,
            "idle_timeout_seconds": self.cfg.idle_timeout.as_secs_f64(),
            "worker_cost": self.cost,
            "starting": st.starting,
            "ready": st.workers.iter().filter(|w| w.live()).count(),
            "in_flight": st.workers.iter().map(|w| w.in_flight).sum::<usize>(),
            "queued": st.waiters.len(),
            "desired": d.map(|d| d.desired),
            "reason": d.map(|d| d.reason.label()),
            "stable_concurrency": d.map(|d| d.stable_concurrency),
            "panic_concurrency": d.map(|d| d.panic_concurrency),
            "waiting_for_room": st.wants_room,
            "workers": workers,
        })
    }

    fn wants_room(&self) -> bool {
        self.lock().wants_room
    }

    /// After room was made: start what the pool was refused.
    fn retry_start(&self) {
        let mut st = self.lock();
        st.wants_room = false;
        let wanted = st.decision.as_ref().map_or(0, |d| d.desired);
        while Pool::current(&st) < wanted && self.start_one(&mut st) {}
        self.maybe_start(&mut st);
    }
}

impl Pools {
    /// One autoscaler pass over every pool, then room for pools the budget refused.
    pub fn autoscale(&self, now: Instant) {
        for p in self.all() {
            p.autoscale(now);
        }
        self.make_room();
    }

    /// For each pool refused a start: evict the least recently used idle worker of
    /// another model on the same device, then let the pool try again.
    pub fn make_room(&self) {
        for p in self.all().filter(|p| p.wants_room()) {
            let mut victims: Vec<(Instant, u64, &Arc<Pool>)> = self
                .all()
                .filter(|o| o.model != p.model && same_device(&o.spec.device, &p.spec.device))
                .flat_map(|o| o.evictable().into_iter().map(move |(t, id)| (t, id, o)))
                .collect();
            victims.sort_by_key(|&(t, id, _)| (t, id));
            // Free at least one worker's worth of this pool's cost.
            let mut freed = 0.0;
            for (_, id, o) in victims {
                if freed >= p.cost {
                    break;
                }
                if o.evict(id, &p.model) {
                    freed += o.cost;
                }
            }
            // Nothing to evict: the pool waits (its requests queue) until a tick finds
            // room; retrying now would only ring again.
            if freed > 0.0 {
                p.retry_start();
            }
        }
    }

    /// `GET /admin/pools`.
    pub fn json(&self) -> Value {
        let mut pools: Vec<Value> = self.all().map(|p| p.json()).collect();
        pools.sort_by(|a, b| a["model"].as_str().cmp(&b["model"].as_str()));
        json!({"pools": pools, "budget": self.env.budget.json()})
    }
}

fn same_device(a: &str, b: &str) -> bool {
    let norm = |d: &str| {
        if d == "cuda" {
            "cuda:0".to_string()
        } else {
            d.to_string()
        }
    };
    norm(a) == norm(b)
}

/// Runs [`Pools::autoscale`] every `interval`, and [`Pools::make_room`] whenever a pool
/// rings (a start the budget refused), until shutdown.
pub struct Autoscaling {
    pub pools: Arc<Pools>,
    pub interval: Duration,
}

#[async_trait]
impl BackgroundService for Autoscaling {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut tick = tokio::time::interval(self.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let kick = self.pools.env.kick.clone();
        loop {
            tokio::select! {
                _ = tick.tick() => self.pools.autoscale(Instant::now()),
                _ = kick.notified() => self.pools.make_room(),
                _ = shutdown.changed() => return,
            }
        }
    }
}
