//! Per-model worker pools: leases on worker slots, the cold-start admission queue, and
//! the worker lifecycle (start on demand, replace crashed, drain, reap idle).
//!
//! Each pool is an actor ([`actor`]): one task owns the pool's state — its workers, its
//! waiting requests, its autoscaler — and changes it only in answer to a [`Command`] on
//! its channel, as TGI's queue task and Ollama's scheduler loop do. Everything that
//! happens to a pool is then one message handled in order: a request asks for a slot
//! (`Acquire`) or leaves the queue (`Cancel`: timed out, or the client hung up), a lease
//! ends (`Release`), a worker becomes ready or exits, the autoscaler ticks, a worker is
//! drained or evicted, the gateway stops. [`Pool`] is the handle the proxy holds.
//!
//! A request gets a [`Lease`]: a slot on the least-loaded ready worker (in-flight below
//! `concurrency`). With no free slot it waits in a bounded FIFO queue — the
//! "activator" — and the pool starts a worker when there is room under `max_workers`.
//! Queue full → 429, waited past `queue_timeout` → 503, both with `Retry-After`. A
//! waiter that leaves, for whatever reason, leaves the queue, the depth gauge and the
//! autoscaler's demand at once. Dropping a lease frees its slot for the next waiter.
//!
//! How many workers run beyond that first on-demand start is the autoscaler's call: a
//! pure decision over the pool's demand ([`super::autoscale`]) applied by the actor on
//! each tick ([`scale`]). Every worker, starting or running, is charged against its
//! device's [`Budget`]; a start that does not fit rings the autoscaling service, which
//! evicts idle workers of other models ([`Pools::make_room`]).

mod actor;
mod capacity;
mod measure;
mod scale;
#[cfg(test)]
mod tests;
mod view;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use surge_protocol::error::ApiError;
use tokio::sync::{mpsc, oneshot, Notify};

use super::budget::{pick_victims, worker_cost, Budget, Cost, Placer};
use super::config::{GatewayConfig, PoolConfig};
use super::gpus;
use super::metrics::GatewayMetrics;
use super::provision::{Endpoint, Provisioner, WorkerHandle, WorkerSpec};
use super::registry::{ModelEntry, Registry};
use super::sizing::cpu_shares;
use super::status::Recent;
use crate::metering::Ledger;
pub use view::{PoolView, PoolsView, WorkerView};

/// How long a stopped worker may take to exit before it is killed (it has no requests
/// left when it is stopped, so this only bounds a stuck process).
pub(crate) const STOP_GRACE: Duration = Duration::from_secs(30);

/// What every pool shares: how to start workers, where to count, the machine's budget
/// and the autoscaler's doorbell.
#[derive(Clone)]
pub struct PoolEnv {
    pub provisioner: Arc<dyn Provisioner>,
    pub metrics: Arc<GatewayMetrics>,
    pub budget: Arc<Budget>,
    /// Rung when a start does not fit the budget, so room is made without waiting for
    /// the next autoscaler tick.
    pub kick: Arc<Notify>,
    /// Where the pool actors and the tasks they start (worker processes, their
    /// watchers) run: one runtime for all pools, apart from pingora's per-service ones.
    pub runtime: tokio::runtime::Handle,
    /// The capacity ledger: every worker's seconds by phase (none: not kept).
    pub ledger: Option<Arc<Ledger>>,
    /// Recent cold starts and scaling events, for the status page.
    pub recent: Arc<Recent>,
}

/// What a pool's actor is asked to do.
pub(crate) enum Command {
    /// A slot, now or when one frees (`id` names the waiter for `Cancel`).
    Acquire {
        id: u64,
        reply: oneshot::Sender<Result<Lease, ApiError>>,
    },
    /// The waiter `id` is gone (timed out, or its client hung up).
    Cancel {
        id: u64,
    },
    /// A lease on `worker` ended.
    Release {
        worker: u64,
    },
    /// `worker` failed a request (could not connect, died): send it no more.
    MarkFailed {
        worker: u64,
    },
    /// A start finished: the ready worker, or why it failed.
    Started(Result<Arc<WorkerHandle>, String>),
    /// A ready worker the pool did not start (recovered after a gateway restart).
    Adopt(Arc<WorkerHandle>),
    /// A worker's process exited.
    Exited {
        worker: u64,
        why: String,
    },
    /// One autoscaler step at `now`.
    Tick {
        now: Instant,
        done: oneshot::Sender<()>,
    },
    /// Drain up to `n` workers (scale-down by hand, and tests).
    Drain {
        n: usize,
        done: oneshot::Sender<usize>,
    },
    /// Idle workers another model may evict: `(idle since, worker id, its charge)`.
    Evictable {
        reply: oneshot::Sender<Vec<(Instant, u64, Cost)>>,
    },
    /// Stop idle worker `worker` to make room for `for_model`; true if it was stopped.
    Evict {
        worker: u64,
        for_model: String,
        reply: oneshot::Sender<bool>,
    },
    /// Room was made: start what the budget refused.
    RetryStart,
    View {
        reply: oneshot::Sender<PoolView>,
    },
    /// The workers that can answer (ready or draining), for scraping their metrics.
    Workers {
        reply: oneshot::Sender<Vec<Arc<WorkerHandle>>>,
    },
    /// Stop admitting: waiters and new requests get 503.
    Close,
    /// Stop every worker (after `Close`), waiting at most `grace` for each.
    StopAll {
        grace: Duration,
        done: oneshot::Sender<()>,
    },
}

