//! API keys and their limits: `Authorization: Bearer KEY` checked against the config's
//! keys and the keys in the ledger database (`surge keys`; looked up on every request,
//! so a revoked key fails at once), a requests-per-second limit per key (`governor`'s
//! GCRA) and a concurrent-request limit per key. No key anywhere → open gateway.
//! Refusals carry what a client needs to back off: `Retry-After` and the
//! `x-ratelimit-*` headers.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dashmap::DashMap;
use rusqlite::Connection;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};

use super::config::ApiKey;
use super::spend::Limit;
use crate::metering::keys::{self as stored, BudgetPeriod, KeyRow};
use surge_protocol::error::ApiError;

/// The configured keys, and the ledger's.
pub struct Keys {
    by_key: HashMap<String, Arc<Tenant>>,
    store: Option<Mutex<Connection>>,
    /// Limit state of the ledger's keys, by key id (created on first use).
    live: DashMap<String, Arc<Tenant>>,
}

/// One key's identity and limit state.
pub struct Tenant {
    pub name: String,
    /// The key's id in usage records: a ledger key's public id, `config:NAME` for a
    /// key from the config file.
    pub key_id: String,
    /// May read every tenant's usage.
    pub admin: bool,
    /// The key's spending limit.
    pub budget: Option<Limit>,
    rate: Option<(DefaultDirectRateLimiter, u32)>,
    max_concurrent: Option<u32>,
    in_flight: AtomicU32,
}

/// A request admitted under a key; dropping it frees its concurrency slot.
pub struct Admission {
    tenant: Option<Arc<Tenant>>,
    /// `x-ratelimit-*` headers to send with the response.
    pub headers: Vec<(&'static str, String)>,
}

impl Admission {
    /// The tenant for metrics and metering (`anonymous` without keys).
    pub fn tenant(&self) -> &str {
        self.tenant
            .as_ref()
            .map_or("anonymous", |t| t.name.as_str())
    }

    /// The key's identity and limits (`None` on an open gateway).
    pub fn key(&self) -> Option<&Tenant> {
        self.tenant.as_deref()
    }
}

impl Drop for Admission {
    fn drop(&mut self) {
        if let Some(t) = &self.tenant {
            if t.max_concurrent.is_some() {
                t.in_flight.fetch_sub(1, Ordering::SeqCst);
            }
        }
    }
}

/// Why a request was refused, with the headers to send.
#[derive(Debug)]
pub struct Refusal {
    pub error: ApiError,
    pub headers: Vec<(&'static str, String)>,
}

/// What a key is allowed.
struct Grant {
    name: String,
    key_id: String,
    admin: bool,
    budget: Option<Limit>,
    requests_per_second: Option<u32>,
    max_concurrent: Option<u32>,
}

impl Grant {
    fn from_config(k: &ApiKey) -> Grant {
        let name = k
            .name
            .clone()
            .unwrap_or_else(|| k.key.chars().take(8).collect());
        Grant {
            key_id: format!("config:{name}"),
            name,
            admin: k.admin,
            budget: limit(k.budget_usd, k.budget_period),
            requests_per_second: k.requests_per_second,
            max_concurrent: k.max_concurrent,
        }
    }

    fn from_row(r: KeyRow) -> Grant {
        Grant {
            budget: limit(r.budget_usd, r.budget_period),
            name: r.tenant,
            key_id: r.id,
            admin: r.admin,
            requests_per_second: r.requests_per_second,
            max_concurrent: r.max_concurrent,
        }
    }
}

fn limit(usd: Option<f64>, period: Option<BudgetPeriod>) -> Option<Limit> {
    Some(Limit {
        usd: usd?,
        period: period?,
    })
}

impl Tenant {
    fn new(g: Grant) -> Self {
        let rate = g
            .requests_per_second
            .and_then(NonZeroU32::new)
            .map(|r| (RateLimiter::direct(Quota::per_second(r)), r.get()));
        Tenant {
            name: g.name,
            key_id: g.key_id,
            admin: g.admin,
            budget: g.budget,
            max_concurrent: g.max_concurrent,
            rate,
            in_flight: AtomicU32::new(0),
        }
    }
}

impl Keys {
    /// The config's keys only.
    pub fn new(keys: &[ApiKey]) -> Self {
        Self::with_store(keys, None)
    }

