//! Spending limits: each key with a budget has an account — what it spent this period
//! and what its requests in flight have reserved. A request reserves its worst-case
//! cost before any work runs and settles to its real cost when it ends; one that does
//! not fit what is left is refused with 429 `insufficient_quota`. The check and the
//! reservation are one step under the account's lock, so concurrent requests cannot
//! overspend: with a budget that covers ten worst cases, at most ten run at once.
//!
//! What an account spent is read from the ledger when the key is first seen in a
//! period (so a restart keeps it, minus the records of the ledger's loss window) and
//! kept in memory from then on: the ledger is written in batches, so reading it back
//! per request would miss the last second of spending.

use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use chrono::{DateTime, Datelike, NaiveDate};
use dashmap::DashMap;
use rusqlite::Connection;
use surge_protocol::error::ApiError;

use crate::metering::keys::BudgetPeriod;

/// A key's spending limit.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limit {
    pub usd: f64,
    pub period: BudgetPeriod,
}

#[derive(Debug)]
struct Account {
    /// Start of the period `spent` counts (Unix ms).
    period_start_ms: i64,
    spent: f64,
    reserved: f64,
}

/// Every budgeted key's account.
pub struct Spending {
    /// The ledger, read when an account is opened for a period (none: start from 0).
    ledger: Option<Mutex<Connection>>,
    accounts: DashMap<String, Arc<Mutex<Account>>>,
}

/// A request's hold on its key's budget; [`Spending::settle`] it when the request ends.
/// Dropped unsettled (the request never got that far), it frees what it held.
#[derive(Debug)]
pub struct Reservation {
    account: Arc<Mutex<Account>>,
    amount: f64,
    period_start_ms: i64,
    settled: bool,
}

pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// The start of the budget period that contains `ms` (UTC days and calendar months).
pub fn period_start(period: BudgetPeriod, ms: i64) -> i64 {
    const DAY: i64 = 86_400_000;
    match period {
        BudgetPeriod::Total => 0,
        BudgetPeriod::Day => ms - ms.rem_euclid(DAY),
        BudgetPeriod::Month => {
            let Some(t) = DateTime::from_timestamp_millis(ms) else {
                return 0;
            };
            NaiveDate::from_ymd_opt(t.year(), t.month(), 1)
                .and_then(|d| d.and_hms_opt(0, 0, 0))
                .map_or(0, |d| d.and_utc().timestamp_millis())
        }
    }
}

impl Spending {
    /// Accounts backed by the ledger at `ledger` (a connection of their own).
    pub fn new(ledger: Option<Connection>) -> Self {
        Spending {
            ledger: ledger.map(Mutex::new),
            accounts: DashMap::new(),
        }
    }

    /// What key `key_id` spent since `since_ms`, from the ledger.
    fn spent_since(&self, key_id: &str, since_ms: i64) -> f64 {
        let Some(conn) = &self.ledger else { return 0.0 };
        let conn = conn.lock().unwrap_or_else(|p| p.into_inner());
        conn.query_row(
            "SELECT COALESCE(SUM(cost_usd), 0) FROM usage WHERE key_id = ?1 AND time_ms >= ?2",
            rusqlite::params![key_id, since_ms],
            |r| r.get(0),
        )
        .unwrap_or_else(|e| {
            tracing::error!(key = key_id, error = %e, "reading spending from the ledger");
            0.0
        })
    }

    /// Reserves `amount` against key `key_id`'s `limit`, or refuses with 429
    /// `insufficient_quota` when what is left cannot cover it.
    pub fn reserve(
        &self,
        key_id: &str,
        limit: Limit,
        amount: f64,
        now_ms: i64,
    ) -> Result<Reservation, ApiError> {
        let start = period_start(limit.period, now_ms);
        let account = self
            .accounts
            .entry(key_id.to_string())
            .or_insert_with(|| {
                Arc::new(Mutex::new(Account {
                    period_start_ms: start,
                    spent: self.spent_since(key_id, start),
                    reserved: 0.0,
                }))
            })
            .clone();
        let mut a = account.lock().unwrap_or_else(|p| p.into_inner());
        if a.period_start_ms != start {
            // A new period: what was spent counts no more; holds of requests still in
            // flight from the last one move along (they will settle into this one).
            a.period_start_ms = start;
            a.spent = self.spent_since(key_id, start);
        }
        let left = limit.usd - a.spent - a.reserved;
        if amount > left + 1e-12 {
            return Err(ApiError::InsufficientQuota(format!(
                "This request could cost up to ${amount:.6}, more than the ${:.6} left of \
                 this key's ${:.2} {} budget (${:.6} spent, ${:.6} held by requests in \
                 flight).",
                left.max(0.0),
                limit.usd,
                period_label(limit.period),
                a.spent,
                a.reserved
            )));
        }
        a.reserved += amount;
        drop(a);
        Ok(Reservation {
            account,
            amount,
            period_start_ms: start,
            settled: false,
        })
    }

