//! The report for people (aligned tables) and for spreadsheets (one CSV).

use super::{Costs, Report};

/// Seconds, to a tenth.
fn secs(v: f64) -> String {
    format!("{v:.1}")
}

/// USD to a millionth: single requests cost fractions of a cent.
fn usd(v: f64) -> String {
    format!("{v:.6}")
}

/// `rows` under `headers`, columns padded to their widest cell; the first `text`
/// columns are left-aligned, the numbers after them right-aligned.
fn table(headers: &[&str], text: usize, rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .enumerate()
            .map(|(i, (c, &w))| {
                if i < text {
                    format!("{c:<w$}")
                } else {
                    format!("{c:>w$}")
                }
            })
            .collect();
        format!("{}\n", padded.join("  ").trim_end())
    };
    let mut out = line(headers.to_vec());
    for row in rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out
}

fn cost_cells(c: &Costs) -> [String; 5] {
    [
        usd(c.pay_per_execution_usd),
        usd(c.worker_capacity_usd),
        usd(c.reserved_peak_usd),
        usd(c.reserved_peak_usd_per_day),
        secs(c.idle_worker_seconds),
    ]
}

/// The report as aligned tables: usage, capacity, then the cost comparison.
pub fn render_text(r: &Report) -> String {
    let mut out = format!(
        "Usage report {} to {} ({:.2} h); reserved prices from {}\n",
        r.since,
        r.until,
        r.window_seconds / 3600.0,
        r.price_version
            .as_deref()
            .map_or("no price list".to_string(), |v| format!("price list '{v}'"))
    );
    out.push_str("\nUsage (pay-per-execution, as billed)\n");
    let usage: Vec<Vec<String>> = r
        .usage
        .iter()
        .map(|u| {
            vec![
                u.tenant.clone(),
                u.model.clone(),
                u.requests.to_string(),
                u.prompt_tokens.to_string(),
                u.completion_tokens.to_string(),
                secs(u.audio_seconds),
                secs(u.execution_seconds),
                secs(u.queue_seconds),
                secs(u.cold_start_seconds),
                usd(u.cost_usd),
            ]
        })
        .collect();
    out.push_str(&table(
        &[
            "TENANT",
            "MODEL",
            "REQUESTS",
            "PROMPT",
            "COMPLETION",
            "AUDIO_S",
            "EXEC_S",
            "QUEUE_S",
            "COLD_S",
            "COST_USD",
        ],
        2,
        &usage,
    ));
    out.push_str("\nCapacity (worker-seconds by phase)\n");
    let capacity: Vec<Vec<String>> = r
        .capacity
        .iter()
        .map(|c| {
            vec![
                c.model.clone(),
                c.device.clone(),
                secs(c.starting_seconds),
                secs(c.busy_seconds),
                secs(c.idle_seconds),
                secs(c.draining_seconds),
                secs(c.worker_seconds),
                c.peak_workers.to_string(),
                secs(c.zero_worker_seconds),
            ]
        })
        .collect();
    out.push_str(&table(
        &[
            "MODEL",
            "DEVICE",
            "STARTING",
            "BUSY",
            "IDLE",
            "DRAINING",
            "TOTAL",
            "PEAK",
            "ZERO_WORKER_S",
        ],
        2,
        &capacity,
    ));
    out.push_str("\nServerless vs reserved (USD)\n");
    let mut comparison: Vec<Vec<String>> = r
        .comparison
        .rows
        .iter()
        .map(|c| {
            let mut cells = vec![
                c.model.clone(),
                c.device.clone(),
                usd(c.reserved_worker_hour),
            ];
            cells.extend(cost_cells(&c.costs));
            cells
        })
        .collect();
    let mut total = vec!["total".to_string(), String::new(), String::new()];
    total.extend(cost_cells(&r.comparison.total));
    comparison.push(total);
    out.push_str(&table(
        &[
            "MODEL",
            "DEVICE",
            "WORKER_HOUR",
            "PAY_PER_EXECUTION",
            "WORKER_CAPACITY",
            "RESERVED_PEAK",
            "RESERVED_PEAK/DAY",
            "IDLE_S",
        ],
        2,
        &comparison,
    ));
    if !r.notes.is_empty() {
        out.push_str("\nNotes\n");
        for n in &r.notes {
            out.push_str(&format!("- {n}\n"));
        }
    }
    out
}

