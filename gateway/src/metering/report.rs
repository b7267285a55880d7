//! `surge usage report`: what serving cost as pay-per-execution, against what the same
//! traffic would have cost on reserved workers — the question scale-to-zero answers.
//!
//! Three figures per model and device, all over one window:
//! - `pay_per_execution_usd`: the recorded `cost_usd` of every request (what the
//!   tenants were billed);
//! - `worker_capacity_usd`: every worker-second the capacity ledger holds (starting,
//!   busy, idle, draining) at the reserved hourly price: the workers that actually ran;
//! - `reserved_peak_usd`: the peak number of workers alive at once, reserved around the
//!   clock for the whole window: what a fixed fleet sized for the peak would cost.
//!
//! Spans are written when a phase ends, so a report taken while a gateway runs does
//! not count the current phase of its live workers.

use std::collections::BTreeMap;

use rusqlite::{params, Connection, OptionalExtension};
use serde::Serialize;

use super::dates::rfc3339;
use super::prices::Billing;

#[path = "report_render.rs"]
mod render;
pub use render::{render_csv, render_text};

/// The whole report (`--json` prints it as is).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    /// The window, `[since, until)`, in RFC 3339 and in milliseconds since the epoch.
    pub since: String,
    pub until: String,
    pub since_ms: i64,
    pub until_ms: i64,
    pub window_seconds: f64,
    /// The price list the reserved prices come from (the most recently used one).
    pub price_version: Option<String>,
    pub usage: Vec<UsageRow>,
    pub capacity: Vec<CapacityRow>,
    pub comparison: Comparison,
    /// What a reader should know to trust the figures (missing prices, empty ledger).
    pub notes: Vec<String>,
}

/// One tenant's use of one model in the window.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct UsageRow {
    pub tenant: String,
    pub model: String,
    pub requests: i64,
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    pub audio_seconds: f64,
    pub execution_seconds: f64,
    pub queue_seconds: f64,
    pub cold_start_seconds: f64,
    pub cost_usd: f64,
}

/// The workers of one model on one device, clipped to the window.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct CapacityRow {
    pub model: String,
    pub device: String,
    pub starting_seconds: f64,
    pub busy_seconds: f64,
    pub idle_seconds: f64,
    pub draining_seconds: f64,
    /// All four phases.
    pub worker_seconds: f64,
    /// The most workers alive at one instant.
    pub peak_workers: u32,
    /// Time in the window with no worker alive: scaled to zero.
    pub zero_worker_seconds: f64,
}

/// The three prices of the window's traffic.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Costs {
    pub pay_per_execution_usd: f64,
    pub worker_capacity_usd: f64,
    pub reserved_peak_usd: f64,
    pub reserved_peak_usd_per_day: f64,
    /// Worker-seconds in the `idle` phase: paid for by reserved pricing, not by requests.
    pub idle_worker_seconds: f64,
}

