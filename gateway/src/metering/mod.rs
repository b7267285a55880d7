//! Pay-per-execution metering (issue 14, in progress): the durable usage ledger.
//!
//! - [`record`]: what is kept — one [`UsageRecord`] per request, [`WorkerSpan`]s of the
//!   capacity ledger
//! - [`ledger`]: SQLite in WAL mode, one writer thread committing in batches, schema
//!   migrations, the bounded loss window on `kill -9`
//!
//! Not wired into `surge serve` yet: nothing records requests today.

pub mod ledger;
pub mod record;

pub use ledger::{Ledger, LedgerError, LedgerOptions};
pub use record::{UsageRecord, WorkerPhase, WorkerSpan};
