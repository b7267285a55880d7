//! 1. Overhead: a gateway with one warm worker per cached model and a direct `surge
//!    worker` for the LLM side by side; sequential short chats for p50/p99 latency, and a
//!    closed loop of clients for requests/s, in rounds that alternate who goes first.

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use surge_loadtest::bench::{closed_loop, metrics, print_head, process, ratio, Deadline};
use surge_loadtest::server::{stop, wait_ready};
use surge_loadtest::stats::{median, quantile};
use surge_protocol::prom;

use crate::surge::{spawn_gateway, worker};
use crate::Args;

#[derive(Default)]
pub struct Target {
    /// Sequential latencies, seconds.
    seq: Vec<f64>,
    /// Closed-loop requests/s, one per round.
    rps: Vec<f64>,
    /// Closed-loop latencies, seconds.
    closed: Vec<f64>,
}

pub struct Overhead {
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
    pub fn to_json(&self) -> Value {
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

pub fn measure(args: &Args, deadline: &Deadline) -> Result<Overhead, String> {
    let (mut gw, gw_base) = spawn_gateway(args, &["--min-workers", "1"])?;
    let mut direct: Option<std::process::Child> = None;
    let result = (|| {
        wait_ready(&gw_base, &mut gw, Duration::from_secs(60))
            .map_err(|e| format!("gateway: {e}"))?;
        // Every pool's warm worker up, so no start runs during the measurement.
        let mut models = vec![args.model.as_str()];
        if !args.whisper_model.is_empty() {
            models.push(&args.whisper_model);
        }
        metrics::wait_for(&gw_base, Duration::from_secs(300), |m| {
            models.iter().all(|model| {
                prom::sum(m, "surge_workers", &[("model", model), ("state", "ready")]) >= 1.0
            }) && prom::sum(m, "surge_workers", &[("state", "starting")]) == 0.0
        })
        .map_err(|e| format!("gateway workers never ready: {e}"))?;
        // The direct worker runs on as many threads as the gateway gave its worker.
        let (mut cmd, direct_base) = worker(args, &args.model);
        if let Some(threads) = gateway_worker_threads(&gw_base, &args.model) {
            cmd.args(["--threads", &threads.to_string()]);
        }
        let child = direct.insert(process::spawn(&mut cmd)?);
        wait_ready(&direct_base, child, Duration::from_secs(300))
            .map_err(|e| format!("worker: {e}"))?;
        let targets = [
            ("gateway", gw_base.as_str()),
            ("direct", direct_base.as_str()),
        ];
        let agent = new_agent();
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
                // Each client keeps its own connection; each sends its next chat as soon
                // as its last returns.
                let (wall, lat) = closed_loop(
                    args.concurrency.max(1),
                    args.closed_requests,
                    new_agent,
                    |agent, _| chat(agent, targets[i].1, &args.model),
                )?;
                figs[i].rps.push(lat.len() as f64 / wall);
                figs[i].closed.extend(lat);
            }
        }
        let [gateway, direct] = figs;
        Ok(Overhead { gateway, direct })
    })();
    if let Some(d) = direct.as_mut() {
        stop(d);
    }
    stop(&mut gw);
    result
}

/// The `--threads` of the gateway's worker for `model`: its pool's charge per worker
/// (`worker_cost` on `/admin/pools`), rounded up; `None` for a gateway that does not say.
fn gateway_worker_threads(base: &str, model: &str) -> Option<usize> {
    let v: serde_json::Value = ureq::get(&format!("{base}/admin/pools"))
        .call()
        .ok()?
        .into_json()
        .ok()?;
    let pool = v["pools"]
        .as_array()?
        .iter()
        .find(|p| p["model"] == model)?;
    (pool["device"] == "cpu").then(|| pool["worker_cost"].as_f64().map(|c| c.ceil() as usize))?
}

fn new_agent() -> ureq::Agent {
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

pub fn print(args: &Args, o: &Overhead) {
    let (g, d) = (&o.gateway, &o.direct);
    println!(
        "Overhead ({}, `max_tokens: 1`; {} sequential and {} rounds × {} closed-loop requests per target)\n",
        args.model, g.seq.len(), args.rounds, args.closed_requests
    );
    print_head(&["metric", "gateway", "direct worker", "gateway ÷ direct"]);
    let c = args.concurrency;
    let rows = [
        (
            "latency p50, sequential (ms)".to_string(),
            median(&g.seq) * 1e3,
            median(&d.seq) * 1e3,
        ),
        (
            "latency p99, sequential (ms)".to_string(),
            quantile(&g.seq, 0.99) * 1e3,
            quantile(&d.seq, 0.99) * 1e3,
        ),
        (
            format!("requests/s, {c} clients (median of rounds)"),
            median(&g.rps),
            median(&d.rps),
        ),
        (
            format!("latency p50, {c} clients (ms)"),
            median(&g.closed) * 1e3,
            median(&d.closed) * 1e3,
        ),
        (
            format!("latency p99, {c} clients (ms)"),
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
}
