//! 4. Metering: what metering (a usage record per request handed to the SQLite ledger's
//!    writer thread, budgets, the billed Prometheus counters) adds to a request. Two
//!    gateways side by side, alike but for `--no-metering`, measured exactly as the
//!    overhead is ([`crate::overhead::compare`]), so the two comparisons read alike.
//!
//! Each gateway gets its own scratch `--data-dir` (removed at the end): they must not
//! share a ledger, and a ledger left from earlier runs would make the metered gateway's
//! writes depend on its size. The scratch directories are under `$TMPDIR` (default
//! `/tmp`); where that is a tmpfs the ledger's writes cost less than on the data
//! directory's disk, so point `TMPDIR` at that disk for a faithful figure.

use std::time::Duration;

use serde_json::{json, Value};
use surge_loadtest::bench::{metrics, Deadline};
use surge_loadtest::server::stop;
use surge_loadtest::speech::TempDir;
use surge_protocol::prom;

use crate::overhead::{on_off_json, print_comparison, side_by_side, Target};
use crate::surge::spawn_gateway;
use crate::Args;

/// The figures of the metered gateway (`on`) and the `--no-metering` one (`off`).
pub struct Metering {
    on: Target,
    off: Target,
    /// Chats sent to each gateway (warm-up included).
    requests: usize,
    /// `surge_usage_records_total{outcome="recorded"}` of each gateway at the end: the
    /// proof that one meters every request and the other none.
    recorded: [f64; 2],
    /// Where the scratch data directories were (their file system sets what a ledger
    /// write costs).
    scratch_parent: String,
}

impl Metering {
    pub fn to_json(&self) -> Value {
        let mut v = on_off_json(&self.on, &self.off);
        v["requests_per_gateway"] = json!(self.requests);
        v["usage_records"] = json!({"on": self.recorded[0], "off": self.recorded[1]});
        v["scratch_data_dir_parent"] = json!(self.scratch_parent);
        v
    }
}

pub fn measure(args: &Args, deadline: &Deadline) -> Result<Metering, String> {
    // Declared before the gateways, so dropped (removed) only after both have stopped.
    let on_dir = TempDir::new("gateway-bench-metering-on")?;
    let off_dir = TempDir::new("gateway-bench-metering-off")?;
    let data_dir = |d: &TempDir| d.path().to_string_lossy().into_owned();
    let on_flags = ["--min-workers", "1", "--data-dir", &data_dir(&on_dir)];
    let (mut on, on_base) = spawn_gateway(args, &on_flags)?;
    let mut off: Option<std::process::Child> = None;
    let result = (|| {
        let off_flags = [
            "--min-workers",
            "1",
            "--data-dir",
            &data_dir(&off_dir),
            "--no-metering",
        ];
        let (child, off_base) = spawn_gateway(args, &off_flags)?;
        let off_child = off.insert(child);
        let [on_figs, off_figs] = side_by_side(
            args,
            deadline,
            [
                ("metering on", &on_base, &mut on),
                ("metering off", &off_base, off_child),
            ],
        )?;
        let requests = 20 + on_figs.seq.len() + on_figs.closed.len();
        let recorded = check_records(&on_base, &off_base, requests)?;
        Ok(Metering {
            on: on_figs,
            off: off_figs,
            requests,
            recorded,
            scratch_parent: std::env::temp_dir().display().to_string(),
        })
    })();
    if let Some(c) = off.as_mut() {
        stop(c);
    }
    stop(&mut on);
    result
}

/// The usage records each gateway handed to its ledger: the metered one must have
/// recorded all `requests` (it records after the response, so this waits a little) and
/// failed none, the other none at all; else the comparison is not of metering on and off
/// (a surge without `--no-metering` does not start, so that is caught earlier).
fn check_records(on_base: &str, off_base: &str, requests: usize) -> Result<[f64; 2], String> {
    const RECORDS: &str = "surge_usage_records_total";
    let records = |m: &str, outcome| prom::sum(m, RECORDS, &[("outcome", outcome)]);
    let _ = metrics::wait_for(on_base, Duration::from_secs(10), |m| {
        records(m, "recorded") >= requests as f64
    });
    let on = metrics::fetch(on_base)?;
    let (recorded, failed) = (records(&on, "recorded"), records(&on, "failed"));
    if recorded < requests as f64 || failed > 0.0 {
        return Err(format!(
            "the metered gateway recorded {recorded} usage records of {requests} requests \
             ({failed} failed)"
        ));
    }
    // `+ 0.0`: a sum over no series is -0.0, which would print as "-0".
    let off = prom::sum(&metrics::fetch(off_base)?, RECORDS, &[]) + 0.0;
    if off > 0.0 {
        return Err(format!(
            "the `--no-metering` gateway handed {off} usage records to its ledger"
        ));
    }
    Ok([recorded, off])
}

pub fn print(args: &Args, m: &Metering) {
    println!(
        "Metering ({}, `max_tokens: 1`; {} sequential and {} rounds × {} closed-loop requests per gateway; \
         ledgers under {}; usage records on / off: {} / {})\n",
        args.model,
        m.on.seq.len(),
        args.rounds,
        args.closed_requests,
        m.scratch_parent,
        m.recorded[0],
        m.recorded[1],
    );
    print_comparison(
        args,
        ["metric", "metering on", "metering off", "on ÷ off"],
        "metering",
        &m.on,
        &m.off,
    );
}
