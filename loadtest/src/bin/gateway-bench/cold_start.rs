//! 2. Cold start through the gateway: `--idle-timeout 1`, and before each start no worker
//!    of any model left (gauges 0, no child process). Client side: request sent → first
//!    content chunk (LLM) or response read (Whisper); gateway side: its own
//!    `surge_cold_start_duration_seconds` (spawn → ready), from the histogram's sum and
//!    count before and after.

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use surge_loadtest::bench::process::has_children;
use surge_loadtest::bench::{metrics, print_head, Deadline};
use surge_loadtest::server::{stop, wait_ready};
use surge_loadtest::speech::TempDir;
use surge_loadtest::stats::{median, quantile};
use surge_protocol::prom;

use crate::surge::{first_result, spawn_gateway, whisper_clip, LLM_FIRST, WHISPER_FIRST};
use crate::Args;

pub struct ColdFigures {
    model: String,
    what: &'static str,
    /// Client-side: request sent → first content chunk (LLM) or response read (Whisper).
    client_s: Vec<f64>,
    /// The gateway's spawn → ready for each start (histogram sum delta).
    gateway_s: Vec<f64>,
    /// The histogram's sum and count at the end.
    hist_sum: f64,
    hist_count: f64,
}

impl ColdFigures {
    pub fn to_json(&self) -> Value {
        json!({
            "model": self.model,
            "measured": self.what,
            "client_p50_s": median(&self.client_s),
            "client_p99_s": quantile(&self.client_s, 0.99),
            "client_samples_s": self.client_s,
            "gateway_spawn_to_ready_p50_s": median(&self.gateway_s),
            "gateway_spawn_to_ready_p99_s": quantile(&self.gateway_s, 0.99),
            "gateway_spawn_to_ready_samples_s": self.gateway_s,
            "surge_cold_start_duration_seconds_sum": self.hist_sum,
            "surge_cold_start_duration_seconds_count": self.hist_count,
        })
    }
}

pub fn measure(args: &Args, deadline: &Deadline) -> Result<Vec<ColdFigures>, String> {
    let mut models: Vec<(&str, &'static str)> = vec![(&args.model, LLM_FIRST)];
    let tmp = TempDir::new("gateway-bench")?;
    let mut clip = Vec::new();
    if !args.whisper_model.is_empty() {
        clip = whisper_clip(tmp.path())?;
        models.push((&args.whisper_model, WHISPER_FIRST));
    }
    let (mut gw, base) = spawn_gateway(args, &["--idle-timeout", "1", "--min-workers", "0"])?;
    let result = (|| {
        wait_ready(&base, &mut gw, Duration::from_secs(60)).map_err(|e| format!("gateway: {e}"))?;
        let mut figs: Vec<ColdFigures> = models
            .iter()
            .map(|(m, what)| ColdFigures {
                model: m.to_string(),
                what,
                client_s: Vec::new(),
                gateway_s: Vec::new(),
                hist_sum: 0.0,
                hist_count: 0.0,
            })
            .collect();
        let gw_pid = gw.id();
        for i in 0..args.cold_starts {
            // Models alternate, so each start finds the other model's worker gone too.
            for f in figs.iter_mut() {
                deadline.check()?;
                // No worker of any model: gauges 0 and no child process still exiting.
                metrics::wait_for(&base, Duration::from_secs(60), |m| {
                    prom::sum(m, "surge_workers", &[("state", "ready")]) == 0.0
                        && prom::sum(m, "surge_workers", &[("state", "starting")]) == 0.0
                })
                .map_err(|e| format!("workers did not stop: {e}"))?;
                let t = Instant::now();
                while has_children(gw_pid) {
                    if t.elapsed() > Duration::from_secs(30) {
                        return Err("a stopped worker is still running after 30 s".into());
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
                let before = histogram(&metrics::fetch(&base)?, &f.model);
                let client = first_result(&base, &f.model, f.model == args.model, &clip)?;
                let after = histogram(&metrics::fetch(&base)?, &f.model);
                if after.1 - before.1 != 1.0 {
                    return Err(format!(
                        "{}: expected one cold start, the histogram counted {}",
                        f.model,
                        after.1 - before.1
                    ));
                }
                f.client_s.push(client);
                f.gateway_s.push(after.0 - before.0);
                (f.hist_sum, f.hist_count) = after;
                eprintln!(
                    "cold start {} / {}: {} {client:.3} s (gateway spawn → ready {:.3} s)",
                    i + 1,
                    args.cold_starts,
                    f.model,
                    after.0 - before.0
                );
            }
        }
        Ok(figs)
    })();
    stop(&mut gw);
    result
}

/// `surge_cold_start_duration_seconds` (sum, count) for `model`; zeros before its first start.
fn histogram(text: &str, model: &str) -> (f64, f64) {
    let get = |name| prom::sum(text, name, &[("model", model)]);
    (
        get("surge_cold_start_duration_seconds_sum"),
        get("surge_cold_start_duration_seconds_count"),
    )
}

pub fn print(cold: &[ColdFigures]) {
    println!("Cold start, no worker running (`--idle-timeout 1`)\n");
    print_head(&[
        "model",
        "measured",
        "starts",
        "p50 (s)",
        "p99 (s)",
        "gateway spawn → ready p50 / p99 (s)",
        "histogram sum / count",
    ]);
    for f in cold {
        println!(
            "| {} | {} | {} | {:.3} | {:.3} | {:.3} / {:.3} | {:.3} / {} |",
            f.model,
            f.what,
            f.client_s.len(),
            median(&f.client_s),
            quantile(&f.client_s, 0.99),
            median(&f.gateway_s),
            quantile(&f.gateway_s, 0.99),
            f.hist_sum,
            f.hist_count
        );
    }
}
