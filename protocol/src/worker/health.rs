//! A worker's `GET /health`: the body it answers ([`Health`], with the cold start's
//! breakdown in [`Startup`]) and the client the gateway polls it with ([`get`]).
//!
//! Status codes: 200 once ready; 503 while loading or draining; 500 when the engine
//! failed. The body (JSON; keys in this order, which is the order `serde_json` writes a
//! map in, so the bytes are what the worker wrote before these types existed):
//!
//! ```json
//! {"error": null, "kind": "llm", "load_seconds": 0.16, "model": "smollm2-135m-instruct",
//!  "startup": {"exec_s": 0.003, "exec_source": "env", "init_s": 0.001,
//!              "listening_s": 0.004, "resolve_s": 0.001, "tokenizer_s": 0.03,
//!              "total_s": 0.17, "warmup_s": 0.01, "weights_s": 0.12},
//!  "status": "ok", "threads": 2, "uptime_seconds": 12.5}
//! ```
//!
//! - `status`: `loading`, `ok`, `draining` or `failed`; `error` the failure, else null.
//! - `load_seconds`: engine thread start → ready (null until ready).
//! - `startup` (null until ready): one cold start, in seconds, along its critical path.
//!   `exec_s` spawn → `main` (null when the parent set no [`super::SPAWNED_AT_ENV`] and
//!   `/proc` gave nothing; `exec_source` is `env`, `proc` — 10 ms resolution — or
//!   `none`), `init_s` `main` → model lookup, `resolve_s` cache and manifest, `weights_s`
//!   weights read and converted, `tokenizer_s` tokenizer and chat template (LLM) or mel
//!   filters and rules (Whisper), `warmup_s` one small forward before readiness. Every
//!   phase is ≥ 0 and their sum ≤ `total_s` (spawn → ready; from `main` when `exec_s` is
//!   null). `listening_s` is spawn → socket bound, which happens beside the load, so it
//!   is not a phase.
//! - `threads`: the worker's compute threads (`--threads`, else every core); absent
//!   from workers older than the field.

use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

/// Where the worker is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Loading,
    Ok,
    Draining,
    Failed,
}

/// The `/health` body. Fields are in alphabetical order (see the module docs).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Health {
    /// Why the engine failed (`status` is `failed`), else null.
    #[serde(default)]
    pub error: Option<String>,
    /// `llm` or `whisper`.
    pub kind: String,
    /// Engine thread start → ready; null until ready.
    #[serde(default)]
    pub load_seconds: Option<f64>,
    /// The model's own name (not an alias).
    pub model: String,
    /// The cold start's breakdown; null until ready.
    #[serde(default)]
    pub startup: Option<Startup>,
    pub status: Status,
    /// Compute threads (`--threads`, else every core).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threads: Option<usize>,
    pub uptime_seconds: f64,
}

/// Where one cold start's time went, in seconds; the `startup` object of `/health`.
/// `exec_s + init_s + resolve_s + weights_s + tokenizer_s + warmup_s <= total_s`.
/// Fields are in alphabetical order (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Startup {
    /// spawn → `main`; null when the spawn time is unknown.
    pub exec_s: Option<f64>,
    /// `env`, `proc` or `none`: where the spawn time came from.
    pub exec_source: ExecSource,
    /// `main` → model lookup (logging, arguments, async runtime).
    pub init_s: f64,
    /// spawn → listening socket bound (in parallel with the load, not a phase).
    pub listening_s: Option<f64>,
    /// Cache open and manifest read.
    pub resolve_s: f64,
    /// Tokenizer and chat template / mel filters and rules.
    pub tokenizer_s: f64,
    /// spawn (or `main` when `exec_s` is null) → ready.
    pub total_s: f64,
    /// Warm-up before readiness.
    pub warmup_s: f64,
    /// Weights read and converted to the in-memory format.
    pub weights_s: f64,
}

impl Startup {
    /// The critical-path phases, in order; `{phase}_s` is the key of each.
    pub const PHASES: [&'static str; 6] =
        ["exec", "init", "resolve", "weights", "tokenizer", "warmup"];

    /// `(phase, seconds)` in [`Startup::PHASES`] order; `exec` is 0 when unknown.
    pub fn phases(&self) -> [(&'static str, f64); 6] {
        [
            ("exec", self.exec_s.unwrap_or(0.0)),
            ("init", self.init_s),
            ("resolve", self.resolve_s),
            ("weights", self.weights_s),
            ("tokenizer", self.tokenizer_s),
            ("warmup", self.warmup_s),
        ]
    }
}

/// Where the spawn time came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExecSource {
    /// The parent's [`super::SPAWNED_AT_ENV`]: exact.
    Env,
    /// `/proc/self/stat`'s start time: clock ticks (10 ms) since boot.
    Proc,
    /// Neither: the clock starts at `main`, `exec_s` is null.
    None,
}

/// One answer to `GET /health`.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    /// The HTTP status code.
    pub code: u16,
    /// The body, `None` when it is not a [`Health`] (not JSON, or another shape).
    pub health: Option<Health>,
}