/// A CSV field, quoted where it must be.
fn field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// The report as one long CSV: `section,tenant,model,device,metric,value`, one figure a
/// line, so every section shares one header and a pivot table can take it as it is.
pub fn render_csv(r: &Report) -> String {
    let mut out = String::from("section,tenant,model,device,metric,value\n");
    let mut put =
        |section: &str, tenant: &str, model: &str, device: &str, metric: &str, value: String| {
            let cells = [section, tenant, model, device, metric, &value].map(field);
            out.push_str(&cells.join(","));
            out.push('\n');
        };
    put("window", "", "", "", "since", r.since.clone());
    put("window", "", "", "", "until", r.until.clone());
    put(
        "window",
        "",
        "",
        "",
        "seconds",
        r.window_seconds.to_string(),
    );
    put(
        "window",
        "",
        "",
        "",
        "price_version",
        r.price_version.clone().unwrap_or_default(),
    );
    for u in &r.usage {
        let (t, m) = (u.tenant.as_str(), u.model.as_str());
        put("usage", t, m, "", "requests", u.requests.to_string());
        put(
            "usage",
            t,
            m,
            "",
            "prompt_tokens",
            u.prompt_tokens.to_string(),
        );
        put(
            "usage",
            t,
            m,
            "",
            "completion_tokens",
            u.completion_tokens.to_string(),
        );
        put(
            "usage",
            t,
            m,
            "",
            "audio_seconds",
            u.audio_seconds.to_string(),
        );
        put(
            "usage",
            t,
            m,
            "",
            "execution_seconds",
            u.execution_seconds.to_string(),
        );
        put(
            "usage",
            t,
            m,
            "",
            "queue_seconds",
            u.queue_seconds.to_string(),
        );
        put(
            "usage",
            t,
            m,
            "",
            "cold_start_seconds",
            u.cold_start_seconds.to_string(),
        );
        put("usage", t, m, "", "cost_usd", u.cost_usd.to_string());
    }
    for c in &r.capacity {
        let (m, d) = (c.model.as_str(), c.device.as_str());
        put(
            "capacity",
            "",
            m,
            d,
            "starting_seconds",
            c.starting_seconds.to_string(),
        );
        put(
            "capacity",
            "",
            m,
            d,
            "busy_seconds",
            c.busy_seconds.to_string(),
        );
        put(
            "capacity",
            "",
            m,
            d,
            "idle_seconds",
            c.idle_seconds.to_string(),
        );
        put(
            "capacity",
            "",
            m,
            d,
            "draining_seconds",
            c.draining_seconds.to_string(),
        );
        put(
            "capacity",
            "",
            m,
            d,
            "worker_seconds",
            c.worker_seconds.to_string(),
        );
        put(
            "capacity",
            "",
            m,
            d,
            "peak_workers",
            c.peak_workers.to_string(),
        );
        put(
            "capacity",
            "",
            m,
            d,
            "zero_worker_seconds",
            c.zero_worker_seconds.to_string(),
        );
    }
    let costs = |c: &Costs| {
        [
            ("pay_per_execution_usd", c.pay_per_execution_usd),
            ("worker_capacity_usd", c.worker_capacity_usd),
            ("reserved_peak_usd", c.reserved_peak_usd),
            ("reserved_peak_usd_per_day", c.reserved_peak_usd_per_day),
            ("idle_worker_seconds", c.idle_worker_seconds),
        ]
    };
    for c in &r.comparison.rows {
        let (m, d) = (c.model.as_str(), c.device.as_str());
        put(
            "comparison",
            "",
            m,
            d,
            "reserved_worker_hour",
            c.reserved_worker_hour.to_string(),
        );
        for (metric, v) in costs(&c.costs) {
            put("comparison", "", m, d, metric, v.to_string());
        }
    }
    for (metric, v) in costs(&r.comparison.total) {
        put("total", "", "", "", metric, v.to_string());
    }
    for n in &r.notes {
        put("note", "", "", "", "note", n.clone());
    }
    out
}
