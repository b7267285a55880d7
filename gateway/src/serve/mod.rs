//! `surge serve`: the pingora edge gateway. Follow one request: [`proxy`] (the pingora
//! phases) → [`auth`] → [`routing`] (reads the body, picks the pool) → [`pool`] (a slot
//! on a worker, or a wait in the admission queue) → the worker → [`response`] (the
//! body on its way back).
//!
//! - [`config`]: TOML config, env and flags → [`config::GatewayConfig`]
//! - [`registry`]: the models the cache holds, by name and alias (`/v1/models`)
//! - [`auth`]: API keys, per-key request-rate and concurrency limits
//! - [`routing`]: route and model of an inference request (reads the whole body)
//! - [`subrequest`]: bodies over pingora's retry buffer, forwarded with a preset body
//! - [`pool`]: per-model worker pools as actors: leases, the admission queue, worker
//!   lifecycle, applying the autoscaler's decisions, `/admin/pools`
//! - [`autoscale`]: the scaling decision (stable/panic windows, idle), pure logic
//! - [`budget`]: devices for `device = "auto"`, the machine's CPU/GPU budget
//! - [`sizing`]: cores by model size, workers' memory (estimated, then measured)
//! - [`provision`]: starting and stopping worker processes ([`provision::Provisioner`])
//! - [`gpus`]: CUDA devices, found through the driver at run time
//! - [`stream_wait`]: SSE heartbeats for streams waiting on a worker
//! - [`response`]: SSE pass-through, usage, time to first token
//! - [`reply`], [`local`]: responses the gateway writes itself, and its own endpoints
//! - [`status`]: the live status page (`/status`, `/status.json`)
//! - [`metrics`]: the gateway's Prometheus registry
//! - [`proxy`]: the pingora `ProxyHttp` phases that tie them together
//! - [`server`]: bootstrapping (cache, pools, pingora server) and draining on signals

pub mod auth;
pub mod autoscale;
pub mod bill;
pub mod budget;
pub mod config;
pub mod gpus;
pub mod local;
pub mod metrics;
pub mod pool;
pub mod provision;
pub mod proxy;
pub mod registry;
pub mod reply;
pub mod response;
pub mod routing;
pub mod server;
pub mod sizing;
pub mod spend;
pub mod status;
pub mod stream_wait;
pub mod subrequest;
pub mod trace;
pub mod worker_metrics;

pub use config::GatewayConfig;
pub use server::run;