    /// Ends `r`: its hold is released and `cost` (the request's real cost) is spent.
    pub fn settle(&self, mut r: Reservation, cost: f64) {
        r.settled = true;
        let mut a = r.account.lock().unwrap_or_else(|p| p.into_inner());
        a.reserved = (a.reserved - r.amount).max(0.0);
        // A request that began in the last period is billed (time_ms) in it.
        if a.period_start_ms == r.period_start_ms {
            a.spent += cost;
        }
    }

    /// `(spent, reserved)` of key `key_id` this period, for tests and status.
    pub fn account(&self, key_id: &str) -> Option<(f64, f64)> {
        let a = self.accounts.get(key_id)?;
        let a = a.lock().unwrap_or_else(|p| p.into_inner());
        Some((a.spent, a.reserved))
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if !self.settled {
            let mut a = self.account.lock().unwrap_or_else(|p| p.into_inner());
            a.reserved = (a.reserved - self.amount).max(0.0);
        }
    }
}

fn period_label(p: BudgetPeriod) -> &'static str {
    match p {
        BudgetPeriod::Day => "daily",
        BudgetPeriod::Month => "monthly",
        BudgetPeriod::Total => "total",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMIT: Limit = Limit {
        usd: 1.0,
        period: BudgetPeriod::Total,
    };

    #[test]
    fn concurrent_reservations_cannot_overspend() {
        let s = Arc::new(Spending::new(None));
        let admitted = std::sync::atomic::AtomicUsize::new(0);
        let held = Mutex::new(Vec::new());
        std::thread::scope(|scope| {
            for _ in 0..50 {
                scope.spawn(|| {
                    if let Ok(r) = s.reserve("k", LIMIT, 0.1, 0) {
                        admitted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        held.lock().unwrap().push(r);
                    }
                });
            }
        });
        assert_eq!(admitted.into_inner(), 10);
        let e = s.reserve("k", LIMIT, 0.1, 0).unwrap_err();
        assert_eq!(
            (e.status(), e.code(), e.kind()),
            (429, "insufficient_quota", "insufficient_quota")
        );
        // Settled below the worst case: what is left is free again.
        for r in held.into_inner().unwrap() {
            s.settle(r, 0.05);
        }
        let (spent, reserved) = s.account("k").unwrap();
        assert!((spent - 0.5).abs() < 1e-9 && reserved.abs() < 1e-9);
        assert!(s.reserve("k", LIMIT, 0.5, 0).is_ok());
    }

    #[test]
    fn an_unsettled_reservation_frees_its_hold() {
        let s = Spending::new(None);
        drop(s.reserve("k", LIMIT, 0.75, 0).unwrap());
        assert_eq!(s.account("k"), Some((0.0, 0.0)));
    }

    #[test]
    fn periods_start_at_utc_days_and_months() {
        // 2026-12-05T08:30:00Z
        let t = 1_796_459_400_000;
        assert_eq!(period_start(BudgetPeriod::Day, t), 1_796_428_800_000);
        assert_eq!(period_start(BudgetPeriod::Month, t), 1_796_083_200_000);
        assert_eq!(period_start(BudgetPeriod::Total, t), 0);
        // A new day: yesterday's spending no longer counts.
        let s = Spending::new(None);
        let day = Limit {
            usd: 1.0,
            period: BudgetPeriod::Day,
        };
        let r = s.reserve("k", day, 1.0, t).unwrap();
        s.settle(r, 1.0);
        assert!(s.reserve("k", day, 0.1, t).is_err());
        assert!(s.reserve("k", day, 0.1, t + 86_400_000).is_ok());
    }

    #[test]
    fn spending_so_far_is_read_from_the_ledger() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ledger.db");
        let conn = crate::metering::ledger::open(&path).unwrap();
        conn.execute(
            "INSERT INTO usage (request_id, time_ms, tenant, key_id, model, route, status,
             prompt_tokens, completion_tokens, audio_seconds, queue_seconds,
             cold_start_seconds, execution_seconds, cost_usd, price_version)
             VALUES ('r', 5, 't', 'k', 'm', 'chat_completions', 200, 1, 1, 0, 0, 0, 1, 0.9, 'v')",
            [],
        )
        .unwrap();
        let s = Spending::new(Some(conn));
        assert!(s.reserve("k", LIMIT, 0.2, 10).is_err());
        assert!(s.reserve("k", LIMIT, 0.1, 10).is_ok());
    }
}