/// The handle of one model's pool.
pub struct Pool {
    pub model: String,
    pub cfg: PoolConfig,
    /// What one worker costs on its device before it runs (see [`Budget`]).
    pub cost: Cost,
    /// `cpu`, `cuda:N`.
    pub device: String,
    metrics: Arc<GatewayMetrics>,
    tx: mpsc::UnboundedSender<Command>,
    next_waiter: AtomicU64,
}

/// A slot on one worker; dropping it frees the slot.
pub struct Lease {
    worker: Arc<WorkerHandle>,
    pool: mpsc::UnboundedSender<Command>,
}

impl Lease {
    /// Where the worker serves.
    pub fn endpoint(&self) -> &Endpoint {
        &self.worker.endpoint
    }

    pub fn worker_id(&self) -> u64 {
        self.worker.id
    }

    /// How much of a wait for a slot that began at `since` and ended `now` went to this
    /// worker's cold start (its spawn → ready).
    pub fn cold_start_waited(&self, since: Instant, now: Instant) -> Duration {
        let w = &self.worker;
        let ready = w.started + w.cold_start;
        ready
            .min(now)
            .saturating_duration_since(since.max(w.started))
    }

    /// The worker failed this request (could not connect, died): send it no more.
    pub fn mark_failed(&self) {
        let _ = self.pool.send(Command::MarkFailed {
            worker: self.worker.id,
        });
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        // A stopped pool no longer listens; its slots are gone with it.
        let _ = self.pool.send(Command::Release {
            worker: self.worker.id,
        });
    }
}

/// Sends `Cancel` for a waiter whose `acquire` ends without a reply — timed out, or
/// dropped because the client hung up — so it leaves the queue at once.
struct LeaveQueue<'a> {
    tx: &'a mpsc::UnboundedSender<Command>,
    id: u64,
    armed: bool,
}

impl Drop for LeaveQueue<'_> {
    fn drop(&mut self) {
        if self.armed {
            let _ = self.tx.send(Command::Cancel { id: self.id });
        }
    }
}

impl Pool {
    /// Starts the pool's actor (on the current tokio runtime) and returns its handle.
    /// `weights`: the bytes of the model's weight files, which a worker maps at start
    /// and touches on its first request (a ready worker is charged at least this).
    pub fn new(model: &str, cfg: PoolConfig, cost: Cost, weights: u64, env: PoolEnv) -> Arc<Pool> {
        let device = match cfg.device.as_str() {
            // Placed by `Pools::new`; a pool built alone has no GPU list.
            "auto" => "cpu".to_string(),
            d => d.to_string(),
        };
        let spec = WorkerSpec::new(model, &device, &cfg);
        let (tx, rx) = mpsc::unbounded_channel();
        let metrics = env.metrics.clone();
        actor::PoolActor::spawn(cfg.clone(), cost, weights, spec, env, tx.clone(), rx);
        Arc::new(Pool {
            model: model.to_string(),
            cfg,
            cost,
            device,
            metrics,
            tx,
            next_waiter: AtomicU64::new(1),
        })
    }

