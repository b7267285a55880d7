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
//! 3. **Worker cold start** (`--worker-cold-starts`, default 20 per model; `--only-worker`
//!    skips 1 and 2): `surge worker` spawned directly on a loopback port with
//!    `SURGE_SPAWNED_AT_UNIX_NS` set, `/health` polled every millisecond: spawn → 200 as
//!    the client sees it, the worker's own `startup` breakdown from that 200's body, then
//!    the first request (LLM: streaming chat → first content chunk; Whisper: the clip's
//!    transcription) and the same request again, whose difference is what the first
//!    request pays for being first. Models alternate; each worker is stopped (SIGTERM,
//!    reaped) before the next spawn. `--drop-page-cache` evicts the model's weight file
//!    from the page cache before each spawn (`dd iflag=nocache count=0`), for a start
//!    that reads from disk.

use std::path::{Path, PathBuf};
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
    /// Direct worker cold starts per model (no gateway); 0 skips them.
    #[arg(long, default_value_t = 20)]
    worker_cold_starts: usize,
    /// Only the direct worker cold starts (skips the overhead and gateway cold starts).
    #[arg(long)]
    only_worker: bool,
    /// Evict the model's weight file from the page cache before each worker spawn.
    #[arg(long)]
    drop_page_cache: bool,
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
    let (overhead, cold) = if args.only_worker {
        (None, Vec::new())
    } else {
        (
            Some(overhead(args, &deadline)?),
            cold_starts(args, &deadline)?,
        )
    };
    let worker_cold = if args.worker_cold_starts > 0 {
        worker_cold_starts(args, &deadline)?
    } else {
        Vec::new()
    };
    if let Some(o) = &overhead {
        print_tables(args, o, &cold);
    }
    print_worker_cold(args, &worker_cold);
    if let Some(p) = &args.json {
        let out = json!({
            "load_average_at_start": load1,
            "config": {
                "model": args.model, "whisper_model": args.whisper_model,
                "rounds": args.rounds, "sequential": args.sequential,
                "concurrency": args.concurrency, "closed_requests": args.closed_requests,
                "cold_starts": args.cold_starts,
                "worker_cold_starts": args.worker_cold_starts,
                "drop_page_cache": args.drop_page_cache,
            },
            "overhead": overhead.as_ref().map(Overhead::to_json),
            "cold_start": cold.iter().map(ColdFigures::to_json).collect::<Vec<_>>(),
            "worker_cold_start": worker_cold.iter().map(WorkerCold::to_json).collect::<Vec<_>>(),
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
        clip = whisper_clip(tmp.path())?;
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

// ---------------------------------------------------------------------------------------
// 3. Worker cold start (no gateway)

/// The phases of a worker's `/health` `startup` object, in order.
const PHASES: [&str; 6] = ["exec", "init", "resolve", "weights", "tokenizer", "warmup"];

struct WorkerCold {
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
    fn phase(&self, name: &str) -> Vec<f64> {
        self.startup
            .iter()
            .map(|s| s[format!("{name}_s")].as_f64().unwrap_or(0.0))
            .collect()
    }

    fn to_json(&self) -> Value {
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

fn worker_cold_starts(args: &Args, deadline: &Deadline) -> Result<Vec<WorkerCold>, String> {
    let tmp = TempDir::new("gateway-bench-worker")?;
    let mut figs = vec![WorkerCold {
        model: args.model.clone(),
        what: "streaming chat sent → first content chunk",
        ready_s: Vec::new(),
        startup: Vec::new(),
        first_s: Vec::new(),
        second_s: Vec::new(),
        rss_mib: Vec::new(),
    }];
    let mut clip = Vec::new();
    if !args.whisper_model.is_empty() {
        clip = whisper_clip(tmp.path())?;
        figs.push(WorkerCold {
            model: args.whisper_model.clone(),
            what: "transcription sent → response read",
            ready_s: Vec::new(),
            startup: Vec::new(),
            first_s: Vec::new(),
            second_s: Vec::new(),
            rss_mib: Vec::new(),
        });
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
            let port = free_port();
            let base = format!("http://127.0.0.1:{port}");
            let mut cmd = Command::new(&args.surge);
            cmd.args(["worker", "--model", &f.model, "--listen"])
                .arg(format!("tcp:127.0.0.1:{port}"))
                .args(["--device", "cpu", "--exit-with-parent"]);
            if let Some(h) = &args.home {
                cmd.arg("--home").arg(h);
            }
            cmd.env("SURGE_LOG", "warn")
                .stdout(Stdio::null())
                .stderr(Stdio::inherit());
            let spawned_ns = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_err(|e| e.to_string())?
                .as_nanos();
            cmd.env("SURGE_SPAWNED_AT_UNIX_NS", spawned_ns.to_string());
            let t0 = Instant::now();
            let mut child = cmd
                .spawn()
                .map_err(|e| format!("spawn {}: {e}", args.surge.display()))?;
            let result = (|| {
                let health = poll_health(&base, &mut child, Duration::from_secs(120))?;
                let ready = t0.elapsed().as_secs_f64();
                let startup = health["startup"].clone();
                if !startup.is_object() {
                    return Err(format!("{}: /health has no startup object", f.model));
                }
                let once = || -> Result<f64, String> {
                    if clip.is_empty() || f.model == args.model {
                        let body = json!({
                            "model": f.model,
                            "messages": [{"role": "user", "content": "Hi"}],
                            "max_tokens": 4, "temperature": 0, "stream": true,
                        });
                        let t = stream_chat(&base, &body)?;
                        if t.token_times.is_empty() {
                            return Err(format!("{}: no content chunk", f.model));
                        }
                        Ok(t.ttft)
                    } else {
                        Ok(transcribe_bytes(
                            &base,
                            "clip.wav",
                            &clip,
                            &[("model", f.model.as_str()), ("response_format", "json")],
                        )?
                        .elapsed)
                    }
                };
                let first = once()?;
                let second = once()?;
                let rss = surge_loadtest::server::peak_rss_mib(child.id());
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
    if let Some(h) = &args.home {
        cmd.arg("--home").arg(h);
    }
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
fn drop_page_cache(path: &std::path::Path) -> Result<(), String> {
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

/// Polls `/health` every millisecond until 200 and returns its body.
fn poll_health(base: &str, child: &mut Child, timeout: Duration) -> Result<Value, String> {
    let start = Instant::now();
    let agent = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(2))
        .build();
    while start.elapsed() < timeout {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("worker exited before ready: {status}"));
        }
        if let Ok(r) = agent.get(&format!("{base}/health")).call() {
            if r.status() == 200 {
                return r.into_json().map_err(|e| format!("/health body: {e}"));
            }
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    Err(format!("worker not ready after {} s", timeout.as_secs()))
}

fn print_worker_cold(args: &Args, figs: &[WorkerCold]) {
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
    println!(
        "| model | spawn → ready p50 / p99 (s) | exec | init | resolve | weights | tokenizer | \
         warmup | worker total | first request p50 / p99 (s) | second request p50 (s) | \
         spawn → first result p50 / p99 (s) | peak RSS (MiB) |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|");
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

/// The Whisper cold starts' clip: the corpus's first sentence spoken (espeak-ng + sox)
/// as 16 kHz wav, written under `dir`.
fn whisper_clip(dir: &Path) -> Result<Vec<u8>, String> {
    if !have_tools() {
        return Err(
            "espeak-ng and sox are needed for the Whisper clip (scripts/setup.sh); \
                    or pass --whisper-model ''"
                .into(),
        );
    }
    let corpus = Corpus::default_corpus()?;
    let text = corpus.sentences.first().ok_or("empty corpus")?;
    let path = synthesize(text, dir, "clip", &["wav"])?.remove(0);
    std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))
}
