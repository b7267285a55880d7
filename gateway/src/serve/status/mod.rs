//! The live status page: `GET /status` (and `GET /`) is one self-contained HTML page
//! (HTML, CSS and JS in the binary, no external asset) that fetches `GET /status.json`
//! every 2 s and re-renders it.
//!
//! Both need an admin key when keys are configured (`Authorization: Bearer KEY`, or
//! `?key=KEY` for a browser; the page sends the key it was opened with on to
//! `/status.json` in the header): no or an unknown key is a 401, a key that is not an
//! admin's a 403. An open gateway shows it to anyone.
//!
//! `/status.json`:
//!
//! ```text
//! {
//!   "object": "surge.status",
//!   "time": 1767225600.123,          // Unix seconds, the gateway's clock
//!   "uptime_seconds": 812.4,
//!   "draining": false,
//!   "window_seconds": 300.0,         // what the pools' `window` figures span: the last
//!                                    // 5 min (up to 10 s more), less just after start
//!   "pools": [{                      // by model name
//!     "model": "smollm2-135m-instruct", "device": "cpu",
//!     "workers": {"starting": 0, "ready": 1, "draining": 0, "failed": 0},
//!     "in_flight": 0, "queued": 0,
//!     "min_workers": 0, "max_workers": 4, "concurrency": 8,
//!     "desired": 1, "reason": "stable",  // the autoscaler's last decision (null
//!                                        // before its first tick)
//!     "stable_concurrency": 0.4, "panic_concurrency": 0.0,
//!     "waiting_for_room": false,
//!     "window": {                    // over `window_seconds`
//!       "requests": 12, "errors": 0,    // errors: answered with a 5xx
//!       "error_rate": 0.0,              // errors / requests; null without requests
//!       "ttft_count": 10,               // streamed requests that got a first token
//!       "ttft_p50_seconds": 0.042,      // null without any
//!       "ttft_p95_seconds": 0.31
//!     }
//!   }],
//!   "cold_starts": [                 // the last 20, newest first
//!     {"model": "...", "worker": 3, "seconds": 1.84, "at": 1767225012.5}
//!   ],
//!   "scale_events": [                // the last 20, newest first
//!     {"model": "...", "direction": "up", "reason": "panic", "workers": 1, "at": ...}
//!   ],
//!   "usage": {
//!     "source": "ledger",            // "ledger": the last 24 h of usage records;
//!                                    // "metrics": since start (metering off)
//!     "window_seconds": 86400.0,
//!     "total": {"requests": 12, "prompt_tokens": 340, "completion_tokens": 900,
//!               "audio_seconds": 0.0, "execution_seconds": 3.2, "cost_usd": 0.0041},
//!     "by_model": [{"model": "...", ...the same fields}],
//!     "error": null                  // why the ledger could not be read
//!   },
//!   "budget": {"cpu": {"capacity": 2.0, "used": 1.0, "workers": 1,   // as /admin/pools
//!              "cores": {"capacity": 2.0, "used": 1.0},
//!              "memory": {"capacity": 22215405568.0, "used": 165675008.0}}}
//! }
//! ```
//!
//! `execution_seconds` and `cost_usd` are null when metering is off (nothing is
//! billed). The windowed figures come from snapshots of the cumulative Prometheus
//! metrics ([`window`]); the events from the pool actors ([`Recent`]).

mod recent;
mod window;

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use pingora::proxy::Session;
use pingora::Result;
use prometheus::core::Collector;
use serde::Serialize;
use serde_json::Value;
use surge_protocol::error::ApiError;

pub use recent::{ColdStart, Recent, ScaleEvent};
pub use window::ModelWindow;

use super::metrics::GatewayMetrics;
use super::pool::PoolView;
use super::proxy::Gateway;
use super::reply::{self, authorization};
use super::spend::now_ms;
use crate::metering::ledger;
use crate::metering::query::{self, GroupBy, UsageQuery};

/// The page: HTML, its CSS and its JS in one file.
const PAGE: &str = include_str!("page.html");

/// What the page may load: itself and `/status.json`, nothing from elsewhere.
const CSP: &str = "default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; \
                   connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'";

/// Events shown of each kind.
const SHOWN: usize = 20;
/// The ledger's usage is summed over this long.
const USAGE_WINDOW_MS: i64 = 86_400_000;
/// ... and at most this often (the sum scans a day of records).
const USAGE_TTL: Duration = Duration::from_secs(5);

