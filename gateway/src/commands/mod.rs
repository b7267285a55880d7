//! One module per `surge` subcommand; each exposes its clap arguments and a `run`.

use std::path::PathBuf;

use surge_models::ModelCache;

use crate::metering::keys::ledger_path;

pub mod keys;
pub mod models;
pub mod serve;
pub mod usage;
pub mod worker;

/// Where the ledger is, for the commands that read or write it (`keys`, `usage`): the
/// same places `surge serve` looks.
#[derive(clap::Args, Debug)]
pub struct LedgerArgs {
    /// Data directory holding the ledger (default: data/ in the model cache's root).
    #[arg(long, env = "SURGE_DATA_DIR", value_name = "DIR", global = true)]
    data_dir: Option<PathBuf>,
    /// Model cache whose root holds the default data directory.
    #[arg(long, env = "SURGE_HOME", value_name = "DIR", global = true)]
    home: Option<PathBuf>,
}

impl LedgerArgs {
    /// The ledger database file.
    pub fn path(&self) -> PathBuf {
        let root = self.home.clone().unwrap_or_else(ModelCache::default_root);
        ledger_path(self.data_dir.as_deref(), &root)
    }
}
