//! Benchmarks `surge serve`: what the gateway adds to a request over the worker behind it,
//! and how long a request takes when no worker runs (cold start). Loopback only; fixed
//! counts and `--max-seconds` bound the run.
//!
//! ```text
//! gateway-bench --surge target/release/surge --json gateway-bench.json
//! ```
//! 1. **Overhead**: a gateway (`serve --no-pull --min-workers 1`: one warm worker per
//!    cached model) and a direct `surge worker` for the LLM with the gateway's worker
//!    settings, side by side. Short non-streaming chats (`max_tokens: 1`, temperature 0, a
//!    tiny prompt, keep-alive connections): `--sequential` one at a time for p50/p99
//!    latency, and `--closed-requests` by `--concurrency` clients (each sends its next
//!    request when the last returns) for requests/s. Rounds alternate gateway and direct
//!    (who goes first alternates too).
//! 2. **Cold start**: a gateway with `--idle-timeout 1`. Before each start every worker
//!    has stopped (`surge_workers{state="ready"|"starting"}` 0 in `/metrics`, and the
//!    gateway has no child process left). LLM: streaming chat sent → first content chunk;
//!    Whisper: a short espeak-ng clip's transcription sent → response read. Also the
//!    gateway's own `surge_cold_start_duration_seconds` (worker spawn → ready), per start
//!    from the histogram's sum and count before and after.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use serde_json::{json, Value};
use surge_loadtest::server::{free_port, stop, wait_ready, warn_if_busy};
use surge_loadtest::speech::{have_tools, synthesize, Corpus, TempDir};
use surge_loadtest::sse::stream_chat;
use surge_loadtest::stats::{median, quantile};
use surge_loadtest::transcribe::transcribe_bytes;

#[derive(Parser)]
struct Args {
    /// The surge binary (runs `surge serve` and `surge worker`).
    #[arg(long)]
    surge: PathBuf,
    /// Cache directory for the gateway and the worker (default: surge's own default).
    #[arg(long)]
    home: Option<PathBuf>,
    /// The LLM (cache name); the overhead is measured on it.
    #[arg(long, default_value = "smollm2-135m-instruct")]
    model: String,
    /// The Whisper model (cache name) for the cold starts; "" skips it.
    #[arg(long, default_value = "whisper-tiny.en")]
    whisper_model: String,
    /// Rounds of the overhead measurement (gateway and direct alternate in each).
    #[arg(long, default_value_t = 4)]
    rounds: usize,
    /// Sequential requests per target, over all rounds.
    #[arg(long, default_value_t = 200)]
    sequential: usize,
    /// Clients of the closed loop.
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    /// Closed-loop requests per target and round.
    #[arg(long, default_value_t = 200)]
    closed_requests: usize,
    /// Cold starts per model.
    #[arg(long, default_value_t = 20)]
    cold_starts: usize,
    /// The whole run stops with an error after this long.
    #[arg(long, default_value_t = 900)]
    max_seconds: u64,
    /// Write every figure here as JSON.
    #[arg(long)]
    json: Option<PathBuf>,
}

struct Deadline(Instant);

impl Deadline {
    fn check(&self) -> Result<(), String> {
        if Instant::now() > self.0 {
            Err("--max-seconds passed".into())
        } else {
            Ok(())
        }
    }
}

fn main() {
    let args = Args::parse();
    if let Err(e) = run(&args) {
        eprintln!("gateway-bench: {e}");
        std::process::exit(1);
    }
}

fn run(args: &Args) -> Result<(), String> {
    let load1 = warn_if_busy();
    let deadline = Deadline(Instant::now() + Duration::from_secs(args.max_seconds));
    let overhead = overhead(args, &deadline)?;
    let cold = cold_starts(args, &deadline)?;
    print_tables(args, &overhead, &cold);
    if let Some(p) = &args.json {
        let out = json!({
            "load_average_at_start": load1,
            "config": {
                "model": args.model, "whisper_model": args.whisper_model,
                "rounds": args.rounds, "sequential": args.sequential,
                "concurrency": args.concurrency, "closed_requests": args.closed_requests,
                "cold_starts": args.cold_starts,
            },
            "overhead": overhead.to_json(),
            "cold_start": cold.iter().map(ColdFigures::to_json).collect::<Vec<_>>(),
        });
        std::fs::write(p, serde_json::to_string_pretty(&out).unwrap_or_default())
            .map_err(|e| format!("{}: {e}", p.display()))?;
    }
    Ok(())
}

