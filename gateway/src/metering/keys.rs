//! API keys kept in the ledger database (`surge keys create|ls|revoke`): shown once at
//! creation, stored only as a SHA-256 hash with a short public id to find them by. The
//! gateway looks a key up on every request, so a revoked key fails on its next request
//! without a restart.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use rand::RngCore;
use rusqlite::{params, Connection, OptionalExtension, Row};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The database file inside a data directory.
pub const LEDGER_FILE: &str = "ledger.db";

/// Where surge keeps its ledger: `--data-dir`, `SURGE_DATA_DIR`, else `data/` in the
/// model cache's root (beside its blobs and manifests).
pub fn ledger_path(data_dir: Option<&Path>, cache_root: &Path) -> PathBuf {
    data_dir
        .map(Path::to_path_buf)
        .unwrap_or_else(|| cache_root.join("data"))
        .join(LEDGER_FILE)
}

/// How often a budget starts afresh.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum BudgetPeriod {
    Day,
    Month,
    Total,
}

impl BudgetPeriod {
    fn label(self) -> &'static str {
        match self {
            BudgetPeriod::Day => "day",
            BudgetPeriod::Month => "month",
            BudgetPeriod::Total => "total",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        match s {
            "day" => Some(BudgetPeriod::Day),
            "month" => Some(BudgetPeriod::Month),
            "total" => Some(BudgetPeriod::Total),
            _ => None,
        }
    }
}

/// What `surge keys create` asks for.
#[derive(Debug, Clone, Default)]
pub struct NewKey {
    pub tenant: String,
    pub name: Option<String>,
    pub requests_per_second: Option<u32>,
    pub max_concurrent: Option<u32>,
    pub budget: Option<(f64, BudgetPeriod)>,
    pub admin: bool,
}