    /// Waits for a worker slot (see the module docs).
    pub async fn acquire(&self) -> Result<Lease, ApiError> {
        let arrived = Instant::now();
        let id = self.next_waiter.fetch_add(1, Ordering::Relaxed);
        let (reply, rx) = oneshot::channel();
        if self.tx.send(Command::Acquire { id, reply }).is_err() {
            return Err(ApiError::ShuttingDown);
        }
        let mut leave = LeaveQueue {
            tx: &self.tx,
            id,
            armed: true,
        };
        let got = tokio::time::timeout(self.cfg.queue_timeout, rx).await;
        self.metrics
            .queue_wait_seconds
            .with_label_values(&[&self.model])
            .observe(arrived.elapsed().as_secs_f64());
        match got {
            Ok(Ok(result)) => {
                leave.armed = false;
                result
            }
            Ok(Err(_)) => Err(ApiError::ShuttingDown),
            Err(_) => Err(ApiError::QueueTimeout {
                model: self.model.clone(),
                retry_after: Duration::from_secs(1),
            }),
        }
    }

    /// Asks the actor something; `None` once it has stopped.
    async fn ask<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Command) -> Option<T> {
        let (tx, rx) = oneshot::channel();
        self.tx.send(make(tx)).ok()?;
        rx.await.ok()
    }

    /// One autoscaler step at `now` (the autoscaler's clock; tests pass a fake one).
    pub async fn tick(&self, now: Instant) {
        self.ask(|done| Command::Tick { now, done }).await;
    }

    /// Drains up to `n` ready workers, least busy first; returns how many.
    pub async fn drain(&self, n: usize) -> usize {
        self.ask(|done| Command::Drain { n, done })
            .await
            .unwrap_or(0)
    }

    /// The pool as `/admin/pools` shows it.
    pub async fn view(&self) -> Option<PoolView> {
        self.ask(|reply| Command::View { reply }).await
    }

    /// The pool's workers that can answer (ready or draining).
    pub async fn workers(&self) -> Vec<Arc<WorkerHandle>> {
        self.ask(|reply| Command::Workers { reply })
            .await
            .unwrap_or_default()
    }

    /// Requests being served by this pool's workers.
    pub async fn in_flight(&self) -> usize {
        self.view().await.map_or(0, |v| v.in_flight)
    }

    /// Where the pool's workers serve (tests).
    pub async fn worker_endpoints(&self) -> Vec<String> {
        self.view()
            .await
            .map(|v| v.workers.into_iter().map(|w| w.endpoint).collect())
            .unwrap_or_default()
    }

    /// Takes a ready worker this pool did not start into service.
    pub fn adopt(&self, worker: WorkerHandle) {
        let _ = self.tx.send(Command::Adopt(Arc::new(worker)));
    }

    fn close(&self) {
        let _ = self.tx.send(Command::Close);
    }

    async fn stop_all(&self, grace: Duration) {
        self.ask(|done| Command::StopAll { grace, done }).await;
    }
}

/// Every model's pool.
pub struct Pools {
    pools: HashMap<String, Arc<Pool>>,
    pub env: PoolEnv,
}

impl Pools {
    pub fn new(
        cfg: &GatewayConfig,
        registry: &Registry,
        provisioner: Arc<dyn Provisioner>,
        metrics: Arc<GatewayMetrics>,
        runtime: tokio::runtime::Handle,
        ledger: Option<Arc<Ledger>>,
    ) -> Arc<Pools> {
        let gpus = gpus::discover();
        let env = PoolEnv {
            recent: Recent::sampling(&metrics, &runtime),
            provisioner,
            metrics,
            budget: Arc::new(Budget::new(
                cfg.cpu_budget,
                cfg.cpu_memory_budget,
                &gpus,
                cfg.gpu_memory_fraction,
            )),
            kick: Arc::new(Notify::new()),
            runtime,
            ledger,
        };
        let mut placer = Placer::new(gpus);
        let placed: Vec<(&ModelEntry, PoolConfig)> = registry
            .entries()
            .iter()
            .map(|e| {
                let mut pc = cfg.pool(&e.name, &e.aliases);
                if pc.device == "auto" {
                    pc.device = placer.place(e);
                }
                (e, pc)
            })
            .collect();
        let cpu_pools: Vec<(&PoolConfig, u64)> = placed
            .iter()
            .filter(|(_, pc)| pc.device == "cpu")
            .map(|(e, pc)| (pc, e.size))
            .collect();
        let mut shares = cpu_shares(cfg.cpu_budget, &cpu_pools).into_iter();
        let pools = placed
            .into_iter()
            .map(|(e, mut pc)| {
                if pc.device == "cpu" {
                    pc.default_worker_cores(shares.next().expect("a share per CPU pool"));
                }
                let cost = worker_cost(&pc.device, &pc, Some(e));
                tracing::info!(model = %e.name, device = %pc.device, cores = cost.cores, memory = cost.memory, "pool");
                let pool = Pool::new(&e.name, pc, cost, e.size, env.clone());
                (e.name.clone(), pool)
            })
            .collect();
        let pools = Arc::new(Pools { pools, env });
        let recovering = pools.clone();
        pools.env.runtime.spawn(async move {
            for (model, worker) in recovering.env.provisioner.recover().await {
                match recovering.get(&model) {
                    Some(p) => p.adopt(worker),
                    None => tracing::warn!(%model, endpoint = %worker.endpoint, "recovered a worker of an unknown model"),
                }
            }
        });
        pools
    }

