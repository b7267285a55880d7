//! Every usage record as a CloudEvents 1.0 JSON event (OpenMeter's ingest shape), to a
//! JSON-lines file or an HTTP endpoint (`[usage_export]`).
//!
//! ```toml
//! [usage_export]
//! url = "https://openmeter.example/api/v1/events"   # or: file = "/var/lib/surge/usage.jsonl"
//! source = "surge-eu1"                              # `source` of every event (default "surge")
//! interval = 1                                      # seconds between looks (default 1)
//! ```
//!
//! The [`Exporter`] is one thread with its own connection to the ledger: it never touches
//! the request path, so a slow or dead sink can only delay billing, never requests. It
//! reads committed rows of `usage` in rowid order after a cursor kept in the ledger itself
//! (`export_cursors`, one row per sink: `file:<path>` or the URL), delivers them (a file:
//! appended lines, then fsync; a URL: one `application/cloudevents-batch+json` POST), and
//! advances the cursor only after the delivery succeeded. A failed delivery is retried with
//! exponential backoff (up to 30 s) for as long as it takes: these are bills, never dropped.
//!
//! Delivery is therefore at-least-once: a crash between a delivery and its cursor update
//! sends that batch again after the restart. Every event's `id` is the request id, and
//! OpenMeter deduplicates by `id` + `source`, so the repeat bills nothing; a file consumer
//! must likewise deduplicate by `id` (and skip the torn last line a crash mid-append can
//! leave: the next append starts on a new line). [`Exporter::stop`] delivers what is left
//! for at most a few seconds (plus a POST already under way, at most 5 s); the rest goes
//! after the restart. Rowids only grow while no row is deleted from the top of `usage`
//! (the ledger only inserts), so the cursor never skips a record.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use chrono::{DateTime, SecondsFormat, Utc};
use rusqlite::{params, Connection, OptionalExtension};
use serde::Deserialize;
use serde_json::json;

use super::record::UsageRecord;

/// The `[usage_export]` table: exactly one of `file` and `url`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportConfig {
    /// Append events to this JSON-lines file.
    #[serde(default)]
    pub file: Option<PathBuf>,
    /// POST events (`application/cloudevents-batch+json`) to this URL.
    #[serde(default)]
    pub url: Option<String>,
    /// `source` of every event (default `surge`).
    #[serde(default = "default_source")]
    pub source: String,
    /// How often the exporter looks for new records (seconds in TOML; default 1).
    #[serde(default = "default_interval", with = "crate::serve::config::secs")]
    pub interval: Duration,
}

fn default_source() -> String {
    "surge".into()
}

fn default_interval() -> Duration {
    Duration::from_secs(1)
}

impl ExportConfig {
    pub fn validate(&self) -> Result<(), String> {
        match (&self.file, &self.url) {
            (Some(_), None) | (None, Some(_)) => Ok(()),
            _ => Err("[usage_export]: set exactly one of file and url".into()),
        }
    }
}

/// Rows per delivery: one POST stays well under common body limits (~0.5 KB an event).
const BATCH: usize = 500;
/// The longest wait between two tries of a failing sink.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// A single POST's limit: also what a stop may wait for a POST already under way.
const HTTP_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the last pass of [`Exporter::stop`] may deliver: a dead sink must not hang
/// shutdown (what it leaves is exported after the restart).
const FINAL_PASS: Duration = Duration::from_secs(3);
/// An `interval = 0` would spin a core.
const MIN_INTERVAL: Duration = Duration::from_millis(10);

/// Counters for the gateway's metrics (shared with the exporter's thread).
#[derive(Default)]
pub struct Counters {
    pub exported: AtomicU64,
    pub failures: AtomicU64,
}