/// A stored key (never its secret).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct KeyRow {
    /// The public part of the key (`sk-surge-ID-…`), to list and revoke it by.
    pub id: String,
    pub tenant: String,
    pub name: Option<String>,
    pub requests_per_second: Option<u32>,
    pub max_concurrent: Option<u32>,
    pub budget_usd: Option<f64>,
    pub budget_period: Option<BudgetPeriod>,
    pub admin: bool,
    pub created_ms: i64,
    pub revoked_ms: Option<i64>,
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("{0}")]
    Invalid(String),
    #[error("no key with id '{0}'")]
    NotFound(String),
    #[error(transparent)]
    Sqlite(#[from] rusqlite::Error),
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// The stored form of a key.
pub fn hash(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

/// Creates a key; returns it (the only time the secret is seen) and its row.
pub fn create(conn: &Connection, k: &NewKey) -> Result<(String, KeyRow), KeyError> {
    let tenant = k.tenant.trim();
    if tenant.is_empty() {
        return Err(KeyError::Invalid("--tenant must not be empty".into()));
    }
    if k.requests_per_second == Some(0) || k.max_concurrent == Some(0) {
        return Err(KeyError::Invalid(
            "--rps and --max-concurrent must be at least 1".into(),
        ));
    }
    if let Some((usd, _)) = k.budget {
        if !(usd.is_finite() && usd >= 0.0) {
            return Err(KeyError::Invalid(format!(
                "--budget must be a non-negative amount of USD, got {usd}"
            )));
        }
    }
    let mut bytes = [0u8; 24];
    rand::rng().fill_bytes(&mut bytes);
    let id = hex::encode(&bytes[..4]);
    let key = format!("sk-surge-{id}-{}", hex::encode(&bytes[4..]));
    let row = KeyRow {
        id,
        tenant: tenant.to_string(),
        name: k.name.clone(),
        requests_per_second: k.requests_per_second,
        max_concurrent: k.max_concurrent,
        budget_usd: k.budget.map(|b| b.0),
        budget_period: k.budget.map(|b| b.1),
        admin: k.admin,
        created_ms: now_ms(),
        revoked_ms: None,
    };
    conn.execute(
        "INSERT INTO keys (id, hash, tenant, name, rps, max_concurrent, budget_usd,
         budget_period, admin, created_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
        params![
            row.id,
            hash(&key),
            row.tenant,
            row.name,
            row.requests_per_second,
            row.max_concurrent,
            row.budget_usd,
            row.budget_period.map(BudgetPeriod::label),
            row.admin,
            row.created_ms,
        ],
    )?;
    Ok((key, row))
}

const COLUMNS: &str = "id, tenant, name, rps, max_concurrent, budget_usd, budget_period, \
                       admin, created_ms, revoked_ms";

fn row(r: &Row) -> rusqlite::Result<KeyRow> {
    let period: Option<String> = r.get(6)?;
    Ok(KeyRow {
        id: r.get(0)?,
        tenant: r.get(1)?,
        name: r.get(2)?,
        requests_per_second: r.get(3)?,
        max_concurrent: r.get(4)?,
        budget_usd: r.get(5)?,
        budget_period: period.as_deref().and_then(BudgetPeriod::parse),
        admin: r.get(7)?,
        created_ms: r.get(8)?,
        revoked_ms: r.get(9)?,
    })
}

/// Every key, oldest first.
pub fn list(conn: &Connection) -> Result<Vec<KeyRow>, KeyError> {
    let mut q = conn.prepare(&format!(
        "SELECT {COLUMNS} FROM keys ORDER BY created_ms, id"
    ))?;
    let rows = q.query_map([], row)?.collect::<rusqlite::Result<_>>()?;
    Ok(rows)
}

/// Revokes key `id` (from then on it is refused); revoking twice keeps the first time.
pub fn revoke(conn: &Connection, id: &str) -> Result<KeyRow, KeyError> {
    conn.execute(
        "UPDATE keys SET revoked_ms = ?2 WHERE id = ?1 AND revoked_ms IS NULL",
        params![id, now_ms()],
    )?;
    conn.query_row(
        &format!("SELECT {COLUMNS} FROM keys WHERE id = ?1"),
        [id],
        row,
    )
    .optional()?
    .ok_or_else(|| KeyError::NotFound(id.to_string()))
}

/// The live (not revoked) key whose secret is `key`.
pub fn lookup(conn: &Connection, key: &str) -> Result<Option<KeyRow>, KeyError> {
    Ok(conn
        .query_row(
            &format!("SELECT {COLUMNS} FROM keys WHERE hash = ?1 AND revoked_ms IS NULL"),
            [hash(key)],
            row,
        )
        .optional()?)
}

/// Whether any live key exists (then the gateway requires one).
pub fn any_live(conn: &Connection) -> Result<bool, KeyError> {
    Ok(conn
        .query_row(
            "SELECT 1 FROM keys WHERE revoked_ms IS NULL LIMIT 1",
            [],
            |_| Ok(()),
        )
        .optional()?
        .is_some())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metering::ledger;

    #[test]
    fn keys_are_shown_once_stored_hashed_and_revocable() {
        let dir = tempfile::tempdir().unwrap();
        let conn = ledger::open(&dir.path().join(LEDGER_FILE)).unwrap();
        assert!(!any_live(&conn).unwrap());
        let (key, made) = create(
            &conn,
            &NewKey {
                tenant: "acme".into(),
                name: Some("ci".into()),
                requests_per_second: Some(5),
                budget: Some((10.0, BudgetPeriod::Month)),
                ..NewKey::default()
            },
        )
        .unwrap();
        assert!(key.starts_with(&format!("sk-surge-{}-", made.id)), "{key}");
        // Only the hash is stored.
        let stored: String = conn
            .query_row("SELECT hash FROM keys WHERE id = ?1", [&made.id], |r| {
                r.get(0)
            })
            .unwrap();
        assert_eq!(stored, hash(&key));
        assert!(!stored.contains(&key[10..]));
        assert_eq!(lookup(&conn, &key).unwrap(), Some(made.clone()));
        assert_eq!(lookup(&conn, "sk-surge-nope").unwrap(), None);
        assert_eq!(list(&conn).unwrap(), std::slice::from_ref(&made));
        assert!(any_live(&conn).unwrap());
        let revoked = revoke(&conn, &made.id).unwrap();
        assert!(revoked.revoked_ms.is_some());
        assert_eq!(lookup(&conn, &key).unwrap(), None);
        assert!(!any_live(&conn).unwrap());
        assert!(matches!(revoke(&conn, "nope"), Err(KeyError::NotFound(_))));
    }

    #[test]
    fn bad_keys_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let conn = ledger::open(&dir.path().join(LEDGER_FILE)).unwrap();
        let bad = |k: NewKey| create(&conn, &k).unwrap_err().to_string();
        assert!(bad(NewKey::default()).contains("--tenant"));
        let t = |k: NewKey| NewKey {
            tenant: "t".into(),
            ..k
        };
        assert!(bad(t(NewKey {
            budget: Some((-1.0, BudgetPeriod::Day)),
            ..NewKey::default()
        }))
        .contains("--budget"));
        assert!(bad(t(NewKey {
            requests_per_second: Some(0),
            ..NewKey::default()
        }))
        .contains("--rps"));
    }
}
