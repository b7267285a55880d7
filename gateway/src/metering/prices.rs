//! What things cost: the price list in the config's `[billing]` table, what a tenant is
//! billed for, and the worst-case cost a request reserves against its key's budget.
//!
//! Prices are per model and device (first matching `[[billing.prices]]` entry; the
//! most specific entry should come first), in USD:
//! - `execution_second`: one second of a worker's fair share of the batch steps a
//!   request took part in (what pay-per-execution bills);
//! - `prompt_per_1k`, `completion_per_1k`: tokens, as the client received them;
//! - `audio_minute`: transcribed audio;
//! - `reserved_worker_hour`: one worker kept running for an hour — never billed, the
//!   price of the reserved capacity that `surge usage report` compares against.
//!
//! `bill` chooses what a request's `cost_usd` is made of: `execution` (the default, as
//! pay-per-execution promises: the execution seconds only), `tokens` (tokens and audio
//! minutes, as hosted APIs price), or `both` (the sum). Every record keeps the
//! `price_version` it was billed under, and `surge serve` stores each price list it
//! runs with in the ledger, so old records can always be explained.

use rusqlite::OptionalExtension;
use serde::{Deserialize, Serialize};

/// The `[billing]` table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Billing {
    /// A name for this price list, kept on every record billed under it.
    pub price_version: String,
    pub bill: BillFor,
    /// Matched in order; a request matching none costs nothing.
    pub prices: Vec<Price>,
    /// For budget reservations only: the execution seconds one token (prompt or
    /// completion) is assumed to take at most.
    pub reserve_seconds_per_token: f64,
    /// For budget reservations only: execution seconds per second of audio.
    pub reserve_seconds_per_audio_second: f64,
    /// For budget reservations only: the completion tokens assumed for a request
    /// that sets no `max_tokens`.
    pub reserve_max_tokens: u64,
}

/// What a request's cost is made of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BillFor {
    Execution,
    Tokens,
    Both,
}

/// One entry of the price list.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Price {
    /// A model name (canonical, as in `/v1/models`); unset matches every model.
    pub model: Option<String>,
    /// `cpu`, `cuda` (any GPU) or `cuda:N`; unset matches every device.
    pub device: Option<String>,
    pub execution_second: f64,
    pub prompt_per_1k: f64,
    pub completion_per_1k: f64,
    pub audio_minute: f64,
    pub reserved_worker_hour: f64,
}

/// The billable quantities of one request.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Quantities {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub audio_seconds: f64,
    pub execution_seconds: f64,
}

impl Default for Price {
    /// Illustrative prices for a small CPU worker: a reserved worker at $0.10 an hour,
    /// and pay-per-execution at twice that rate per second actually used (serverless
    /// pays for its elasticity). Set your own.
    fn default() -> Self {
        Price {
            model: None,
            device: None,
            execution_second: 0.10 * 2.0 / 3600.0,
            prompt_per_1k: 0.0,
            completion_per_1k: 0.0,
            audio_minute: 0.0,
            reserved_worker_hour: 0.10,
        }
    }
}

impl Default for Billing {
    fn default() -> Self {
        Billing {
            price_version: "default".into(),
            bill: BillFor::Execution,
            prices: vec![Price::default()],
            reserve_seconds_per_token: 0.1,
            reserve_seconds_per_audio_second: 0.5,
            reserve_max_tokens: 4096,
        }
    }
}

impl Price {
    fn matches(&self, model: &str, device: &str) -> bool {
        let model_ok = self.model.as_deref().is_none_or(|m| m == model);
        let device_ok = self
            .device
            .as_deref()
            .is_none_or(|d| d == device || (d == "cuda" && device.starts_with("cuda")));
        model_ok && device_ok
    }

    fn check(&self, i: usize) -> Result<(), String> {
        for (name, v) in [
            ("execution_second", self.execution_second),
            ("prompt_per_1k", self.prompt_per_1k),
            ("completion_per_1k", self.completion_per_1k),
            ("audio_minute", self.audio_minute),
            ("reserved_worker_hour", self.reserved_worker_hour),
        ] {
            if !(v.is_finite() && v >= 0.0) {
                return Err(format!(
                    "[[billing.prices]] #{}: {name} = {v}: prices must be non-negative USD",
                    i + 1
                ));
            }
        }
        Ok(())
    }
}

impl Billing {
    /// The price of `model` on `device` (`None`: free).
    pub fn price(&self, model: &str, device: &str) -> Option<&Price> {
        self.prices.iter().find(|p| p.matches(model, device))
    }

    /// What `q` costs on `model`/`device`, by [`Billing::bill`].
    pub fn cost(&self, model: &str, device: &str, q: &Quantities) -> f64 {
        let Some(p) = self.price(model, device) else {
            return 0.0;
        };
        let execution = q.execution_seconds * p.execution_second;
        let tokens = q.prompt_tokens as f64 / 1000.0 * p.prompt_per_1k
            + q.completion_tokens as f64 / 1000.0 * p.completion_per_1k
            + q.audio_seconds / 60.0 * p.audio_minute;
        match self.bill {
            BillFor::Execution => execution,
            BillFor::Tokens => tokens,
            BillFor::Both => execution + tokens,
        }
    }