/// `GET /status` and `GET /`: the page.
pub async fn page(gw: &Gateway, session: &mut Session) -> Result<()> {
    if let Err(e) = authorize(gw, session) {
        return gw.reject(session, &e).await;
    }
    let headers = [
        ("Cache-Control", "no-store".to_string()),
        ("Content-Security-Policy", CSP.to_string()),
        ("X-Content-Type-Options", "nosniff".to_string()),
        // The URL may carry the key.
        ("Referrer-Policy", "no-referrer".to_string()),
    ];
    let ctype = "text/html; charset=utf-8";
    reply::write(session, 200, ctype, PAGE.as_bytes().to_vec(), &headers).await
}

/// `GET /status.json`.
pub async fn json(gw: &Gateway, session: &mut Session) -> Result<()> {
    if let Err(e) = authorize(gw, session) {
        return gw.reject(session, &e).await;
    }
    let body = serde_json::to_vec(&report(gw).await).expect("the status serialises");
    let headers = [("Cache-Control", "no-store".to_string())];
    reply::write(session, 200, "application/json", body, &headers).await
}

/// An admin key (header, else `?key=`), or an open gateway.
fn authorize(gw: &Gateway, session: &Session) -> std::result::Result<(), ApiError> {
    let header = match authorization(session) {
        Some(h) => Some(h.to_string()),
        None => query_key(session.req_header().uri.query()).map(|k| format!("Bearer {k}")),
    };
    match gw.keys.authenticate(header.as_deref())? {
        Some(t) if !t.admin => Err(ApiError::Forbidden(
            "The status page needs an admin key".into(),
        )),
        _ => Ok(()),
    }
}

/// The `key` parameter of a query string, percent-decoded.
fn query_key(query: Option<&str>) -> Option<String> {
    let v = query?.split('&').find_map(|p| p.strip_prefix("key="))?;
    let mut out = Vec::with_capacity(v.len());
    let mut bytes = v.bytes();
    while let Some(b) = bytes.next() {
        match b {
            b'%' => {
                let hex: Vec<u8> = bytes.by_ref().take(2).collect();
                let hex = std::str::from_utf8(&hex).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
            }
            b'+' => out.push(b' '),
            b => out.push(b),
        }
    }
    String::from_utf8(out).ok().filter(|k| !k.is_empty())
}

/// The whole `/status.json` document.
#[derive(Debug, Serialize)]
pub struct Report {
    pub object: &'static str,
    pub time: f64,
    pub uptime_seconds: f64,
    pub draining: bool,
    pub window_seconds: f64,
    pub pools: Vec<PoolStatus>,
    pub cold_starts: Vec<ColdStart>,
    pub scale_events: Vec<ScaleEvent>,
    pub usage: Usage,
    pub budget: Value,
}

#[derive(Debug, Serialize)]
pub struct PoolStatus {
    pub model: String,
    pub device: String,
    pub workers: WorkerCounts,
    pub in_flight: usize,
    pub queued: usize,
    pub min_workers: usize,
    pub max_workers: usize,
    pub concurrency: usize,
    pub desired: Option<usize>,
    pub reason: Option<&'static str>,
    pub stable_concurrency: Option<f64>,
    pub panic_concurrency: Option<f64>,
    pub waiting_for_room: bool,
    pub window: ModelWindow,
}

#[derive(Debug, Default, PartialEq, Serialize)]
pub struct WorkerCounts {
    pub starting: usize,
    pub ready: usize,
    pub draining: usize,
    pub failed: usize,
}

impl PoolStatus {
    fn new(v: PoolView, window: ModelWindow) -> PoolStatus {
        let count = |state: &str| v.workers.iter().filter(|w| w.state == state).count();
        PoolStatus {
            workers: WorkerCounts {
                starting: v.starting,
                ready: v.ready,
                draining: count("draining"),
                failed: count("failed"),
            },
            in_flight: v.in_flight,
            queued: v.queued,
            min_workers: v.min_workers,
            max_workers: v.max_workers,
            concurrency: v.concurrency,
            desired: v.desired,
            reason: v.reason,
            stable_concurrency: v.stable_concurrency,
            panic_concurrency: v.panic_concurrency,
            waiting_for_room: v.waiting_for_room,
            window,
            model: v.model,
            device: v.device,
        }
    }
}

