//! Helpers shared by the integration tests.
#![allow(dead_code)]

pub mod fake_sources;
pub mod gateway;
pub mod http;
pub mod procfs;
pub mod prometheus;
pub mod speech;
pub mod worker;