    /// The worst-case quantities of a request before it runs: `prompt_tokens` at most
    /// (the gateway does not tokenize: the body's length bounds it), `max_tokens` per
    /// choice (`None`: [`Billing::reserve_max_tokens`]), `n` choices, or
    /// `audio_seconds` of audio.
    pub fn worst_case(
        &self,
        prompt_tokens: u64,
        max_tokens: Option<u64>,
        n: u64,
        audio_seconds: f64,
    ) -> Quantities {
        let completion = max_tokens.unwrap_or(self.reserve_max_tokens) * n.max(1);
        Quantities {
            prompt_tokens,
            completion_tokens: completion,
            audio_seconds,
            execution_seconds: (prompt_tokens + completion) as f64 * self.reserve_seconds_per_token
                + audio_seconds * self.reserve_seconds_per_audio_second,
        }
    }

    /// Checks values that parse but make no sense.
    pub fn validate(&self) -> Result<(), String> {
        if self.price_version.trim().is_empty() {
            return Err("[billing] price_version must not be empty".into());
        }
        for (name, v) in [
            ("reserve_seconds_per_token", self.reserve_seconds_per_token),
            (
                "reserve_seconds_per_audio_second",
                self.reserve_seconds_per_audio_second,
            ),
        ] {
            if !(v.is_finite() && v >= 0.0) {
                return Err(format!("[billing] {name} = {v}: must be non-negative"));
            }
        }
        self.prices
            .iter()
            .enumerate()
            .try_for_each(|(i, p)| p.check(i))
    }
}

/// Keeps `billing` in the ledger's `prices` table under its version, so every record's
/// `price_version` can be looked up later. A version already stored with other prices
/// is refused: changed prices need a new `price_version`, or old records would seem to
/// have been billed under prices they never were.
pub fn store(conn: &rusqlite::Connection, billing: &Billing, now_ms: i64) -> Result<(), String> {
    let json = serde_json::to_string(billing).map_err(|e| e.to_string())?;
    let stored: Option<String> = conn
        .query_row(
            "SELECT billing FROM prices WHERE version = ?1",
            [&billing.price_version],
            |r| r.get(0),
        )
        .optional()
        .map_err(|e| e.to_string())?;
    match stored {
        Some(old) if serde_json::from_str::<Billing>(&old).ok().as_ref() == Some(billing) => Ok(()),
        Some(_) => Err(format!(
            "[billing] price_version = {:?} is already in the ledger with other prices; \
             give the changed prices a new price_version",
            billing.price_version
        )),
        None => conn
            .execute(
                "INSERT INTO prices (version, billing, first_used_ms) VALUES (?1, ?2, ?3)",
                rusqlite::params![billing.price_version, json, now_ms],
            )
            .map(|_| ())
            .map_err(|e| e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn billing(bill: BillFor) -> Billing {
        Billing {
            bill,
            prices: vec![
                Price {
                    model: Some("m".into()),
                    device: Some("cuda".into()),
                    execution_second: 0.01,
                    ..Price::default()
                },
                Price {
                    model: Some("m".into()),
                    execution_second: 0.001,
                    prompt_per_1k: 1.0,
                    completion_per_1k: 2.0,
                    audio_minute: 0.6,
                    ..Price::default()
                },
            ],
            ..Billing::default()
        }
    }

    #[test]
    fn the_first_matching_price_applies() {
        let b = billing(BillFor::Execution);
        assert_eq!(b.price("m", "cuda:1").unwrap().execution_second, 0.01);
        assert_eq!(b.price("m", "cpu").unwrap().execution_second, 0.001);
        assert!(b.price("other", "cpu").is_none());
        assert_eq!(b.cost("other", "cpu", &Quantities::default()), 0.0);
    }

    #[test]
    fn cost_follows_what_is_billed() {
        let q = Quantities {
            prompt_tokens: 500,
            completion_tokens: 250,
            audio_seconds: 30.0,
            execution_seconds: 2.0,
        };
        let close = |a: f64, b: f64| assert!((a - b).abs() < 1e-12, "{a} != {b}");
        close(billing(BillFor::Execution).cost("m", "cpu", &q), 0.002);
        // 0.5 + 0.5 + 0.3
        close(billing(BillFor::Tokens).cost("m", "cpu", &q), 1.3);
        close(billing(BillFor::Both).cost("m", "cpu", &q), 1.302);
    }

    #[test]
    fn worst_case_covers_prompt_and_every_choice() {
        let b = Billing::default();
        let q = b.worst_case(100, Some(50), 2, 0.0);
        assert_eq!(q.completion_tokens, 100);
        assert!((q.execution_seconds - 20.0).abs() < 1e-9);
        assert_eq!(b.worst_case(0, None, 1, 0.0).completion_tokens, 4096);
        let audio = b.worst_case(0, Some(0), 1, 60.0);
        assert!((audio.execution_seconds - 30.0).abs() < 1e-9);
    }

    #[test]
    fn a_price_version_is_stored_once_and_never_changed() {
        let dir = tempfile::tempdir().unwrap();
        let conn = crate::metering::ledger::open(&dir.path().join("l.db")).unwrap();
        let b = billing(BillFor::Tokens);
        store(&conn, &b, 1).unwrap();
        store(&conn, &b, 2).unwrap();
        let mut changed = b.clone();
        changed.prices[1].completion_per_1k = 3.0;
        assert!(store(&conn, &changed, 3)
            .unwrap_err()
            .contains("new price_version"));
        changed.price_version = "v2".into();
        store(&conn, &changed, 3).unwrap();
    }

    #[test]
    fn nonsense_is_refused() {
        let mut b = Billing::default();
        b.prices[0].completion_per_1k = -1.0;
        assert!(b.validate().unwrap_err().contains("completion_per_1k"));
        let b = Billing {
            price_version: " ".into(),
            ..Billing::default()
        };
        assert!(b.validate().is_err());
    }
}