impl Costs {
    fn add(&mut self, o: &Costs) {
        self.pay_per_execution_usd += o.pay_per_execution_usd;
        self.worker_capacity_usd += o.worker_capacity_usd;
        self.reserved_peak_usd += o.reserved_peak_usd;
        self.reserved_peak_usd_per_day += o.reserved_peak_usd_per_day;
        self.idle_worker_seconds += o.idle_worker_seconds;
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ComparisonRow {
    pub model: String,
    pub device: String,
    /// The reserved price of one worker for an hour (0 without a price).
    pub reserved_worker_hour: f64,
    #[serde(flatten)]
    pub costs: Costs,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Comparison {
    pub rows: Vec<ComparisonRow>,
    /// The rows summed: each model/device reserved at its own peak.
    pub total: Costs,
}

/// The report over `[since_ms, until_ms)`; `since_ms` defaults to the ledger's earliest
/// request or span (an empty ledger gives an empty window).
pub fn report(conn: &Connection, since_ms: Option<i64>, until_ms: i64) -> rusqlite::Result<Report> {
    let mut notes = Vec::new();
    let since_ms = match since_ms {
        Some(s) => s,
        None => {
            let earliest: Option<i64> = conn.query_row(
                "SELECT MIN(t) FROM (SELECT MIN(time_ms) AS t FROM usage
                 UNION ALL SELECT MIN(start_ms) FROM worker_spans)",
                [],
                |r| r.get(0),
            )?;
            earliest.unwrap_or_else(|| {
                notes.push("The ledger holds no usage and no worker spans yet.".into());
                until_ms
            })
        }
    }
    .min(until_ms);
    let window_seconds = (until_ms - since_ms) as f64 / 1000.0;
    let usage = usage_rows(conn, since_ms, until_ms)?;
    let capacity = capacity_rows(conn, since_ms, until_ms)?;
    let (price_version, billing) = price_list(conn, &mut notes)?;

    // Every model/device that was billed or ran a worker.
    let mut rows: BTreeMap<(String, String), ComparisonRow> = BTreeMap::new();
    let mut stmt = conn.prepare(
        "SELECT model, device, SUM(cost_usd) FROM usage WHERE time_ms >= ?1 AND time_ms < ?2
         GROUP BY model, device",
    )?;
    let mut billed = stmt.query(params![since_ms, until_ms])?;
    while let Some(r) = billed.next()? {
        let (model, device): (String, String) = (r.get(0)?, r.get(1)?);
        comparison_row(&mut rows, billing.as_ref(), &model, &device)
            .costs
            .pay_per_execution_usd = r.get(2)?;
    }
    for c in &capacity {
        let cmp = comparison_row(&mut rows, billing.as_ref(), &c.model, &c.device);
        let rate = cmp.reserved_worker_hour;
        let peak = f64::from(c.peak_workers);
        cmp.costs.worker_capacity_usd = c.worker_seconds / 3600.0 * rate;
        cmp.costs.reserved_peak_usd = peak * window_seconds / 3600.0 * rate;
        cmp.costs.reserved_peak_usd_per_day = peak * 24.0 * rate;
        cmp.costs.idle_worker_seconds = c.idle_seconds;
        if rate == 0.0 && billing.is_some() {
            notes.push(format!(
                "No reserved_worker_hour price for {} on {}: its reserved costs are 0.",
                c.model, c.device
            ));
        }
    }
    let mut comparison = Comparison {
        rows: rows.into_values().collect(),
        total: Costs::default(),
    };
    for r in &comparison.rows {
        comparison.total.add(&r.costs);
    }
    Ok(Report {
        since: rfc3339(since_ms),
        until: rfc3339(until_ms),
        since_ms,
        until_ms,
        window_seconds,
        price_version,
        usage,
        capacity,
        comparison,
        notes,
    })
}

/// The row of `model` on `device`, created with its reserved price on first use.
fn comparison_row<'a>(
    rows: &'a mut BTreeMap<(String, String), ComparisonRow>,
    billing: Option<&Billing>,
    model: &str,
    device: &str,
) -> &'a mut ComparisonRow {
    rows.entry((model.to_string(), device.to_string()))
        .or_insert_with(|| ComparisonRow {
            model: model.to_string(),
            device: device.to_string(),
            reserved_worker_hour: billing
                .and_then(|b| b.price(model, device))
                .map_or(0.0, |p| p.reserved_worker_hour),
            costs: Costs::default(),
        })
}

fn usage_rows(conn: &Connection, since_ms: i64, until_ms: i64) -> rusqlite::Result<Vec<UsageRow>> {
    let mut stmt = conn.prepare(
        "SELECT tenant, model, COUNT(*), SUM(prompt_tokens), SUM(completion_tokens),
         SUM(audio_seconds), SUM(execution_seconds), SUM(queue_seconds),
         SUM(cold_start_seconds), SUM(cost_usd)
         FROM usage WHERE time_ms >= ?1 AND time_ms < ?2
         GROUP BY tenant, model ORDER BY tenant, model",
    )?;
    let rows = stmt.query_map(params![since_ms, until_ms], |r| {
        Ok(UsageRow {
            tenant: r.get(0)?,
            model: r.get(1)?,
            requests: r.get(2)?,
            prompt_tokens: r.get(3)?,
            completion_tokens: r.get(4)?,
            audio_seconds: r.get(5)?,
            execution_seconds: r.get(6)?,
            queue_seconds: r.get(7)?,
            cold_start_seconds: r.get(8)?,
            cost_usd: r.get(9)?,
        })
    })?;
    rows.collect()
}

/// Per model/device: its capacity row, and each worker's life clipped to the window.
type Groups = BTreeMap<(String, String), (CapacityRow, Vec<(i64, i64)>)>;