/// `surge serve` on a free loopback port with `extra` flags; returns it and its base URL.
fn spawn_gateway(args: &Args, extra: &[&str]) -> Result<(Child, String), String> {
    let port = free_port();
    let mut cmd = Command::new(&args.surge);
    cmd.args([
        "serve",
        "--listen",
        &format!("127.0.0.1:{port}"),
        "--no-pull",
    ])
    .args(extra);
    if let Some(h) = &args.home {
        cmd.arg("--home").arg(h);
    }
    let child = cmd
        .env("SURGE_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("spawn {}: {e}", args.surge.display()))?;
    Ok((child, format!("http://127.0.0.1:{port}")))
}

// ---------------------------------------------------------------------------------------
// 1. Overhead

#[derive(Default)]
struct Target {
    /// Sequential latencies, seconds.
    seq: Vec<f64>,
    /// Closed-loop requests/s, one per round.
    rps: Vec<f64>,
    /// Closed-loop latencies, seconds.
    closed: Vec<f64>,
}

struct Overhead {
    gateway: Target,
    direct: Target,
}

impl Target {
    fn to_json(&self) -> Value {
        json!({
            "sequential_p50_ms": median(&self.seq) * 1e3,
            "sequential_p99_ms": quantile(&self.seq, 0.99) * 1e3,
            "closed_loop_rps_median": median(&self.rps),
            "closed_loop_rps_rounds": self.rps,
            "closed_loop_latency_p50_ms": median(&self.closed) * 1e3,
            "closed_loop_latency_p99_ms": quantile(&self.closed, 0.99) * 1e3,
            "sequential_samples": self.seq.len(),
        })
    }
}

impl Overhead {
    fn to_json(&self) -> Value {
        let (g, d) = (&self.gateway, &self.direct);
        json!({
            "gateway": g.to_json(),
            "direct": d.to_json(),
            "gateway_over_direct": {
                "sequential_p50": ratio(median(&g.seq), median(&d.seq)),
                "sequential_p99": ratio(quantile(&g.seq, 0.99), quantile(&d.seq, 0.99)),
                "closed_loop_rps": ratio(median(&g.rps), median(&d.rps)),
            },
            "added_p50_ms": (median(&g.seq) - median(&d.seq)) * 1e3,
            "added_p99_ms": (quantile(&g.seq, 0.99) - quantile(&d.seq, 0.99)) * 1e3,
        })
    }
}

fn ratio(a: f64, b: f64) -> f64 {
    if b > 0.0 {
        a / b
    } else {
        0.0
    }
}

fn overhead(args: &Args, deadline: &Deadline) -> Result<Overhead, String> {
    let (mut gw, gw_base) = spawn_gateway(args, &["--min-workers", "1"])?;
    let port = free_port();
    let direct_base = format!("http://127.0.0.1:{port}");
    // The gateway's worker settings: its spawn passes `--device` (auto → cpu without a GPU)
    // and `--exit-with-parent`, and no pool here has extra worker_args.
    let mut cmd = Command::new(&args.surge);
    cmd.args(["worker", "--model", &args.model, "--listen"])
        .arg(format!("tcp:127.0.0.1:{port}"))
        .args(["--device", "cpu", "--exit-with-parent"]);
    if let Some(h) = &args.home {
        cmd.arg("--home").arg(h);
    }
    let direct = cmd
        .env("SURGE_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("spawn {}: {e}", args.surge.display()));
    let mut direct = match direct {
        Ok(c) => c,
        Err(e) => {
            stop(&mut gw);
            return Err(e);
        }
    };
    let result = (|| {
        wait_ready(&gw_base, &mut gw, Duration::from_secs(60))
            .map_err(|e| format!("gateway: {e}"))?;
        wait_ready(&direct_base, &mut direct, Duration::from_secs(300))
            .map_err(|e| format!("worker: {e}"))?;
        // Every pool's warm worker up, so no start runs during the measurement.
        let mut models = vec![args.model.as_str()];
        if !args.whisper_model.is_empty() {
            models.push(&args.whisper_model);
        }
        wait_metrics(&gw_base, Duration::from_secs(300), |m| {
            models.iter().all(|model| gauge(m, model, "ready") >= 1.0)
                && total(m, "surge_workers", "starting") == 0.0
        })
        .map_err(|e| format!("gateway workers never ready: {e}"))?;
        let targets = [
            ("gateway", gw_base.as_str()),
            ("direct", direct_base.as_str()),
        ];
        let agent = agent();
        for (_, base) in targets {
            for _ in 0..20 {
                chat(&agent, base, &args.model)?; // warm-up (connections, caches)
            }
        }
        let mut figs = [Target::default(), Target::default()];
        let rounds = args.rounds.max(1);
        for round in 0..rounds {
            let per_round =
                args.sequential / rounds + usize::from(round < args.sequential % rounds);
            let order = if round % 2 == 0 { [0, 1] } else { [1, 0] };
            for &i in &order {
                eprintln!(
                    "round {} / {rounds}: {} sequential",
                    round + 1,
                    targets[i].0
                );
                for _ in 0..per_round {
                    deadline.check()?;
                    figs[i].seq.push(chat(&agent, targets[i].1, &args.model)?);
                }
            }
            for &i in &order {
                eprintln!(
                    "round {} / {rounds}: {} closed loop, {} clients",
                    round + 1,
                    targets[i].0,
                    args.concurrency
                );
                deadline.check()?;
                let (rps, lat) = closed_loop(
                    targets[i].1,
                    &args.model,
                    args.concurrency,
                    args.closed_requests,
                )?;
                figs[i].rps.push(rps);
                figs[i].closed.extend(lat);
            }
        }
        let [gateway, direct] = figs;
        Ok(Overhead { gateway, direct })
    })();
    stop(&mut direct);
    stop(&mut gw);
    result
}

fn agent() -> ureq::Agent {
    ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(120))
        .build()
}

/// One short non-streaming chat; returns its latency in seconds.
fn chat(agent: &ureq::Agent, base: &str, model: &str) -> Result<f64, String> {
    let body = json!({
        "model": model,
        "messages": [{"role": "user", "content": "Hi"}],
        "max_tokens": 1, "temperature": 0,
    })
    .to_string();
    let t = Instant::now();
    let resp = agent
        .post(&format!("{base}/v1/chat/completions"))
        .set("Content-Type", "application/json")
        .send_string(&body)
        .map_err(|e| format!("{base}: {e}"))?;
    // Read the body to the end so the connection goes back to the pool.
    let v: Value = resp.into_json().map_err(|e| format!("{base}: {e}"))?;
    let elapsed = t.elapsed().as_secs_f64();
    if v.pointer("/choices/0").is_none() {
        return Err(format!("{base}: no choices in {v}"));
    }
    Ok(elapsed)
}

/// `clients` threads sending `requests` chats in all, each its next as soon as its last
/// returns. Returns (requests/s, latencies).
fn closed_loop(
    base: &str,
    model: &str,
    clients: usize,
    requests: usize,
) -> Result<(f64, Vec<f64>), String> {
    let next = AtomicUsize::new(0);
    let wall = Instant::now();
    let per_client: Vec<Result<Vec<f64>, String>> = std::thread::scope(|sc| {
        let hs: Vec<_> = (0..clients.max(1))
            .map(|_| {
                let next = &next;
                sc.spawn(move || {
                    let agent = agent();
                    let mut lat = Vec::new();
                    while next.fetch_add(1, Ordering::Relaxed) < requests {
                        lat.push(chat(&agent, base, model)?);
                    }
                    Ok(lat)
                })
            })
            .collect();
        hs.into_iter()
            .map(|h| h.join().unwrap_or_else(|_| Err("client panicked".into())))
            .collect()
    });
    let wall = wall.elapsed().as_secs_f64();
    let mut lat = Vec::new();
    for r in per_client {
        lat.extend(r?);
    }
    Ok((lat.len() as f64 / wall, lat))
}

// ---------------------------------------------------------------------------------------
// 2. Cold starts

struct ColdFigures {
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
    fn to_json(&self) -> Value {
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

fn cold_starts(args: &Args, deadline: &Deadline) -> Result<Vec<ColdFigures>, String> {
    let mut models: Vec<(&str, &'static str)> =
        vec![(&args.model, "streaming chat sent → first content chunk")];
    let tmp = TempDir::new("gateway-bench")?;
    let mut clip = Vec::new();
    if !args.whisper_model.is_empty() {
        if !have_tools() {
            return Err(
                "espeak-ng and sox are needed for the Whisper clip (scripts/setup.sh); \
                        or pass --whisper-model ''"
                    .into(),
            );
        }
        let corpus = Corpus::default_corpus()?;
        let text = corpus.sentences.first().ok_or("empty corpus")?;
        let path = synthesize(text, tmp.path(), "clip", &["wav"])?.remove(0);
        clip = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        models.push((&args.whisper_model, "transcription sent → response read"));
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
                wait_metrics(&base, Duration::from_secs(60), |m| {
                    total(m, "surge_workers", "ready") == 0.0
                        && total(m, "surge_workers", "starting") == 0.0
                })
                .map_err(|e| format!("workers did not stop: {e}"))?;
                let t = Instant::now();
                while has_children(gw_pid) {
                    if t.elapsed() > Duration::from_secs(30) {
                        return Err("a stopped worker is still running after 30 s".into());
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
                let before = histogram(&metrics(&base)?, &f.model);
                let client = if f.model == args.model {
                    let body = json!({
                        "model": f.model,
                        "messages": [{"role": "user", "content": "Hi"}],
                        "max_tokens": 4, "temperature": 0, "stream": true,
                    });
                    let t = stream_chat(&base, &body)?;
                    if t.token_times.is_empty() {
                        return Err(format!("{}: no content chunk", f.model));
                    }
                    t.ttft
                } else {
                    transcribe_bytes(
                        &base,
                        "clip.wav",
                        &clip,
                        &[("model", f.model.as_str()), ("response_format", "json")],
                    )?
                    .elapsed
                };
                let after = histogram(&metrics(&base)?, &f.model);
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

/// Whether any process has `pid` as its parent.
fn has_children(pid: u32) -> bool {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return false;
    };
    dir.flatten().any(|e| {
        std::fs::read_to_string(e.path().join("stat"))
            .ok()
            // The fields after the command (which may hold spaces) follow its last ')'.
            .and_then(|s| {
                s.rsplit_once(')')
                    .and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse::<u32>().ok())
            })
            == Some(pid)
    })
}

// ---------------------------------------------------------------------------------------
// /metrics (Prometheus text format)

fn metrics(base: &str) -> Result<String, String> {
    ureq::get(&format!("{base}/metrics"))
        .timeout(Duration::from_secs(5))
        .call()
        .map_err(|e| format!("/metrics: {e}"))?
        .into_string()
        .map_err(|e| format!("/metrics: {e}"))
}

/// Polls `/metrics` every 50 ms until `ok` holds for it.
fn wait_metrics(base: &str, timeout: Duration, ok: impl Fn(&str) -> bool) -> Result<(), String> {
    let start = Instant::now();
    loop {
        if ok(&metrics(base)?) {
            return Ok(());
        }
        if start.elapsed() > timeout {
            return Err(format!("not after {} s", timeout.as_secs()));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The samples of `name` as (labels, value).
fn samples<'a>(
    text: &'a str,
    name: &'a str,
) -> impl Iterator<Item = (Vec<(&'a str, &'a str)>, f64)> + 'a {
    text.lines().filter_map(move |l| {
        let rest = l.strip_prefix(name)?;
        let (labels, value) = match rest.strip_prefix('{') {
            Some(r) => r.split_once('}')?,
            None if rest.starts_with(' ') => ("", rest),
            None => return None,
        };
        let labels = labels
            .split(',')
            .filter_map(|kv| {
                let (k, v) = kv.split_once('=')?;
                Some((k.trim(), v.trim().trim_matches('"')))
            })
            .collect();
        Some((labels, value.split_whitespace().next()?.parse().ok()?))
    })
}

fn label<'a>(labels: &[(&'a str, &'a str)], key: &str) -> Option<&'a str> {
    labels.iter().find(|(k, _)| *k == key).map(|(_, v)| *v)
}

/// `surge_workers{model, state}`.
fn gauge(text: &str, model: &str, state: &str) -> f64 {
    samples(text, "surge_workers")
        .filter(|(l, _)| label(l, "model") == Some(model) && label(l, "state") == Some(state))
        .map(|(_, v)| v)
        .sum()
}

/// `name{state}` summed over models.
fn total(text: &str, name: &str, state: &str) -> f64 {
    samples(text, name)
        .filter(|(l, _)| label(l, "state") == Some(state))
        .map(|(_, v)| v)
        .sum()
}

/// `surge_cold_start_duration_seconds` (sum, count) for `model`; zeros before its first start.
fn histogram(text: &str, model: &str) -> (f64, f64) {
    let get = |suffix: &str| {
        samples(text, &format!("surge_cold_start_duration_seconds_{suffix}"))
            .filter(|(l, _)| label(l, "model") == Some(model))
            .map(|(_, v)| v)
            .sum::<f64>()
    };
    (get("sum"), get("count"))
}

// ---------------------------------------------------------------------------------------
// Report

fn print_tables(args: &Args, o: &Overhead, cold: &[ColdFigures]) {
    let (g, d) = (&o.gateway, &o.direct);
    println!(
        "Overhead ({}, `max_tokens: 1`; {} sequential and {} rounds × {} closed-loop requests per target)\n",
        args.model, g.seq.len(), args.rounds, args.closed_requests
    );
    println!("| metric | gateway | direct worker | gateway ÷ direct |");
    println!("|---|---|---|---|");
    let rows = [
        (
            "latency p50, sequential (ms)",
            median(&g.seq) * 1e3,
            median(&d.seq) * 1e3,
        ),
        (
            "latency p99, sequential (ms)",
            quantile(&g.seq, 0.99) * 1e3,
            quantile(&d.seq, 0.99) * 1e3,
        ),
        (
            &format!(
                "requests/s, {} clients (median of rounds)",
                args.concurrency
            ),
            median(&g.rps),
            median(&d.rps),
        ),
        (
            &format!("latency p50, {} clients (ms)", args.concurrency),
            median(&g.closed) * 1e3,
            median(&d.closed) * 1e3,
        ),
        (
            &format!("latency p99, {} clients (ms)", args.concurrency),
            quantile(&g.closed, 0.99) * 1e3,
            quantile(&d.closed, 0.99) * 1e3,
        ),
    ];
    for (name, a, b) in rows {
        println!("| {name} | {a:.2} | {b:.2} | {:.2}× |", ratio(a, b));
    }
    println!(
        "\nAdded by the gateway: {:.2} ms at p50, {:.2} ms at p99 (sequential).\n",
        (median(&g.seq) - median(&d.seq)) * 1e3,
        (quantile(&g.seq, 0.99) - quantile(&d.seq, 0.99)) * 1e3
    );
    println!("Cold start, no worker running (`--idle-timeout 1`)\n");
    println!(
        "| model | measured | starts | p50 (s) | p99 (s) | gateway spawn → ready p50 / p99 (s) | histogram sum / count |"
    );
    println!("|---|---|---|---|---|---|---|");
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
