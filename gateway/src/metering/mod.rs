//! Pay-per-execution metering: what every request used, kept durably, priced, and read
//! back. The request side (a request's bill, budgets) lives in `serve::bill` and
//! `serve::spend`; this module owns the data.
//!
//! - [`record`]: what is kept — one [`UsageRecord`] per request, [`WorkerSpan`]s of the
//!   capacity ledger
//! - [`ledger`]: SQLite in WAL mode, one writer thread committing in batches, schema
//!   migrations, the bounded loss window on `kill -9`
//! - [`prices`]: the price list (`[billing]`), what is billed, worst cases for budgets
//! - [`keys`]: API keys in the ledger database (`surge keys`), stored hashed
//! - [`query`]: `GET /v1/usage` (per tenant, grouped by model, day or key)
//! - [`report`]: `surge usage report`, pay-per-execution vs reserved capacity
//! - [`export`]: every record as a CloudEvent, to a file or an HTTP endpoint
//! - [`dates`]: the date and duration forms the query and the CLI accept

pub mod dates;
pub mod export;
pub mod keys;
pub mod ledger;
pub mod prices;
pub mod query;
pub mod record;
pub mod report;

pub use ledger::{Ledger, LedgerError, LedgerOptions};
pub use record::{UsageRecord, WorkerPhase, WorkerSpan};
