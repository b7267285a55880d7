//! `surge usage report`: pay-per-execution against reserved capacity, from the ledger.
//! Reads the ledger read-only, so it can run beside a live `surge serve`.

use std::path::Path;

use super::LedgerArgs;
use clap::{Args, Subcommand};

use crate::metering::dates::{self, parse_time};
use crate::metering::{ledger, report};

#[derive(Args, Debug)]
pub struct UsageCommand {
    #[command(flatten)]
    ledger: LedgerArgs,
    #[command(subcommand)]
    action: Action,
}

#[derive(Subcommand, Debug)]
enum Action {
    /// What serving cost pay-per-execution, against reserved workers.
    ///
    /// Usage per tenant and model, worker capacity per model and device, and the same
    /// traffic priced three ways: as billed, on the workers that ran, reserved at peak.
    Report {
        /// Start of the window: unix seconds, YYYY-MM-DD (UTC), an RFC 3339 date-time, or
        /// a duration back from now (90m, 24h, 7d). Default: the ledger's first record.
        #[arg(long, value_name = "T")]
        since: Option<String>,
        /// End of the window, in the same forms (default: now).
        #[arg(long, value_name = "T")]
        until: Option<String>,
        /// Print the report as JSON.
        #[arg(long, conflicts_with = "csv")]
        json: bool,
        /// Print the report as CSV (section,tenant,model,device,metric,value).
        #[arg(long)]
        csv: bool,
    },
}

pub fn run(cmd: UsageCommand) -> i32 {
    match run_inner(cmd) {
        Ok(text) => {
            print!("{text}");
            0
        }
        Err(e) => {
            eprintln!("error: {e}");
            1
        }
    }
}

/// The window `[since, until)` in milliseconds, from the command's arguments at `now_ms`.
fn window(
    since: Option<&str>,
    until: Option<&str>,
    now_ms: i64,
) -> Result<(Option<i64>, i64), String> {
    let until_ms = until
        .map(|t| parse_time(t, now_ms).map_err(|e| format!("--until: {e}")))
        .transpose()?
        .unwrap_or(now_ms);
    let since_ms = since
        .map(|t| parse_time(t, now_ms).map_err(|e| format!("--since: {e}")))
        .transpose()?;
    if let Some(s) = since_ms {
        if s >= until_ms {
            return Err(format!(
                "--since ({}) must be before --until ({})",
                dates::rfc3339(s),
                dates::rfc3339(until_ms)
            ));
        }
    }
    Ok((since_ms, until_ms))
}

/// The report as text, JSON or CSV, from the ledger at `path`.
fn report_at(
    path: &Path,
    window: (Option<i64>, i64),
    json: bool,
    csv: bool,
) -> Result<String, String> {
    // Opening read-only never creates the file: say where it was looked for instead.
    if !path.is_file() {
        return Err(format!(
            "no ledger at {} (surge serve creates it; point --data-dir or SURGE_DATA_DIR, or \
             --home or SURGE_HOME, at the gateway's)",
            path.display()
        ));
    }
    let conn = ledger::open_read_only(path).map_err(|e| e.to_string())?;
    let r = report::report(&conn, window.0, window.1)
        .map_err(|e| format!("ledger {}: {e}", path.display()))?;
    Ok(if json {
        let mut text = serde_json::to_string_pretty(&r).map_err(|e| e.to_string())?;
        text.push('\n');
        text
    } else if csv {
        report::render_csv(&r)
    } else {
        report::render_text(&r)
    })
}

fn run_inner(cmd: UsageCommand) -> Result<String, String> {
    let path = cmd.ledger.path();
    match cmd.action {
        Action::Report {
            since,
            until,
            json,
            csv,
        } => {
            let w = window(since.as_deref(), until.as_deref(), dates::now_ms())?;
            report_at(&path, w, json, csv)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_796_428_800_000;

    #[test]
    fn windows_from_arguments() {
        assert_eq!(window(None, None, NOW), Ok((None, NOW)));
        assert_eq!(
            window(Some("24h"), None, NOW),
            Ok((Some(NOW - 86_400_000), NOW))
        );
        assert_eq!(
            window(Some("2026-12-01"), Some("1d"), NOW),
            Ok((Some(NOW - 4 * 86_400_000), NOW - 86_400_000))
        );
        let e = window(Some("1h"), Some("2h"), NOW).unwrap_err();
        assert!(e.contains("must be before --until"), "{e}");
        let e = window(Some("last tuesday"), None, NOW).unwrap_err();
        assert!(e.starts_with("--since:") && e.contains("7d"), "{e}");
        let e = window(None, Some("2026-02-30"), NOW).unwrap_err();
        assert!(e.starts_with("--until:"), "{e}");
    }

    #[test]
    fn a_missing_ledger_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("data").join("ledger.db");
        let e = report_at(&path, (None, NOW), false, false).unwrap_err();
        assert!(e.contains(&path.display().to_string()), "{e}");
        assert!(!path.exists(), "a report creates nothing");
    }

    /// A ledger written and closed by `surge serve` (WAL files gone) reads back
    /// read-only in every format.
    #[test]
    fn a_closed_ledger_reports_in_every_format() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ledger.db");
        let conn = ledger::open(&path).unwrap();
        conn.execute(
            "INSERT INTO worker_spans VALUES ('w', 'm', 'cpu', 'busy', ?1, ?2)",
            [NOW - 60_000, NOW],
        )
        .unwrap();
        drop(conn);
        let text = report_at(&path, (None, NOW), false, false).unwrap();
        assert!(text.contains("Capacity"), "{text}");
        let json = report_at(&path, (None, NOW), true, false).unwrap();
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(v["capacity"][0]["busy_seconds"], 60.0);
        let csv = report_at(&path, (None, NOW), false, true).unwrap();
        assert!(csv.contains("capacity,,m,cpu,busy_seconds,60\n"), "{csv}");
    }
}