/// The running exporter; [`Exporter::stop`] (or dropping it) delivers what it can within a
/// few seconds and joins the thread.
pub struct Exporter {
    counters: Arc<Counters>,
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Exporter {
    /// Opens the ledger at `ledger_path` (a connection of its own), reads the sink's cursor
    /// and starts the `surge-export` thread. Errors (bad config, unreadable ledger) come
    /// back here, before the gateway serves anything.
    pub fn start(ledger_path: &Path, cfg: ExportConfig) -> Result<Exporter, String> {
        cfg.validate()?;
        let conn = super::ledger::open(ledger_path).map_err(|e| e.to_string())?;
        let sink = match (&cfg.file, &cfg.url) {
            (Some(path), _) => Sink::File(path.clone()),
            (_, Some(url)) => Sink::Http {
                url: url.clone(),
                agent: ureq::AgentBuilder::new()
                    .timeout_connect(Duration::from_secs(5))
                    .timeout(HTTP_TIMEOUT)
                    .build(),
            },
            _ => unreachable!("validated"),
        };
        let name = sink.name();
        let cursor: i64 = conn
            .query_row(
                "SELECT last_rowid FROM export_cursors WHERE sink = ?1",
                [&name],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| format!("usage export {name}: {e}"))?
            .unwrap_or(0);
        let counters = Arc::new(Counters::default());
        let mut worker = Worker {
            conn,
            sink,
            name,
            source: cfg.source,
            cursor,
            persisted: cursor,
            counters: counters.clone(),
        };
        let interval = cfg.interval.max(MIN_INTERVAL);
        let (stop, stopped) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("surge-export".into())
            .spawn(move || worker.run(interval, stopped))
            .map_err(|e| format!("usage export: {e}"))?;
        Ok(Exporter {
            counters,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// Events delivered (and their cursor advanced) since this exporter started.
    /// The live counters, for `/metrics`.
    pub fn counters(&self) -> Arc<Counters> {
        self.counters.clone()
    }

    pub fn exported(&self) -> u64 {
        self.counters.exported.load(Ordering::Relaxed)
    }

    /// Failed passes (delivery, or reading or updating the ledger) since it started.
    pub fn failures(&self) -> u64 {
        self.counters.failures.load(Ordering::Relaxed)
    }

    /// Delivers what is committed, for at most a few seconds, and ends the thread.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        // Closing the channel wakes the thread at once, even in a backoff.
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Exporter {
    fn drop(&mut self) {
        self.shutdown();
    }
}

enum Sink {
    File(PathBuf),
    Http { url: String, agent: ureq::Agent },
}

impl Sink {
    /// The cursor's key in `export_cursors`.
    fn name(&self) -> String {
        match self {
            Sink::File(p) => format!("file:{}", p.display()),
            Sink::Http { url, .. } => url.clone(),
        }
    }

    /// Delivers `events` as a whole or reports why not; `Err((severe, why))`, severe when
    /// retrying cannot help without someone fixing something (a 4xx).
    fn deliver(
        &self,
        events: &[serde_json::Value],
        timeout: Duration,
    ) -> Result<(), (bool, String)> {
        match self {
            Sink::File(path) => {
                let mut body = Vec::new();
                for e in events {
                    serde_json::to_writer(&mut body, e).map_err(|e| (false, e.to_string()))?;
                    body.push(b'\n');
                }
                let io = |e: std::io::Error| (false, e.to_string());
                let mut f = OpenOptions::new()
                    .create(true)
                    .read(true)
                    .append(true)
                    .open(path)
                    .map_err(io)?;
                let before = f.metadata().map_err(io)?.len();
                let mut last = [b'\n'];
                if before > 0 {
                    f.read_exact_at(&mut last, before - 1).map_err(io)?;
                }
                if last[0] != b'\n' {
                    // A line torn by a crash: keep the new events parseable lines.
                    body.insert(0, b'\n');
                }
                if let Err(e) = f.write_all(&body).and_then(|_| f.sync_data()) {
                    // A torn batch would be appended again whole on the retry: cut it off.
                    let _ = f.set_len(before);
                    return Err(io(e));
                }
                Ok(())
            }
            Sink::Http { url, agent } => {
                let body = serde_json::to_string(events).map_err(|e| (false, e.to_string()))?;
                match agent
                    .post(url)
                    .set("Content-Type", "application/cloudevents-batch+json")
                    .timeout(timeout)
                    .send_string(&body)
                {
                    Ok(_) => Ok(()),
                    Err(ureq::Error::Status(code, resp)) => {
                        let mut text = resp.into_string().unwrap_or_default();
                        text.truncate(200);
                        let severe = (400..500).contains(&code) && !matches!(code, 408 | 429);
                        Err((severe, format!("HTTP {code}: {text}")))
                    }
                    Err(e) => Err((false, e.to_string())),
                }
            }
        }
    }
}

/// The thread's state.
struct Worker {
    conn: Connection,
    sink: Sink,
    name: String,
    source: String,
    /// The last rowid delivered.
    cursor: i64,
    /// The last rowid written to `export_cursors` (behind `cursor` only after a failed write).
    persisted: i64,
    counters: Arc<Counters>,
}

impl Worker {
    fn run(&mut self, interval: Duration, stopped: mpsc::Receiver<()>) {
        let mut wait = Duration::ZERO;
        let mut failed: u32 = 0;
        while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(wait) {
            match self.pass(HTTP_TIMEOUT) {
                // A full batch: there may be more waiting, go on at once.
                Ok(n) if n == BATCH => (failed, wait) = (0, Duration::ZERO),
                Ok(_) => (failed, wait) = (0, interval),
                Err(()) => {
                    failed += 1;
                    wait = interval
                        .saturating_mul(1 << (failed - 1).min(16))
                        .min(MAX_BACKOFF);
                }
            }
        }
        let deadline = Instant::now() + FINAL_PASS;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.pass(left) {
                Ok(n) if n == BATCH => {}
                _ => break,
            }
        }
    }

    /// Delivers the next batch after the cursor: the number of records delivered.
    fn pass(&mut self, timeout: Duration) -> Result<usize, ()> {
        self.persist()?;
        let rows = rows_after(&self.conn, self.cursor, BATCH).map_err(|e| self.failed(&e))?;
        let Some(&(last, _)) = rows.last() else {
            return Ok(0);
        };
        let events: Vec<_> = rows
            .iter()
            .map(|(_, r)| cloud_event(r, &self.source))
            .collect();
        if let Err((severe, e)) = self.sink.deliver(&events, timeout) {
            if severe {
                // Still retried: dropping would lose bills; the endpoint needs a fix.
                tracing::error!(sink = %self.name, error = %e, "usage export rejected; retrying");
                self.counters.failures.fetch_add(1, Ordering::Relaxed);
            } else {
                self.failed(&e);
            }
            return Err(());
        }
        self.cursor = last;
        self.counters
            .exported
            .fetch_add(events.len() as u64, Ordering::Relaxed);
        // Delivered either way: a cursor that could not be saved is saved at the next pass
        // (a crash before that re-delivers this batch, which the ids make harmless).
        let _ = self.persist();
        Ok(events.len())
    }

    /// Saves the cursor if it moved since it was last saved.
    fn persist(&mut self) -> Result<(), ()> {
        if self.persisted == self.cursor {
            return Ok(());
        }
        save_cursor(&self.conn, &self.name, self.cursor).map_err(|e| self.failed(&e))?;
        self.persisted = self.cursor;
        Ok(())
    }

    fn failed(&self, e: &dyn std::fmt::Display) {
        self.counters.failures.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(sink = %self.name, error = %e, "usage export failed; retrying");
    }
}

fn save_cursor(conn: &Connection, sink: &str, rowid: i64) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT INTO export_cursors (sink, last_rowid) VALUES (?1, ?2)
         ON CONFLICT (sink) DO UPDATE SET last_rowid = excluded.last_rowid",
        params![sink, rowid],
    )
    .map(|_| ())
}

/// Up to `limit` committed usage rows with a rowid above `rowid`, in rowid (commit) order.
fn rows_after(
    conn: &Connection,
    rowid: i64,
    limit: usize,
) -> rusqlite::Result<Vec<(i64, UsageRecord)>> {
    let mut q = conn.prepare_cached(
        "SELECT rowid, request_id, time_ms, tenant, key_id, model, route, status,
         finish_reason, prompt_tokens, completion_tokens, audio_seconds, queue_seconds,
         cold_start_seconds, execution_seconds, cost_usd, price_version, device
         FROM usage WHERE rowid > ?1 ORDER BY rowid LIMIT ?2",
    )?;
    let rows = q.query_map(params![rowid, limit as i64], |r| {
        Ok((
            r.get(0)?,
            UsageRecord {
                request_id: r.get(1)?,
                time_ms: r.get(2)?,
                tenant: r.get(3)?,
                key_id: r.get(4)?,
                model: r.get(5)?,
                route: r.get(6)?,
                status: r.get(7)?,
                finish_reason: r.get(8)?,
                prompt_tokens: r.get::<_, i64>(9)?.max(0) as u64,
                completion_tokens: r.get::<_, i64>(10)?.max(0) as u64,
                audio_seconds: r.get(11)?,
                queue_seconds: r.get(12)?,
                cold_start_seconds: r.get(13)?,
                execution_seconds: r.get(14)?,
                cost_usd: r.get(15)?,
                price_version: r.get(16)?,
                device: r.get(17)?,
            },
        ))
    })?;
    rows.collect()
}

/// One record as a CloudEvents 1.0 event in OpenMeter's shape: `subject` is the tenant
/// (the customer billed), `id` the request id (what makes re-delivery harmless).
pub fn cloud_event(row: &UsageRecord, source: &str) -> serde_json::Value {
    json!({
        "specversion": "1.0",
        "type": "surge.usage",
        "id": row.request_id,
        "source": source,
        "subject": row.tenant,
        "time": rfc3339_ms(row.time_ms),
        "datacontenttype": "application/json",
        "data": {
            "model": row.model,
            "route": row.route,
            "status": row.status,
            "finish_reason": row.finish_reason,
            "key_id": row.key_id,
            "device": row.device,
            "prompt_tokens": row.prompt_tokens,
            "completion_tokens": row.completion_tokens,
            "audio_seconds": row.audio_seconds,
            "queue_seconds": row.queue_seconds,
            "cold_start_seconds": row.cold_start_seconds,
            "execution_seconds": row.execution_seconds,
            "cost_usd": row.cost_usd,
            "price_version": row.price_version,
        },
    })
}

/// `ms` since the epoch as `YYYY-MM-DDTHH:MM:SS.mmmZ` (UTC, millisecond precision).
fn rfc3339_ms(ms: i64) -> String {
    DateTime::<Utc>::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(SecondsFormat::Millis, true)
}

#[cfg(test)]
#[path = "export_tests.rs"]
mod tests;
