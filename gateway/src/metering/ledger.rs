//! The durable usage ledger: SQLite in WAL mode, written by one thread in batches, off
//! the request path.
//!
//! Requests hand their records to [`Ledger::record`] (a channel send, never a disk
//! write); the writer thread commits whatever arrived at most every `flush_interval` (one
//! transaction per batch). What a `kill -9` of the gateway can lose is therefore bounded:
//! the records of at most the last `flush_interval` (1 s by default) that were not
//! committed yet. A committed transaction survives the process (WAL, `synchronous =
//! NORMAL`: only a power loss can take the last commits back). Records are keyed by
//! request id and inserted with `INSERT OR IGNORE`, so a write repeated after a crash or
//! a retry never bills twice. [`Ledger::close`] commits everything before returning
//! (the clean shutdown loses nothing).
//!
//! The schema is versioned with SQLite's `user_version`: [`MIGRATIONS`] are applied in
//! order, each in its own transaction, when a database is opened.

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rusqlite::{params, Connection, OpenFlags};

use super::record::{UsageRecord, WorkerSpan};

/// Schema versions: `MIGRATIONS[i]` brings a database from version `i` to `i + 1`.
pub const MIGRATIONS: &[&str] = &[
    // 1: usage records and the capacity ledger.
    "CREATE TABLE usage (
        request_id TEXT PRIMARY KEY,
        time_ms INTEGER NOT NULL,
        tenant TEXT NOT NULL,
        key_id TEXT,
        model TEXT NOT NULL,
        route TEXT NOT NULL,
        status INTEGER NOT NULL,
        finish_reason TEXT,
        prompt_tokens INTEGER NOT NULL,
        completion_tokens INTEGER NOT NULL,
        audio_seconds REAL NOT NULL,
        queue_seconds REAL NOT NULL,
        cold_start_seconds REAL NOT NULL,
        execution_seconds REAL NOT NULL,
        cost_usd REAL NOT NULL,
        price_version TEXT NOT NULL
    );
    CREATE INDEX usage_tenant_time ON usage (tenant, time_ms);
    CREATE TABLE worker_spans (
        worker TEXT NOT NULL,
        model TEXT NOT NULL,
        device TEXT NOT NULL,
        phase TEXT NOT NULL,
        start_ms INTEGER NOT NULL,
        end_ms INTEGER NOT NULL,
        PRIMARY KEY (worker, phase, start_ms)
    );",
    // 2: API keys, stored as SHA-256 hashes.
    "CREATE TABLE keys (
        id TEXT PRIMARY KEY,
        hash TEXT NOT NULL UNIQUE,
        tenant TEXT NOT NULL,
        name TEXT,
        rps INTEGER,
        max_concurrent INTEGER,
        budget_usd REAL,
        budget_period TEXT,
        admin INTEGER NOT NULL,
        created_ms INTEGER NOT NULL,
        revoked_ms INTEGER
    );",
    // 3: the device a request ran on; the price lists records were billed under; how far
    // each export sink has read.
    "ALTER TABLE usage ADD COLUMN device TEXT NOT NULL DEFAULT 'cpu';
    CREATE TABLE prices (
        version TEXT PRIMARY KEY,
        billing TEXT NOT NULL,
        first_used_ms INTEGER NOT NULL
    );
    CREATE TABLE export_cursors (
        sink TEXT PRIMARY KEY,
        last_rowid INTEGER NOT NULL
    );",
];

/// How the writer batches.
#[derive(Debug, Clone)]
pub struct LedgerOptions {
    /// The longest a record waits before it is committed (the `kill -9` loss window).
    pub flush_interval: Duration,
    /// A batch this large is committed at once.
    pub max_batch: usize,
}