/// `GET /health` over a worker's Unix socket, giving up after `timeout`; `None` when the
/// worker is unreachable (no socket yet, refused, cut off, too slow).
pub async fn get(socket: &Path, timeout: Duration) -> Option<Reply> {
    tokio::time::timeout(timeout, get_inner(socket))
        .await
        .ok()
        .flatten()
}

async fn get_inner(socket: &Path) -> Option<Reply> {
    let mut s = UnixStream::connect(socket).await.ok()?;
    s.write_all(b"GET /health HTTP/1.1\r\nHost: worker\r\nConnection: close\r\n\r\n")
        .await
        .ok()?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.ok()?;
    parse_response(&buf)
}

/// An HTTP/1.1 response with a `Content-Length` (or read-to-close) body.
fn parse_response(buf: &[u8]) -> Option<Reply> {
    let text = std::str::from_utf8(buf).ok()?;
    let code = text.split_whitespace().nth(1)?.parse().ok()?;
    let health = text
        .split_once("\r\n\r\n")
        .and_then(|(_, body)| serde_json::from_str(body).ok());
    Some(Reply { code, health })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Health {
        Health {
            error: None,
            kind: "llm".into(),
            load_seconds: Some(0.16),
            model: "smollm2-135m-instruct".into(),
            startup: Some(Startup {
                exec_s: Some(0.003),
                exec_source: ExecSource::Env,
                init_s: 0.001,
                listening_s: Some(0.004),
                resolve_s: 0.001,
                tokenizer_s: 0.03,
                total_s: 0.17,
                warmup_s: 0.01,
                weights_s: 0.12,
            }),
            status: Status::Ok,
            threads: Some(2),
            uptime_seconds: 12.5,
        }
    }

    /// The struct writes the same bytes as a `serde_json` map of the same keys (what
    /// the worker wrote with `json!` before).
    #[test]
    fn field_order_matches_a_json_map() {
        let h = sample();
        let direct = serde_json::to_string(&h).unwrap();
        let via_map = serde_json::to_string(&serde_json::to_value(&h).unwrap()).unwrap();
        assert_eq!(direct, via_map);
    }

    #[test]
    fn older_and_loading_bodies_parse() {
        let loading = r#"{"error":null,"kind":"whisper","load_seconds":null,
            "model":"whisper-tiny.en","startup":null,"status":"loading","uptime_seconds":0.1}"#;
        let h: Health = serde_json::from_str(loading).unwrap();
        assert_eq!(h.status, Status::Loading);
        assert_eq!((h.startup, h.threads), (None, None));
        let failed = r#"{"status":"failed","model":"m","kind":"llm","uptime_seconds":1,
            "error":"boom","extra":1}"#;
        let h: Health = serde_json::from_str(failed).unwrap();
        assert_eq!(h.error.as_deref(), Some("boom"));
        let s = sample().startup.unwrap();
        let sum: f64 = s.phases().iter().map(|(_, v)| v).sum();
        assert!((sum - 0.165).abs() < 1e-9);
        assert_eq!(s.phases().map(|(p, _)| p), Startup::PHASES);
    }

    #[test]
    fn responses_parse() {
        let body = serde_json::to_string(&sample()).unwrap();
        let raw = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        );
        let r = parse_response(raw.as_bytes()).unwrap();
        assert_eq!(r.code, 200);
        assert_eq!(r.health, Some(sample()));
        let r = parse_response(b"HTTP/1.1 503 Service Unavailable\r\n\r\nnope").unwrap();
        assert_eq!((r.code, r.health), (503, None));
        assert!(parse_response(b"garbage").is_none());
    }

    #[tokio::test]
    async fn get_reads_a_unix_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.sock");
        assert!(get(&path, Duration::from_millis(100)).await.is_none());
        let listener = tokio::net::UnixListener::bind(&path).unwrap();
        let body = serde_json::to_string(&sample()).unwrap();
        let server = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut req = [0u8; 1024];
            let n = s.read(&mut req).await.unwrap();
            assert!(req[..n].starts_with(b"GET /health HTTP/1.1\r\n"));
            let resp = format!(
                "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}",
                body.len()
            );
            s.write_all(resp.as_bytes()).await.unwrap();
        });
        let r = get(&path, Duration::from_secs(5)).await.unwrap();
        assert_eq!(r.code, 200);
        assert_eq!(r.health.unwrap().threads, Some(2));
        server.await.unwrap();
    }
}
