//! `surge serve`: the pingora edge gateway.
//!
//! - [`autoscale`]: the per-pool scaling decision (stable/panic windows, idle), pure logic
//! - [`auth`]: API keys, per-key request-rate and concurrency limits
//! - [`config`]: TOML config, env and flags → [`config::GatewayConfig`]
//! - [`registry`]: the models the cache holds, by name and alias (`/v1/models`)
//! - [`errors`]: one error enum → HTTP status + OpenAI error body
//! - [`metrics`]: the gateway's Prometheus registry
//! - [`gpus`]: CUDA devices, found through the driver at run time (none → CPU workers)
//! - [`provision`]: starting and stopping worker processes ([`provision::Provisioner`])
//! - [`pool`]: per-model worker pools, the cold-start admission queue, least-loaded leases
//! - [`scaling`]: the autoscaler service applying [`autoscale`] decisions, `/admin/pools`
//! - [`budget`]: devices for `device = "auto"`, the machine's CPU/GPU budget
//! - [`body`], [`sse`]: reading `model` from request bodies; SSE events and usage chunks
//! - [`routing`]: route and model of an inference request (reads the whole body)
//! - [`subrequest`]: bodies over pingora's retry buffer, forwarded with a preset body
//! - [`stream_wait`]: SSE heartbeats for streams waiting on a worker
//! - [`proxy`]: the pingora `ProxyHttp` phases that tie them together
//! - [`local`]: the endpoints the gateway answers itself (health, metrics, models, admin)
//! - [`server`]: bootstrapping (cache, pools, pingora server) and draining on signals

pub mod auth;
pub mod autoscale;
pub mod body;
pub mod budget;
pub mod config;
pub mod errors;
pub mod gpus;
pub mod local;
pub mod metrics;
pub mod pool;
pub mod provision;
pub mod proxy;
pub mod registry;
pub mod routing;
pub mod scaling;
pub mod server;
pub mod sse;
pub mod stream_wait;
pub mod subrequest;

pub use config::GatewayConfig;
pub use server::run;
