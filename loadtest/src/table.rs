//! The summary printed at the end of a run: one row for the whole run, each class and
//! each phase; latencies in milliseconds, then errors by kind and the server's side.

use std::fmt::Write;

use crate::report::{Group, Report};
use crate::stats::Summary;

/// The table as text (stdout).
pub fn render(r: &Report) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{} → {}: {} planned, {} sent in {:.1} s ({} schedule, {:.1} s)",
        r.name,
        r.target,
        r.planned,
        r.totals.sent,
        r.wall_s,
        r.schedule.kind,
        r.schedule.duration_s
    );
    if r.interrupted {
        let _ = writeln!(s, "interrupted by Ctrl-C: partial results");
    }
    let head = [
        "group", "sent", "ok", "err", "err%", "drop", "req/s", "tok/s", "ttft p50", "p95", "p99",
        "itl p50", "p95", "e2e p50", "p90", "p95", "p99", "max", "goodput",
    ];
    let mut rows: Vec<Vec<String>> = vec![head.iter().map(|h| h.to_string()).collect()];
    rows.push(row("total", &r.totals));
    for g in &r.classes {
        rows.push(row(&format!("class {}", g.name), g));
    }
    if r.phases.len() > 1 {
        for g in &r.phases {
            rows.push(row(&format!("phase {}", g.name), g));
        }
    }
    let widths: Vec<usize> = (0..head.len())
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    for (i, row) in rows.iter().enumerate() {
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .enumerate()
            .map(|(c, (cell, w))| {
                if c == 0 {
                    format!("{cell:<w$}")
                } else {
                    format!("{cell:>w$}")
                }
            })
            .collect();
        let _ = writeln!(s, "{}", line.join("  ").trim_end());
        if i == 0 {
            let _ = writeln!(
                s,
                "{}",
                "-".repeat(widths.iter().sum::<usize>() + 2 * (widths.len() - 1))
            );
        }
    }
    let _ = writeln!(s, "latencies in ms from the intended send time; goodput = share of sent requests that met the SLO");
    if !r.totals.errors_by_kind.is_empty() {
        let kinds: Vec<String> = r
            .totals
            .errors_by_kind
            .iter()
            .map(|(k, n)| format!("{k}: {n}"))
            .collect();
        let _ = writeln!(s, "errors: {}", kinds.join(", "));
    }
    if let Some(lag) = r.totals.send_lag.p99.filter(|l| *l > 0.05) {
        let _ = writeln!(
            s,
            "warning: the client sent 1% of requests more than {:.0} ms late (busy machine?)",
            lag * 1e3
        );
    }
    match &r.server {
        Some(v) => {
            let _ = writeln!(
                s,
                "server: cold starts {}, workers ready max {}, starting max {}, queue depth max {}, rejections {}",
                v.cold_starts, v.max_workers_ready, v.max_workers_starting, v.max_queue_depth, v.rejections
            );
        }
        None => {
            let _ = writeln!(s, "server: no surge /metrics at the target");
        }
    }
    s
}

fn row(name: &str, g: &Group) -> Vec<String> {
    let ms = |s: &Summary, f: fn(&Summary) -> Option<f64>| {
        f(s).map_or("-".to_string(), |x| format!("{:.0}", x * 1e3))
    };
    vec![
        name.to_string(),
        g.sent.to_string(),
        g.ok.to_string(),
        g.errors.to_string(),
        format!("{:.1}", g.error_rate * 100.0),
        g.dropped.to_string(),
        format!("{:.2}", g.rps),
        format!("{:.1}", g.tok_s),
        ms(&g.ttft, |s| s.p50),
        ms(&g.ttft, |s| s.p95),
        ms(&g.ttft, |s| s.p99),
        ms(&g.itl, |s| s.p50),
        ms(&g.itl, |s| s.p95),
        ms(&g.e2e, |s| s.p50),
        ms(&g.e2e, |s| s.p90),
        ms(&g.e2e, |s| s.p95),
        ms(&g.e2e, |s| s.p99),
        ms(&g.e2e, |s| s.max),
        format!("{:.1}%", g.goodput * 100.0),
    ]
}