    /// The config's keys and those in the ledger database `store` (opened, migrated).
    pub fn with_store(keys: &[ApiKey], store: Option<Connection>) -> Self {
        let by_key = keys
            .iter()
            .map(|k| (k.key.clone(), Arc::new(Tenant::new(Grant::from_config(k)))))
            .collect();
        Keys {
            by_key,
            store: store.map(Mutex::new),
            live: DashMap::new(),
        }
    }

    /// Whether requests need a key: one is configured, or the ledger holds a live one.
    fn enabled(&self) -> Result<bool, ApiError> {
        if !self.by_key.is_empty() {
            return Ok(true);
        }
        match &self.store {
            Some(conn) => {
                let conn = conn.lock().unwrap_or_else(|p| p.into_inner());
                stored::any_live(&conn).map_err(|e| ApiError::Internal(e.to_string()))
            }
            None => Ok(false),
        }
    }

    /// The tenant of `key`: a configured key, or a live key of the ledger.
    fn tenant(&self, key: &str) -> Result<Option<Arc<Tenant>>, ApiError> {
        if let Some(t) = self.by_key.get(key) {
            return Ok(Some(t.clone()));
        }
        let Some(conn) = &self.store else {
            return Ok(None);
        };
        let row: Option<KeyRow> = {
            let conn = conn.lock().unwrap_or_else(|p| p.into_inner());
            stored::lookup(&conn, key).map_err(|e| ApiError::Internal(e.to_string()))?
        };
        Ok(row.map(|r| {
            self.live
                .entry(r.id.clone())
                .or_insert_with(|| Arc::new(Tenant::new(Grant::from_row(r))))
                .clone()
        }))
    }

    /// The tenant the `Authorization` header names; `Ok(None)` for an open gateway (no
    /// key anywhere), 401 for a missing or unknown key. A known key costs one lookup.
    fn identify(&self, authorization: Option<&str>) -> Result<Option<Arc<Tenant>>, ApiError> {
        if let Some(key) = authorization.and_then(bearer) {
            if let Some(t) = self.tenant(key)? {
                return Ok(Some(t));
            }
        }
        if self.enabled()? {
            Err(ApiError::Unauthorized)
        } else {
            Ok(None)
        }
    }

    /// Checks the `Authorization` header value only (model listings, usage: no
    /// quota); the key's tenant, `None` on an open gateway.
    pub fn authenticate(
        &self,
        authorization: Option<&str>,
    ) -> Result<Option<Arc<Tenant>>, ApiError> {
        self.identify(authorization)
    }

