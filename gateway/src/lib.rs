//! surge's gateway crate: the `surge` command-line entry points, and (as later issues land)
//! the pingora edge proxy, autoscaler, provisioners and metering.

pub mod commands;
