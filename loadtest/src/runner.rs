//! Driving the load: an open-loop dispatcher that sends each planned request at its
//! intended time whatever the server is doing (one tokio task per in-flight request, so
//! hundreds in flight cost no threads), or a closed loop of N users. Both are bounded by
//! a request count and a hard deadline and stop by themselves.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use crate::client::{send, Record, Target};
use crate::scenario::Class;
use crate::workload::{Planned, Planner};

/// Counters the progress line reads while the run goes on.
#[derive(Debug, Default)]
pub struct Live {
    pub sent: AtomicU64,
    pub done: AtomicU64,
    pub ok: AtomicU64,
    pub errors: AtomicU64,
    pub dropped: AtomicU64,
    pub tokens: AtomicU64,
}

impl Live {
    pub fn in_flight(&self) -> u64 {
        let sent = self.sent.load(Ordering::Relaxed);
        sent.saturating_sub(self.done.load(Ordering::Relaxed))
    }

    fn finish(&self, r: &Record) {
        if !r.was_sent() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        self.tokens.fetch_add(r.tokens_out, Ordering::Relaxed);
        if r.ok() {
            self.ok.fetch_add(1, Ordering::Relaxed);
        } else {
            self.errors.fetch_add(1, Ordering::Relaxed);
        }
        self.done.fetch_add(1, Ordering::Relaxed);
    }
}

/// What every request task shares.
pub struct Ctx {
    pub target: Arc<Target>,
    pub classes: Arc<Vec<Class>>,
    pub phase_names: Vec<String>,
    pub start: Instant,
    /// The run's max_duration: nothing is sent after it, nothing waited for past it.
    pub hard_deadline: Instant,
    pub max_in_flight: usize,
    pub live: Arc<Live>,
    /// Turns true on Ctrl-C: nothing more is sent and running requests are cancelled,
    /// so the report of what happened so far is still written.
    pub interrupt: watch::Receiver<bool>,
}

/// Resolves once `rx` is true (or its sender is gone, which never happens mid-run).
async fn interrupted(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|v| *v).await;
}

impl Ctx {
    fn phase(&self, i: usize) -> &str {
        self.phase_names.get(i).map_or("closed", String::as_str)
    }

    async fn send(self: &Arc<Self>, p: Planned) -> Record {
        self.live.sent.fetch_add(1, Ordering::Relaxed);
        let class = &self.classes[p.class];
        let phase = self.phase(p.phase);
        let sent = self.start.elapsed().as_secs_f64();
        let r = tokio::select! {
            r = send(self.target.clone(), class, phase, p, self.start, self.hard_deadline) => r,
            _ = interrupted(self.interrupt.clone()) => {
                let now = self.start.elapsed().as_secs_f64();
                let mut r = Record::unsent(&p, &class.name, phase, now, "cancelled");
                r.sent = Some(sent);
                r.error_body = Some("interrupted (Ctrl-C)".into());
                r
            }
        };
        self.live.finish(&r);
        r
    }

    fn is_interrupted(&self) -> bool {
        *self.interrupt.borrow()
    }
}

/// Sends `plan` (sorted by intended time) open loop. Arrivals that find
/// `max_in_flight` requests running are recorded as `dropped`; arrivals past the hard
/// deadline are not sent at all (the caller counts them from the plan).
pub async fn run_open(ctx: Arc<Ctx>, plan: Vec<Planned>) -> Vec<Record> {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let collector = tokio::spawn(async move {
        let mut out = Vec::new();
        while let Some(r) = rx.recv().await {
            out.push(r);
        }
        out
    });
    for p in plan {
        let at = ctx.start + Duration::from_secs_f64(p.at);
        if at >= ctx.hard_deadline || ctx.is_interrupted() {
            break;
        }
        tokio::select! {
            _ = tokio::time::sleep_until(at) => {}
            _ = interrupted(ctx.interrupt.clone()) => break,
        }
        if ctx.live.in_flight() >= ctx.max_in_flight as u64 {
            let now = ctx.start.elapsed().as_secs_f64();
            let class = &ctx.classes[p.class].name;
            let r = Record::unsent(&p, class, ctx.phase(p.phase), now, "dropped");
            ctx.live.finish(&r);
            let _ = tx.send(r);
            continue;
        }
        let (ctx, tx) = (ctx.clone(), tx.clone());
        tokio::spawn(async move {
            let r = ctx.send(p).await;
            let _ = tx.send(r);
        });
    }
    drop(tx);
    let mut out = collector.await.unwrap_or_default();
    out.sort_by_key(|r| r.id);
    out
}

/// Closed loop: `users` tasks each send a request, wait for it, wait `think` seconds and
/// repeat until `duration` has passed or `max_requests` were sent. Latency is measured
/// from the moment a user sends (here intended = actual): a closed loop measures what N
/// patient users see, not what an arrival rate would.
pub async fn run_closed(
    ctx: Arc<Ctx>,
    planner: Planner,
    users: usize,
    duration: f64,
    think: f64,
    max_requests: usize,
) -> Vec<Record> {
    let planner = Arc::new(Mutex::new(planner));
    let tickets = Arc::new(AtomicU64::new(0));
    let end = (ctx.start + Duration::from_secs_f64(duration)).min(ctx.hard_deadline);
    let mut tasks = Vec::new();
    for _ in 0..users {
        let (ctx, planner, tickets) = (ctx.clone(), planner.clone(), tickets.clone());
        tasks.push(tokio::spawn(async move {
            let mut out = Vec::new();
            loop {
                let now = Instant::now();
                if now >= end
                    || ctx.is_interrupted()
                    || tickets.fetch_add(1, Ordering::Relaxed) >= max_requests as u64
                {
                    return out;
                }
                let at = now.duration_since(ctx.start).as_secs_f64();
                let p = match planner.lock() {
                    Ok(mut pl) => pl.draw(at, usize::MAX),
                    Err(_) => return out,
                };
                out.push(ctx.send(p).await);
                if think > 0.0 {
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_secs_f64(think)) => {}
                        _ = interrupted(ctx.interrupt.clone()) => {}
                    }
                }
            }
        }));
    }
    let mut out = Vec::new();
    for t in tasks {
        out.extend(t.await.unwrap_or_default());
    }
    out.sort_by_key(|r| r.id);
    out
}
