//! 3. Worker cold start, no gateway: `surge worker` spawned directly with
//!    `SURGE_SPAWNED_AT_UNIX_NS` set and `/health` polled every millisecond (spawn → 200 as
//!    the client sees it, and the worker's own `startup` breakdown from that 200's body),
//!    then the first request and the same request again. Models alternate; each worker is
//!    stopped before the next spawn; `--drop-page-cache` evicts the weights first.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use surge_loadtest::bench::process::{poll_health, spawn};
use surge_loadtest::bench::{print_head, Deadline};
use surge_loadtest::server::{peak_rss_mib, stop};
use surge_loadtest::speech::TempDir;
use surge_loadtest::stats::{median, quantile};

use crate::surge::{first_result, home, whisper_clip, worker, LLM_FIRST, WHISPER_FIRST};
use crate::Args;

/// The phases of a worker's `/health` `startup` object, in order.
const PHASES: [&str; 6] = ["exec", "init", "resolve", "weights", "tokenizer", "warmup"];

pub struct WorkerCold {
    model: String,
    what: &'static str,
    /// spawn → `/health` 200, client side.
    ready_s: Vec<f64>,
    /// The worker's own `startup` objects.
    startup: Vec<Value>,
    /// First request (sent as soon as ready): TTFT (LLM) or response (Whisper).
    first_s: Vec<f64>,
    /// The same request straight after.
    second_s: Vec<f64>,
    /// Peak RSS at the end of each run, MiB.
    rss_mib: Vec<f64>,
}

impl WorkerCold {
    fn new(model: &str, what: &'static str) -> WorkerCold {
        WorkerCold {
            model: model.to_string(),
            what,
            ready_s: Vec::new(),
            startup: Vec::new(),
            first_s: Vec::new(),
            second_s: Vec::new(),
            rss_mib: Vec::new(),
        }
    }

    fn phase(&self, name: &str) -> Vec<f64> {
        self.startup
            .iter()
            .map(|s| s[format!("{name}_s")].as_f64().unwrap_or(0.0))
            .collect()
    }

    pub fn to_json(&self) -> Value {
        let mut phases = serde_json::Map::new();
        for p in PHASES.iter().chain(&["total"]) {
            let v = self.phase(p);
            phases.insert(
                p.to_string(),
                json!({"p50_s": median(&v), "p99_s": quantile(&v, 0.99)}),
            );
        }
        json!({
            "model": self.model,
            "first_request": self.what,
            "spawn_to_ready_p50_s": median(&self.ready_s),
            "spawn_to_ready_p99_s": quantile(&self.ready_s, 0.99),
            "spawn_to_ready_samples_s": self.ready_s,
            "worker_phases": phases,
            "first_request_p50_s": median(&self.first_s),
            "first_request_p99_s": quantile(&self.first_s, 0.99),
            "second_request_p50_s": median(&self.second_s),
            "second_request_p99_s": quantile(&self.second_s, 0.99),
            "spawn_to_first_result_p50_s": median(&self.ready_plus_first()),
            "spawn_to_first_result_p99_s": quantile(&self.ready_plus_first(), 0.99),
            "peak_rss_mib_p50": median(&self.rss_mib),
            "startup_samples": self.startup,
        })
    }

    fn ready_plus_first(&self) -> Vec<f64> {
        self.ready_s
            .iter()
            .zip(&self.first_s)
            .map(|(a, b)| a + b)
            .collect()
    }
}