/// Usage so far: from the ledger, or from the metrics when metering is off.
#[derive(Debug, Clone, Serialize)]
pub struct Usage {
    pub source: &'static str,
    pub window_seconds: f64,
    pub total: Figures,
    pub by_model: Vec<Figures>,
    pub error: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Figures {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    pub requests: u64,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub audio_seconds: f64,
    /// `None`: not billed (metering off).
    pub execution_seconds: Option<f64>,
    pub cost_usd: Option<f64>,
}

impl Figures {
    fn add(&mut self, o: &Figures) {
        self.requests += o.requests;
        self.prompt_tokens += o.prompt_tokens;
        self.completion_tokens += o.completion_tokens;
        self.audio_seconds += o.audio_seconds;
        let sum = |a: Option<f64>, b: Option<f64>| match (a, b) {
            (None, None) => None,
            (a, b) => Some(a.unwrap_or(0.0) + b.unwrap_or(0.0)),
        };
        self.execution_seconds = sum(self.execution_seconds, o.execution_seconds);
        self.cost_usd = sum(self.cost_usd, o.cost_usd);
    }

    /// One row of `/v1/usage`'s `data` (grouped by model).
    fn from_usage_row(row: &Value) -> Figures {
        let n = |k: &str| row[k].as_u64().unwrap_or(0);
        let f = |k: &str| row[k].as_f64().unwrap_or(0.0);
        Figures {
            model: Some(row["model"].as_str().unwrap_or("-").to_string()),
            requests: n("requests"),
            prompt_tokens: n("prompt_tokens"),
            completion_tokens: n("completion_tokens"),
            audio_seconds: f("audio_seconds"),
            execution_seconds: Some(f("execution_seconds")),
            cost_usd: Some(f("cost_usd")),
        }
    }
}

impl Usage {
    fn from_models(source: &'static str, window_seconds: f64, by_model: Vec<Figures>) -> Usage {
        let mut total = Figures::default();
        by_model.iter().for_each(|f| total.add(f));
        if source == "ledger" {
            total.execution_seconds = total.execution_seconds.or(Some(0.0));
            total.cost_usd = total.cost_usd.or(Some(0.0));
        }
        Usage {
            source,
            window_seconds,
            total,
            by_model,
            error: None,
        }
    }
}

/// The status as of now.
pub async fn report(gw: &Gateway) -> Report {
    let recent = &gw.pools.env.recent;
    let view = gw.pools.view().await;
    let now = Instant::now();
    let current = window::Sample::take(&gw.metrics, now);
    recent.keep_if_due(&current);
    let start = recent.window_start(now);
    let mut windows = window::between(&start, &current);
    let pools = view
        .pools
        .into_iter()
        .map(|v| {
            let w = windows.remove(&v.model).unwrap_or_default();
            PoolStatus::new(v, w)
        })
        .collect();
    Report {
        object: "surge.status",
        time: now_ms() as f64 / 1000.0,
        uptime_seconds: recent.uptime().as_secs_f64(),
        draining: gw.draining.load(Ordering::Relaxed),
        window_seconds: now.saturating_duration_since(start.at).as_secs_f64(),
        pools,
        cold_starts: recent.cold_starts(SHOWN),
        scale_events: recent.scale_events(SHOWN),
        usage: usage(gw).await,
        budget: view.budget,
    }
}

/// The usage figures, summed from the ledger at most once per [`USAGE_TTL`].
async fn usage(gw: &Gateway) -> Usage {
    let Some(ledger) = &gw.ledger else {
        let up = gw.pools.env.recent.uptime().as_secs_f64();
        return from_metrics(&gw.metrics, up);
    };
    let mut cached = gw.pools.env.recent.usage.lock().await;
    if let Some((at, u)) = cached.as_ref() {
        if at.elapsed() < USAGE_TTL {
            return u.clone();
        }
    }
    let path = ledger.path().to_path_buf();
    let read = tokio::task::spawn_blocking(move || {
        let conn = ledger::open_read_only(&path).map_err(|e| e.to_string())?;
        let end_ms = now_ms() + 1;
        let q = UsageQuery {
            tenant: None,
            start_ms: end_ms - USAGE_WINDOW_MS,
            end_ms,
            group_by: vec![GroupBy::Model],
        };
        query::usage(&conn, &q).map_err(|e| e.to_string())
    })
    .await
    .unwrap_or_else(|e| Err(format!("usage query: {e}")));
    let window = USAGE_WINDOW_MS as f64 / 1000.0;
    let u = match read {
        Ok(v) => {
            let rows = v["data"].as_array().map(Vec::as_slice).unwrap_or_default();
            let by_model = rows.iter().map(Figures::from_usage_row).collect();
            Usage::from_models("ledger", window, by_model)
        }
        Err(e) => Usage {
            error: Some(format!("reading the usage ledger: {e}")),
            ..Usage::from_models("ledger", window, Vec::new())
        },
    };
    *cached = Some((Instant::now(), u.clone()));
    u
}

/// Usage since the start from the request and token counters (metering off: nothing
/// billed, so no execution seconds or cost).
fn from_metrics(m: &GatewayMetrics, uptime_seconds: f64) -> Usage {
    use prometheus::proto::{Metric, MetricFamily};
    let mut by: BTreeMap<String, Figures> = BTreeMap::new();
    let mut add = |families: Vec<MetricFamily>, f: &dyn Fn(&mut Figures, &Metric, f64)| {
        for s in families.iter().flat_map(|f| f.get_metric()) {
            let model = window::label(s, "model").unwrap_or("-");
            let fig = by.entry(model.to_string()).or_insert_with(|| Figures {
                model: Some(model.to_string()),
                ..Figures::default()
            });
            f(fig, s, s.get_counter().get_value());
        }
    };
    add(m.requests.collect(), &|fig, _, v| fig.requests += v as u64);
    add(
        m.tokens.collect(),
        &|fig, s, v| match window::label(s, "kind") {
            Some("prompt") => fig.prompt_tokens += v as u64,
            _ => fig.completion_tokens += v as u64,
        },
    );
    add(m.audio_seconds.collect(), &|fig, _, v| {
        fig.audio_seconds += v
    });
    Usage::from_models("metrics", uptime_seconds, by.into_values().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_comes_from_the_query_string_decoded() {
        assert_eq!(query_key(Some("key=sk-abc")).as_deref(), Some("sk-abc"));
        assert_eq!(
            query_key(Some("x=1&key=sk%2Da%2bb&y=2")).as_deref(),
            Some("sk-a+b")
        );
        assert_eq!(query_key(Some("key=")), None);
        assert_eq!(query_key(Some("keys=sk")), None);
        assert_eq!(query_key(Some("key=%zz")), None);
        assert_eq!(query_key(None), None);
    }

    #[test]
    fn usage_from_metrics_sums_by_model_without_cost() {
        let m = GatewayMetrics::new().unwrap();
        m.requests
            .with_label_values(&["a", "chat", "200"])
            .inc_by(3);
        m.requests.with_label_values(&["a", "chat", "503"]).inc();
        m.requests
            .with_label_values(&["b", "completions", "200"])
            .inc();
        m.tokens.with_label_values(&["a", "prompt"]).inc_by(30);
        m.tokens.with_label_values(&["a", "completion"]).inc_by(70);
        let u = from_metrics(&m, 12.0);
        assert_eq!((u.source, u.window_seconds), ("metrics", 12.0));
        assert_eq!(u.by_model.len(), 2);
        let a = &u.by_model[0];
        assert_eq!(a.model.as_deref(), Some("a"));
        assert_eq!(
            (a.requests, a.prompt_tokens, a.completion_tokens),
            (4, 30, 70)
        );
        assert_eq!(u.total.requests, 5);
        assert_eq!(u.total.execution_seconds, None);
        assert_eq!(u.total.cost_usd, None);
    }

    #[test]
    fn usage_from_the_ledger_rows_totals_them() {
        let rows = serde_json::json!([
            {"model": "a", "requests": 2, "prompt_tokens": 10, "completion_tokens": 20,
             "audio_seconds": 0.0, "execution_seconds": 1.5, "cost_usd": 0.25},
            {"model": "b", "requests": 1, "prompt_tokens": 0, "completion_tokens": 0,
             "audio_seconds": 3.0, "execution_seconds": 0.5, "cost_usd": 0.5},
        ]);
        let by = rows
            .as_array()
            .unwrap()
            .iter()
            .map(Figures::from_usage_row)
            .collect();
        let u = Usage::from_models("ledger", 86400.0, by);
        assert_eq!(u.total.requests, 3);
        assert_eq!(u.total.audio_seconds, 3.0);
        assert_eq!(u.total.execution_seconds, Some(2.0));
        assert_eq!(u.total.cost_usd, Some(0.75));
        let empty = Usage::from_models("ledger", 86400.0, Vec::new());
        assert_eq!(empty.total.cost_usd, Some(0.0));
    }

    #[test]
    fn the_page_is_self_contained() {
        for external in ["http://", "https://", "//cdn", "@import", "url("] {
            assert!(!PAGE.contains(external), "the page loads {external}");
        }
        assert!(PAGE.contains("status.json"));
    }
}
