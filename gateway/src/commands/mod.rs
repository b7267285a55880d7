//! One module per `surge` subcommand; each exposes its clap arguments and a `run`.

pub mod keys;
pub mod models;
pub mod serve;
pub mod usage;
pub mod worker;