pub fn measure(args: &Args, deadline: &Deadline) -> Result<Vec<WorkerCold>, String> {
    let tmp = TempDir::new("gateway-bench-worker")?;
    let mut figs = vec![WorkerCold::new(&args.model, LLM_FIRST)];
    let mut clip = Vec::new();
    if !args.whisper_model.is_empty() {
        clip = whisper_clip(tmp.path())?;
        figs.push(WorkerCold::new(&args.whisper_model, WHISPER_FIRST));
    }
    let weights: Vec<PathBuf> = figs
        .iter()
        .map(|f| model_path(args, &f.model))
        .collect::<Result<_, _>>()?;
    for i in 0..args.worker_cold_starts {
        for (f, weights) in figs.iter_mut().zip(&weights) {
            deadline.check()?;
            if args.drop_page_cache {
                drop_page_cache(weights)?;
            }
            let (mut cmd, base) = worker(args, &f.model);
            let spawned_ns = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_err(|e| e.to_string())?
                .as_nanos();
            cmd.env("SURGE_SPAWNED_AT_UNIX_NS", spawned_ns.to_string());
            let t0 = Instant::now();
            let mut child = spawn(&mut cmd)?;
            let result = (|| {
                let health = poll_health(&base, &mut child, Duration::from_secs(120))?;
                let ready = t0.elapsed().as_secs_f64();
                let startup = health["startup"].clone();
                if !startup.is_object() {
                    return Err(format!("{}: /health has no startup object", f.model));
                }
                let llm = f.model == args.model;
                let first = first_result(&base, &f.model, llm, &clip)?;
                let second = first_result(&base, &f.model, llm, &clip)?;
                let rss = peak_rss_mib(child.id());
                Ok((ready, startup, first, second, rss))
            })();
            stop(&mut child);
            let (ready, startup, first, second, rss) = result?;
            eprintln!(
                "worker cold start {} / {}: {} ready {ready:.3} s (worker total {:.3}, weights \
                 {:.3}, tokenizer {:.3}, warmup {:.3}), first {first:.3} s, second {second:.3} s",
                i + 1,
                args.worker_cold_starts,
                f.model,
                startup["total_s"].as_f64().unwrap_or(0.0),
                startup["weights_s"].as_f64().unwrap_or(0.0),
                startup["tokenizer_s"].as_f64().unwrap_or(0.0),
                startup["warmup_s"].as_f64().unwrap_or(0.0),
            );
            f.ready_s.push(ready);
            f.startup.push(startup);
            f.first_s.push(first);
            f.second_s.push(second);
            f.rss_mib.push(rss);
        }
    }
    Ok(figs)
}

/// `surge models path NAME`: the model's main file in the cache.
fn model_path(args: &Args, model: &str) -> Result<PathBuf, String> {
    let mut cmd = Command::new(&args.surge);
    cmd.args(["models", "path", model]);
    home(args, &mut cmd);
    let out = cmd
        .output()
        .map_err(|e| format!("surge models path {model}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "surge models path {model}: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
}

/// Evicts `path`'s clean pages from the page cache (POSIX_FADV_DONTNEED through GNU dd).
fn drop_page_cache(path: &Path) -> Result<(), String> {
    let status = Command::new("dd")
        .arg(format!("if={}", path.display()))
        .args(["iflag=nocache", "count=0", "status=none"])
        .status()
        .map_err(|e| format!("dd: {e}"))?;
    if !status.success() {
        return Err(format!("dd iflag=nocache on {}: {status}", path.display()));
    }
    Ok(())
}

pub fn print(args: &Args, figs: &[WorkerCold]) {
    if figs.is_empty() {
        return;
    }
    println!(
        "\nWorker cold start, `surge worker` spawned directly ({} per model{})\n",
        args.worker_cold_starts,
        if args.drop_page_cache {
            ", weights evicted from the page cache before each"
        } else {
            ", weights in the page cache"
        }
    );
    print_head(&[
        "model",
        "spawn → ready p50 / p99 (s)",
        "exec",
        "init",
        "resolve",
        "weights",
        "tokenizer",
        "warmup",
        "worker total",
        "first request p50 / p99 (s)",
        "second request p50 (s)",
        "spawn → first result p50 / p99 (s)",
        "peak RSS (MiB)",
    ]);
    for f in figs {
        let p = |name: &str| format!("{:.3}", median(&f.phase(name)));
        println!(
            "| {} | {:.3} / {:.3} | {} | {} | {} | {} | {} | {} | {} | {:.3} / {:.3} | {:.3} | \
             {:.3} / {:.3} | {:.0} |",
            f.model,
            median(&f.ready_s),
            quantile(&f.ready_s, 0.99),
            p("exec"),
            p("init"),
            p("resolve"),
            p("weights"),
            p("tokenizer"),
            p("warmup"),
            p("total"),
            median(&f.first_s),
            quantile(&f.first_s, 0.99),
            median(&f.second_s),
            median(&f.ready_plus_first()),
            quantile(&f.ready_plus_first(), 0.99),
            median(&f.rss_mib),
        );
    }
    println!("\n(phases: p50 of the worker's own /health startup object, seconds)");
}