    /// Pools built by hand (tests).
    #[cfg(test)]
    pub(crate) fn from_pools(pools: Vec<Arc<Pool>>, env: PoolEnv) -> Pools {
        let pools = pools.into_iter().map(|p| (p.model.clone(), p)).collect();
        Pools { pools, env }
    }

    pub fn get(&self, model: &str) -> Option<Arc<Pool>> {
        self.pools.get(model).cloned()
    }

    pub fn all(&self) -> impl Iterator<Item = &Arc<Pool>> {
        self.pools.values()
    }

    /// One autoscaler pass over every pool, then room for pools the budget refused.
    pub async fn autoscale(&self, now: Instant) {
        for p in self.all() {
            p.tick(now).await;
        }
        self.make_room().await;
    }

    /// For each pool refused a start: evict idle workers of other models on the same
    /// device, least recently used first, until the dimension the start is short of
    /// (cores, memory, or both) has room ([`pick_victims`]), then let the pool try
    /// again. Workers idle for less than their pool's `evict_idle_after` are not
    /// candidates, so busy models sharing a full budget do not evict each other in
    /// every gap between requests.
    pub async fn make_room(&self) {
        for p in self.all() {
            if !p.view().await.is_some_and(|v| v.waiting_for_room) {
                continue;
            }
            let short = self.env.budget.shortfall(&p.device, p.cost);
            if short.is_zero() {
                // Room appeared (a worker left, or was measured smaller than charged).
                let _ = p.tx.send(Command::RetryStart);
                continue;
            }
            let mut victims: Vec<(Instant, u64, Cost, &Arc<Pool>)> = Vec::new();
            for o in self.all() {
                if o.model == p.model || !same_device(&o.device, &p.device) {
                    continue;
                }
                let idle = o.ask(|reply| Command::Evictable { reply }).await;
                victims.extend(
                    idle.unwrap_or_default()
                        .into_iter()
                        .map(|(t, id, c)| (t, id, c, o)),
                );
            }
            victims.sort_by_key(|&(t, id, _, _)| (t, id));
            let costs: Vec<Cost> = victims.iter().map(|v| v.2).collect();
            let empties = self.env.budget.workers(&p.device) == victims.len();
            let mut evicted_any = false;
            for i in pick_victims(short, &costs, empties) {
                let (_, id, _, o) = victims[i];
                let for_model = p.model.clone();
                let evicted = o.ask(|reply| Command::Evict {
                    worker: id,
                    for_model,
                    reply,
                });
                evicted_any |= evicted.await == Some(true);
            }
            // Nothing (enough) to evict: the pool waits (its requests queue) until a
            // tick finds room; retrying now would only ring again.
            if evicted_any {
                let _ = p.tx.send(Command::RetryStart);
            }
        }
    }

    /// Stops admitting, waits (at most `grace`) for in-flight requests, stops workers.
    pub async fn shutdown(&self, grace: Duration) {
        for p in self.all() {
            p.close();
        }
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            let mut busy = 0;
            for p in self.all() {
                busy += p.in_flight().await;
            }
            if busy == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        for p in self.all() {
            p.stop_all(Duration::from_secs(5)).await;
        }
    }

    /// `GET /admin/pools`.
    pub async fn view(&self) -> PoolsView {
        let mut pools = Vec::new();
        for p in self.all() {
            pools.extend(p.view().await);
        }
        pools.sort_by(|a, b| a.model.cmp(&b.model));
        PoolsView {
            pools,
            budget: self.env.budget.json(),
        }
    }
}

fn same_device(a: &str, b: &str) -> bool {
    let norm = |d: &str| if d == "cuda" { "cuda:0" } else { d }.to_string();
    norm(a) == norm(b)
}

/// Runs [`Pools::autoscale`] every `interval`, and [`Pools::make_room`] whenever a pool
/// rings (a start the budget refused), until shutdown: the pingora background service
/// that drives every pool's autoscaler.
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
                _ = tick.tick() => self.pools.autoscale(Instant::now()).await,
                _ = kick.notified() => self.pools.make_room().await,
                _ = shutdown.changed() => return,
            }
        }
    }
}