impl Default for LedgerOptions {
    fn default() -> Self {
        LedgerOptions {
            flush_interval: Duration::from_secs(1),
            max_batch: 1024,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error("ledger {path}: {source}")]
    Sqlite {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error("ledger {path}: schema version {found} is newer than this surge knows ({known})")]
    TooNew {
        path: PathBuf,
        found: i64,
        known: usize,
    },
    #[error("ledger {0}: the writer has stopped")]
    Stopped(PathBuf),
}

enum Msg {
    Usage(Box<UsageRecord>),
    Span(WorkerSpan),
    /// Commit what is pending, then answer.
    Flush(mpsc::Sender<()>),
}

/// The writing side: one per gateway.
pub struct Ledger {
    path: PathBuf,
    tx: mpsc::Sender<Msg>,
    writer: Option<JoinHandle<()>>,
}

/// Opens (creating it if needed) the database at `path` and brings its schema up to date.
pub fn open(path: &Path) -> Result<Connection, LedgerError> {
    let err = |source| LedgerError::Sqlite {
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    let mut conn = Connection::open(path).map_err(err)?;
    conn.pragma_update(None, "journal_mode", "WAL")
        .map_err(err)?;
    conn.pragma_update(None, "synchronous", "NORMAL")
        .map_err(err)?;
    conn.busy_timeout(Duration::from_secs(5)).map_err(err)?;
    migrate(&mut conn, path)?;
    Ok(conn)
}

/// A read-only connection (reports, `/v1/usage`), beside a running writer.
pub fn open_read_only(path: &Path) -> Result<Connection, LedgerError> {
    let conn =
        Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY).map_err(|source| {
            LedgerError::Sqlite {
                path: path.to_path_buf(),
                source,
            }
        })?;
    let _ = conn.busy_timeout(Duration::from_secs(5));
    Ok(conn)
}

fn migrate(conn: &mut Connection, path: &Path) -> Result<(), LedgerError> {
    let err = |source| LedgerError::Sqlite {
        path: path.to_path_buf(),
        source,
    };
    let version: i64 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .map_err(err)?;
    if version as usize > MIGRATIONS.len() {
        return Err(LedgerError::TooNew {
            path: path.to_path_buf(),
            found: version,
            known: MIGRATIONS.len(),
        });
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
        let tx = conn.transaction().map_err(err)?;
        tx.execute_batch(sql).map_err(err)?;
        tx.pragma_update(None, "user_version", (i + 1) as i64)
            .map_err(err)?;
        tx.commit().map_err(err)?;
    }
    Ok(())
}

impl Ledger {
    /// Opens the ledger at `path` and starts its writer thread.
    pub fn start(path: &Path, opts: LedgerOptions) -> Result<Ledger, LedgerError> {
        let conn = open(path)?;
        let (tx, rx) = mpsc::channel();
        let writer_path = path.to_path_buf();
        let writer = std::thread::Builder::new()
            .name("surge-ledger".into())
            .spawn(move || write_loop(conn, rx, opts, &writer_path))
            .map_err(|e| LedgerError::Sqlite {
                path: path.to_path_buf(),
                source: rusqlite::Error::ToSqlConversionFailure(Box::new(e)),
            })?;
        Ok(Ledger {
            path: path.to_path_buf(),
            tx,
            writer: Some(writer),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Queues a request's record; it is committed within `flush_interval`.
    pub fn record(&self, r: UsageRecord) -> Result<(), LedgerError> {
        self.send(Msg::Usage(Box::new(r)))
    }

    /// Queues a worker's phase span.
    pub fn span(&self, s: WorkerSpan) -> Result<(), LedgerError> {
        self.send(Msg::Span(s))
    }

    fn send(&self, m: Msg) -> Result<(), LedgerError> {
        self.tx
            .send(m)
            .map_err(|_| LedgerError::Stopped(self.path.clone()))
    }

    /// Waits until everything queued so far is committed.
    pub fn flush(&self) -> Result<(), LedgerError> {
        let (tx, rx) = mpsc::channel();
        self.send(Msg::Flush(tx))?;
        rx.recv()
            .map_err(|_| LedgerError::Stopped(self.path.clone()))
    }

    /// Commits everything queued and stops the writer (the clean shutdown).
    pub fn close(mut self) -> Result<(), LedgerError> {
        self.flush()?;
        self.stop();
        Ok(())
    }

    fn stop(&mut self) {
        // Closing the channel ends the writer after its last commit.
        let (dead, _) = mpsc::channel();
        drop(std::mem::replace(&mut self.tx, dead));
        if let Some(w) = self.writer.take() {
            let _ = w.join();
        }
    }
}

impl Drop for Ledger {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The writer: gathers records for up to `flush_interval` (or `max_batch` of them) and
/// commits them in one transaction; on a closed channel commits the rest and returns.
fn write_loop(mut conn: Connection, rx: mpsc::Receiver<Msg>, opts: LedgerOptions, path: &Path) {
    let mut usage: Vec<UsageRecord> = Vec::new();
    let mut spans: Vec<WorkerSpan> = Vec::new();
    let mut waiting: Vec<mpsc::Sender<()>> = Vec::new();
    let mut oldest: Option<Instant> = None;
    loop {
        let timeout = match oldest {
            Some(t) => opts.flush_interval.saturating_sub(t.elapsed()),
            None => Duration::from_secs(3600),
        };
        let (closed, due) = match rx.recv_timeout(timeout) {
            Ok(Msg::Usage(r)) => {
                usage.push(*r);
                (false, false)
            }
            Ok(Msg::Span(s)) => {
                spans.push(s);
                (false, false)
            }
            Ok(Msg::Flush(done)) => {
                waiting.push(done);
                (false, true)
            }
            Err(mpsc::RecvTimeoutError::Timeout) => (false, true),
            Err(mpsc::RecvTimeoutError::Disconnected) => (true, true),
        };
        if !usage.is_empty() || !spans.is_empty() {
            oldest.get_or_insert_with(Instant::now);
        }
        let full = usage.len() + spans.len() >= opts.max_batch;
        if due || full || closed {
            if let Err(e) = commit(&mut conn, &usage, &spans) {
                // Kept for the next try: a busy or full disk must not drop bills.
                tracing::error!(path = %path.display(), error = %e, pending = usage.len() + spans.len(), "ledger commit failed");
                if closed {
                    return;
                }
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
            usage.clear();
            spans.clear();
            oldest = None;
            for w in waiting.drain(..) {
                let _ = w.send(());
            }
        }
        if closed {
            return;
        }
    }
}

fn commit(
    conn: &mut Connection,
    usage: &[UsageRecord],
    spans: &[WorkerSpan],
) -> rusqlite::Result<()> {
    if usage.is_empty() && spans.is_empty() {
        return Ok(());
    }
    let tx = conn.transaction()?;
    {
        let mut put = tx.prepare_cached(
            "INSERT OR IGNORE INTO usage (request_id, time_ms, tenant, key_id, model, route,
             status, finish_reason, prompt_tokens, completion_tokens, audio_seconds,
             queue_seconds, cold_start_seconds, execution_seconds, cost_usd, price_version,
             device)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17)",
        )?;
        for r in usage {
            put.execute(params![
                r.request_id,
                r.time_ms,
                r.tenant,
                r.key_id,
                r.model,
                r.route,
                r.status,
                r.finish_reason,
                r.prompt_tokens as i64,
                r.completion_tokens as i64,
                r.audio_seconds,
                r.queue_seconds,
                r.cold_start_seconds,
                r.execution_seconds,
                r.cost_usd,
                r.price_version,
                r.device,
            ])?;
        }
        let mut put = tx
            .prepare_cached("INSERT OR IGNORE INTO worker_spans VALUES (?1, ?2, ?3, ?4, ?5, ?6)")?;
        for s in spans {
            put.execute(params![
                s.worker,
                s.model,
                s.device,
                s.phase.label(),
                s.start_ms,
                s.end_ms
            ])?;
        }
    }
    tx.commit()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metering::record::WorkerPhase;

    fn record(id: &str, tenant: &str) -> UsageRecord {
        UsageRecord::example(id, tenant, 1_764_900_000_000)
    }

    fn count(path: &Path, table: &str) -> i64 {
        open_read_only(path)
            .unwrap()
            .query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))
            .unwrap()
    }

    #[test]
    fn records_are_committed_once_and_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("data").join("ledger.db");
        let ledger = Ledger::start(&path, LedgerOptions::default()).unwrap();
        for i in 0..2500 {
            ledger.record(record(&format!("r{i}"), "t1")).unwrap();
        }
        // The same ids again (a retried write): ignored.
        for i in 0..100 {
            ledger.record(record(&format!("r{i}"), "t2")).unwrap();
        }
        ledger
            .span(WorkerSpan {
                worker: "run-1".into(),
                model: "m".into(),
                device: "cpu".into(),
                phase: WorkerPhase::Idle,
                start_ms: 0,
                end_ms: 1500,
            })
            .unwrap();
        ledger.close().unwrap();
        assert_eq!(count(&path, "usage"), 2500);
        assert_eq!(count(&path, "worker_spans"), 1);
        let conn = open(&path).unwrap();
        let ok: String = conn
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .unwrap();
        assert_eq!(ok, "ok");
        let v: i64 = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(v, MIGRATIONS.len() as i64);
        let t2: i64 = conn
            .query_row("SELECT count(*) FROM usage WHERE tenant = 't2'", [], |r| {
                r.get(0)
            })
            .unwrap();
        assert_eq!(t2, 0, "the first record of an id is the one kept");
    }

    /// Records reach the disk within the flush interval without any flush or close: what a
    /// `kill -9` after that interval finds.
    #[test]
    fn records_are_committed_within_the_flush_interval() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ledger.db");
        let opts = LedgerOptions {
            flush_interval: Duration::from_millis(100),
            ..LedgerOptions::default()
        };
        let ledger = Ledger::start(&path, opts).unwrap();
        ledger.record(record("a", "t")).unwrap();
        let start = Instant::now();
        while count(&path, "usage") == 0 {
            assert!(start.elapsed() < Duration::from_secs(5), "never committed");
            std::thread::sleep(Duration::from_millis(10));
        }
        // Kept open: the writer is still running when the reader looks.
        drop(ledger);
    }

    #[test]
    fn a_newer_schema_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ledger.db");
        let conn = open(&path).unwrap();
        conn.pragma_update(None, "user_version", 99).unwrap();
        drop(conn);
        let e = open(&path).unwrap_err();
        assert!(matches!(e, LedgerError::TooNew { found: 99, .. }), "{e}");
    }
}