    /// Checks the `Authorization` header value and takes a rate and a concurrency slot.
    pub fn admit(&self, authorization: Option<&str>) -> Result<Admission, Refusal> {
        let identified = self.identify(authorization).map_err(|error| Refusal {
            error,
            headers: Vec::new(),
        })?;
        let Some(tenant) = identified else {
            return Ok(Admission {
                tenant: None,
                headers: Vec::new(),
            });
        };
        let tenant = &tenant;
        let mut headers = Vec::new();
        if let Some((limiter, per_second)) = &tenant.rate {
            headers.push(("x-ratelimit-limit-requests", per_second.to_string()));
            if let Err(not_until) = limiter.check() {
                let wait = not_until.wait_time_from(DefaultClock::default().now());
                headers.push(("x-ratelimit-remaining-requests", "0".into()));
                headers.push(("x-ratelimit-reset-requests", format_secs(wait)));
                return Err(Refusal {
                    error: ApiError::RateLimited { retry_after: wait },
                    headers,
                });
            }
        }
        if let Some(max) = tenant.max_concurrent {
            let now = tenant.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
            headers.push(("x-ratelimit-limit-concurrent", max.to_string()));
            if now > max {
                tenant.in_flight.fetch_sub(1, Ordering::SeqCst);
                headers.push(("x-ratelimit-remaining-concurrent", "0".into()));
                return Err(Refusal {
                    error: ApiError::RateLimited {
                        retry_after: Duration::from_secs(1),
                    },
                    headers,
                });
            }
            headers.push(("x-ratelimit-remaining-concurrent", (max - now).to_string()));
        }
        Ok(Admission {
            tenant: Some(tenant.clone()),
            headers,
        })
    }
}

fn bearer(header: &str) -> Option<&str> {
    header.strip_prefix("Bearer ").map(str::trim)
}

fn format_secs(d: Duration) -> String {
    format!("{:.3}s", d.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> Keys {
        Keys::new(&[
            ApiKey {
                key: "sk-a".into(),
                name: Some("alice".into()),
                requests_per_second: Some(2),
                max_concurrent: None,
                budget_usd: None,
                budget_period: None,
                admin: false,
            },
            ApiKey {
                key: "sk-b".into(),
                name: None,
                requests_per_second: None,
                max_concurrent: Some(1),
                budget_usd: None,
                budget_period: None,
                admin: false,
            },
        ])
    }

    #[test]
    fn ledger_keys_are_checked_on_every_request() {
        use crate::metering::{keys as stored, ledger};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ledger.db");
        let admin = ledger::open(&path).unwrap();
        let k = Keys::with_store(&[], Some(ledger::open(&path).unwrap()));
        assert_eq!(
            k.admit(None).unwrap().tenant(),
            "anonymous",
            "no key yet: open"
        );
        let new = stored::NewKey {
            tenant: "acme".into(),
            max_concurrent: Some(1),
            ..stored::NewKey::default()
        };
        let (key, row) = stored::create(&admin, &new).unwrap();
        let auth = format!("Bearer {key}");
        assert_eq!(k.admit(None).err().unwrap().error.status(), 401);
        let held = k.admit(Some(&auth)).unwrap();
        assert_eq!(held.tenant(), "acme");
        assert_eq!(k.admit(Some(&auth)).err().unwrap().error.status(), 429);
        drop(held);
        assert!(k.authenticate(Some(&auth)).is_ok());
        stored::revoke(&admin, &row.id).unwrap();
        // Revoked: refused on the next request; with no live key left, open again.
        assert!(k.admit(None).is_ok());
        stored::create(&admin, &new).unwrap();
        assert_eq!(k.admit(Some(&auth)).err().unwrap().error.status(), 401);
    }

    #[test]
    fn no_keys_means_open() {
        let k = Keys::new(&[]);
        assert_eq!(k.admit(None).unwrap().tenant(), "anonymous");
    }

    #[test]
    fn missing_or_wrong_key_is_401() {
        let k = keys();
        for h in [None, Some("Bearer nope"), Some("sk-a")] {
            assert_eq!(k.admit(h).err().unwrap().error.status(), 401, "{h:?}");
        }
        assert_eq!(k.admit(Some("Bearer sk-a")).unwrap().tenant(), "alice");
    }

    #[test]
    fn rate_limit_is_429_with_retry_after_and_headers() {
        let k = keys();
        // The quota allows a burst of 2, then one every 0.5 s.
        let _a = k.admit(Some("Bearer sk-a")).unwrap();
        let _b = k.admit(Some("Bearer sk-a")).unwrap();
        let r = k.admit(Some("Bearer sk-a")).err().unwrap();
        assert_eq!(r.error.status(), 429);
        assert_eq!(r.error.retry_after(), Some(1));
        assert!(r
            .headers
            .iter()
            .any(|(h, v)| *h == "x-ratelimit-remaining-requests" && v == "0"));
    }

    #[test]
    fn concurrency_limit_frees_on_drop() {
        let k = keys();
        let first = k.admit(Some("Bearer sk-b")).unwrap();
        assert_eq!(first.tenant(), "sk-b");
        assert_eq!(
            k.admit(Some("Bearer sk-b")).err().unwrap().error.status(),
            429
        );
        drop(first);
        assert!(k.admit(Some("Bearer sk-b")).is_ok());
    }
}
