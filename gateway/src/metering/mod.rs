//! Pay-per-execution metering (issue 14, in progress): the durable usage ledger.
//!
//! - [`record`]: what is kept — one [`UsageRecord`] per request, [`WorkerSpan`]s of the
//!   capacity ledger
//! - [`ledger`]: SQLite in WAL mode, one writer thread committing in batches, schema
//!   migrations, the bounded loss window on `kill -9`
//! - [`keys`]: API keys in the ledger database (`surge keys`), stored hashed
//!
//! Usage is not recorded by `surge serve` yet; its keys are checked (see
//! `serve::auth`).

pub mod keys;
pub mod ledger;
pub mod record;

pub use ledger::{Ledger, LedgerError, LedgerOptions};
pub use record::{UsageRecord, WorkerPhase, WorkerSpan};
