//! surge's gateway crate: the `surge` command-line entry points and the pingora edge
//! gateway (`surge serve`): routing, worker pools, provisioning, metrics.

pub mod commands;
pub mod metering;
pub mod serve;
pub mod telemetry;