fn group(
    groups: &mut Groups,
    model: String,
    device: String,
) -> &mut (CapacityRow, Vec<(i64, i64)>) {
    groups
        .entry((model.clone(), device.clone()))
        .or_insert_with(|| {
            let row = CapacityRow {
                model,
                device,
                ..CapacityRow::default()
            };
            (row, Vec::new())
        })
}

fn capacity_rows(
    conn: &Connection,
    since_ms: i64,
    until_ms: i64,
) -> rusqlite::Result<Vec<CapacityRow>> {
    let mut groups: Groups = BTreeMap::new();
    // Each span's part inside the window.
    let mut stmt = conn.prepare(
        "SELECT model, device, phase, SUM(MIN(end_ms, ?2) - MAX(start_ms, ?1))
         FROM worker_spans WHERE end_ms > ?1 AND start_ms < ?2 AND end_ms > start_ms
         GROUP BY model, device, phase",
    )?;
    let mut phases = stmt.query(params![since_ms, until_ms])?;
    while let Some(r) = phases.next()? {
        let (row, _) = group(&mut groups, r.get(0)?, r.get(1)?);
        let phase: String = r.get(2)?;
        let seconds = r.get::<_, i64>(3)? as f64 / 1000.0;
        match phase.as_str() {
            "starting" => row.starting_seconds += seconds,
            "busy" => row.busy_seconds += seconds,
            "idle" => row.idle_seconds += seconds,
            _ => row.draining_seconds += seconds,
        }
        row.worker_seconds += seconds;
    }
    // A worker's spans are consecutive: it is alive from its first start to its last end.
    let mut stmt = conn.prepare(
        "SELECT model, device, MIN(start_ms), MAX(end_ms) FROM worker_spans
         GROUP BY worker, model, device HAVING MAX(end_ms) > ?1 AND MIN(start_ms) < ?2",
    )?;
    let mut lives = stmt.query(params![since_ms, until_ms])?;
    while let Some(r) = lives.next()? {
        let (start, end): (i64, i64) = (r.get(2)?, r.get(3)?);
        let (start, end) = (start.max(since_ms), end.min(until_ms));
        if end > start {
            group(&mut groups, r.get(0)?, r.get(1)?)
                .1
                .push((start, end));
        }
    }
    Ok(groups
        .into_values()
        .map(|(mut row, lives)| {
            let (peak, zero_ms) = sweep(&lives, since_ms, until_ms);
            row.peak_workers = peak;
            row.zero_worker_seconds = zero_ms as f64 / 1000.0;
            row
        })
        .collect())
}

/// The most of `lives` (clipped `[start, end)` intervals) overlapping at once, and the
/// milliseconds of `[since, until)` covered by none. A worker ending when another starts
/// does not overlap it (a replacement is not two workers).
fn sweep(lives: &[(i64, i64)], since_ms: i64, until_ms: i64) -> (u32, i64) {
    let mut events: Vec<(i64, i32)> = lives
        .iter()
        .flat_map(|&(start, end)| [(start, 1), (end, -1)])
        .collect();
    // Ends (-1) sort before starts (+1) at the same instant.
    events.sort_unstable();
    let (mut alive, mut peak, mut zero_ms, mut last) = (0i32, 0i32, 0i64, since_ms);
    for (t, delta) in events {
        if alive == 0 {
            zero_ms += t - last;
        }
        alive += delta;
        peak = peak.max(alive);
        last = t;
    }
    zero_ms += until_ms - last;
    (peak as u32, zero_ms)
}

/// The most recently used price list, parsed; a note where there is none to use.
fn price_list(
    conn: &Connection,
    notes: &mut Vec<String>,
) -> rusqlite::Result<(Option<String>, Option<Billing>)> {
    let latest: Option<(String, String)> = conn
        .query_row(
            "SELECT version, billing FROM prices ORDER BY first_used_ms DESC LIMIT 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    let Some((version, json)) = latest else {
        notes.push(
            "No price list in the ledger (surge serve stores the one it runs with): \
             reserved costs are 0."
                .into(),
        );
        return Ok((None, None));
    };
    match serde_json::from_str::<Billing>(&json) {
        Ok(b) => Ok((Some(version), Some(b))),
        Err(e) => {
            notes.push(format!(
                "Price list '{version}' could not be read ({e}): reserved costs are 0."
            ));
            Ok((Some(version), None))
        }
    }
}

#[cfg(test)]
#[path = "report_tests.rs"]
mod tests;
