//! What the ledger keeps: one [`UsageRecord`] per request, whatever its end, and one
//! [`WorkerSpan`] per phase of a worker's life (the capacity that reserved pricing pays
//! for).

use serde::{Deserialize, Serialize};

/// One request's use, as billed. Written once per request id: a second record with the
/// same id is ignored, so a retried write can never bill twice.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UsageRecord {
    pub request_id: String,
    /// When the request arrived, in milliseconds since the Unix epoch.
    pub time_ms: i64,
    pub tenant: String,
    pub key_id: Option<String>,
    pub model: String,
    /// Where it ran: `cpu`, `cuda:N` (`-` when it never reached a worker).
    pub device: String,
    /// `chat_completions`, `completions`, `audio_transcriptions`, `audio_translations`.
    pub route: String,
    /// The status the client got (0: it went away before any).
    pub status: u16,
    /// `stop`, `length`, `tool_calls`, `cancelled` (client hung up), `error`, `rejected`.
    pub finish_reason: Option<String>,
    /// Tokens as the client received them.
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub audio_seconds: f64,
    /// Waiting for a worker slot, cold start included.
    pub queue_seconds: f64,
    /// The part of `queue_seconds` spent waiting for a worker to start.
    pub cold_start_seconds: f64,
    /// The worker's fair share of every batch step the request took part in.
    pub execution_seconds: f64,
    pub cost_usd: f64,
    /// The price list in force when the request was billed.
    pub price_version: String,
}

/// A phase of a worker's life, for the capacity ledger.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WorkerPhase {
    /// Spawned, not ready yet.
    Starting,
    /// Serving at least one request.
    Busy,
    /// Ready with nothing to do.
    Idle,
    /// Finishing its last requests before it stops.
    Draining,
}

impl WorkerPhase {
    pub fn label(self) -> &'static str {
        match self {
            WorkerPhase::Starting => "starting",
            WorkerPhase::Busy => "busy",
            WorkerPhase::Idle => "idle",
            WorkerPhase::Draining => "draining",
        }
    }
}

/// `seconds` a worker spent in `phase`, ending at `end_ms`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkerSpan {
    /// Unique per gateway run and worker (`{run}-{worker id}`).
    pub worker: String,
    pub model: String,
    pub device: String,
    pub phase: WorkerPhase,
    pub start_ms: i64,
    pub end_ms: i64,
}

impl WorkerSpan {
    pub fn seconds(&self) -> f64 {
        (self.end_ms - self.start_ms).max(0) as f64 / 1000.0
    }
}

#[cfg(test)]
impl UsageRecord {
    /// A finished chat of `tenant`, for tests.
    pub fn example(request_id: &str, tenant: &str, time_ms: i64) -> UsageRecord {
        UsageRecord {
            request_id: request_id.into(),
            time_ms,
            tenant: tenant.into(),
            key_id: Some("k1".into()),
            model: "smollm2-135m-instruct".into(),
            device: "cpu".into(),
            route: "chat_completions".into(),
            status: 200,
            finish_reason: Some("stop".into()),
            prompt_tokens: 12,
            completion_tokens: 20,
            audio_seconds: 0.0,
            queue_seconds: 0.01,
            cold_start_seconds: 0.0,
            execution_seconds: 0.05,
            cost_usd: 0.000_01,
            price_version: "v1".into(),
        }
    }
}
