//! 1. Overhead: a gateway with one warm worker per cached model and a direct `surge
//!    worker` for the LLM side by side; sequential short chats for p50/p99 latency, and a
//!    closed loop of clients for requests/s, in rounds that alternate who goes first.
//!
//! The side-by-side measurement itself ([`compare`], [`wait_warm`], [`compare_json`],
//! [`print_comparison`]) is shared with [`crate::metering`], so that both comparisons
//! measure and report alike.

use std::time::{Duration, Instant};

use serde_json::{json, Map, Value};
use surge_loadtest::bench::{closed_loop, metrics, print_head, process, ratio, Deadline};
use surge_loadtest::server::{stop, wait_ready};
use surge_loadtest::stats::{median, quantile};
use surge_protocol::prom;

use crate::surge::{spawn_gateway, worker};
use crate::Args;

/// One target's figures over all rounds of a comparison.
#[derive(Default)]
pub struct Target {
    /// Sequential latencies, seconds.
    pub seq: Vec<f64>,
    /// Closed-loop requests/s, one per round.
    pub rps: Vec<f64>,
    /// Closed-loop latencies, seconds.
    pub closed: Vec<f64>,
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

/// Two targets' figures as JSON: each under its name, `{a}_over_{b}` (sequential p50 and
/// p99, closed-loop requests/s), and what `a` adds to the sequential p50 and p99 (ms).
pub fn compare_json((a_name, a): (&str, &Target), (b_name, b): (&str, &Target)) -> Value {
    let mut out = Map::new();
    out.insert(a_name.into(), a.to_json());
    out.insert(b_name.into(), b.to_json());
    out.insert(
        format!("{a_name}_over_{b_name}"),
        json!({
            "sequential_p50": ratio(median(&a.seq), median(&b.seq)),
            "sequential_p99": ratio(quantile(&a.seq, 0.99), quantile(&b.seq, 0.99)),
            "closed_loop_rps": ratio(median(&a.rps), median(&b.rps)),
        }),
    );
    out.insert(
        "added_p50_ms".into(),
        json!((median(&a.seq) - median(&b.seq)) * 1e3),
    );
    out.insert(
        "added_p99_ms".into(),
        json!((quantile(&a.seq, 0.99) - quantile(&b.seq, 0.99)) * 1e3),
    );
    Value::Object(out)
}

/// [`compare_json`] of a feature `on` against `off` (the metering and tracing
/// comparisons), with the closed loop's latency ratios too: a feature's cost may show
/// only under load, its background threads competing for CPU.
pub fn on_off_json(on: &Target, off: &Target) -> Value {
    let mut v = compare_json(("on", on), ("off", off));
    v["on_over_off"]["closed_loop_latency_p50"] =
        json!(ratio(median(&on.closed), median(&off.closed)));
    v["on_over_off"]["closed_loop_latency_p99"] = json!(ratio(
        quantile(&on.closed, 0.99),
        quantile(&off.closed, 0.99)
    ));
    v
}

impl Overhead {
    pub fn to_json(&self) -> Value {
        compare_json(("gateway", &self.gateway), ("direct", &self.direct))
    }
}

pub fn measure(args: &Args, deadline: &Deadline) -> Result<Overhead, String> {
    let (mut gw, gw_base) = spawn_gateway(args, &["--min-workers", "1"])?;
    let mut direct: Option<std::process::Child> = None;
    let result = (|| {
        wait_ready(&gw_base, &mut gw, Duration::from_secs(60))
            .map_err(|e| format!("gateway: {e}"))?;
        wait_warm(args, &gw_base).map_err(|e| format!("gateway workers never ready: {e}"))?;
        // The direct worker runs on as many threads as the gateway gave its worker.
        let (mut cmd, direct_base) = worker(args, &args.model);
        if let Some(threads) = gateway_worker_threads(&gw_base, &args.model) {
            cmd.args(["--threads", &threads.to_string()]);
        }
        let child = direct.insert(process::spawn(&mut cmd)?);
        wait_ready(&direct_base, child, Duration::from_secs(300))
            .map_err(|e| format!("worker: {e}"))?;
        let [gateway, direct] = compare(
            args,
            deadline,
            [("gateway", &gw_base), ("direct", &direct_base)],
        )?;
        Ok(Overhead { gateway, direct })
    })();
    if let Some(d) = direct.as_mut() {
        stop(d);
    }
    stop(&mut gw);
    result
}

/// Waits until the gateway at `base` has every pool's warm worker (`--model`'s and
/// `--whisper-model`'s) ready and none starting, so that no worker start runs during a
/// measurement.
pub fn wait_warm(args: &Args, base: &str) -> Result<(), String> {
    let mut models = vec![args.model.as_str()];
    if !args.whisper_model.is_empty() {
        models.push(&args.whisper_model);
    }
    metrics::wait_for(base, Duration::from_secs(300), |m| {
        models.iter().all(|model| {
            prom::sum(m, "surge_workers", &[("model", model), ("state", "ready")]) >= 1.0
        }) && prom::sum(m, "surge_workers", &[("state", "starting")]) == 0.0
    })
}

/// Measures two ready targets, `(name, base URL)`, alike: 20 warm-up chats each, then in
/// each of `--rounds` rounds its share of `--sequential` chats one at a time, then
/// `--closed-requests` by `--concurrency` clients. Who goes first alternates from round to
/// round, so that a drift over the run (heat, caches, the ledger growing) falls on both.
/// Two gateways measured side by side (the metering and tracing comparisons): both
/// answering, both with their warm workers up — they start at once, and no start may run
/// during the measurement — then [`compare`]d.
pub fn side_by_side(
    args: &Args,
    deadline: &Deadline,
    gateways: [(&str, &str, &mut std::process::Child); 2],
) -> Result<[Target; 2], String> {
    let mut named = Vec::new();
    for (name, base, child) in gateways {
        wait_ready(base, child, Duration::from_secs(60))
            .map_err(|e| format!("gateway ({name}): {e}"))?;
        named.push((name, base));
    }
    for (name, base) in &named {
        wait_warm(args, base).map_err(|e| format!("gateway ({name}) workers never ready: {e}"))?;
    }
    compare(args, deadline, [named[0], named[1]])
}

pub fn compare(
    args: &Args,
    deadline: &Deadline,
    targets: [(&str, &str); 2],
) -> Result<[Target; 2], String> {
    let agent = new_agent();
    for (_, base) in targets {
        for _ in 0..20 {
            chat(&agent, base, &args.model)?; // warm-up (connections, caches)
        }
    }
    let mut figs = [Target::default(), Target::default()];
    let rounds = args.rounds.max(1);
    for round in 0..rounds {
        let per_round = args.sequential / rounds + usize::from(round < args.sequential % rounds);
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
    Ok(figs)
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
    print_comparison(
        args,
        ["metric", "gateway", "direct worker", "gateway ÷ direct"],
        "the gateway",
        g,
        d,
    );
}

/// The table of two targets' figures, `a`'s, `b`'s and `a ÷ b` (under `columns`), and
/// what `a` adds to the sequential latency ("Added by `added_by`").
pub fn print_comparison(args: &Args, columns: [&str; 4], added_by: &str, a: &Target, b: &Target) {
    print_head(&columns);
    let c = args.concurrency;
    let rows = [
        (
            "latency p50, sequential (ms)".to_string(),
            median(&a.seq) * 1e3,
            median(&b.seq) * 1e3,
        ),
        (
            "latency p99, sequential (ms)".to_string(),
            quantile(&a.seq, 0.99) * 1e3,
            quantile(&b.seq, 0.99) * 1e3,
        ),
        (
            format!("requests/s, {c} clients (median of rounds)"),
            median(&a.rps),
            median(&b.rps),
        ),
        (
            format!("latency p50, {c} clients (ms)"),
            median(&a.closed) * 1e3,
            median(&b.closed) * 1e3,
        ),
        (
            format!("latency p99, {c} clients (ms)"),
            quantile(&a.closed, 0.99) * 1e3,
            quantile(&b.closed, 0.99) * 1e3,
        ),
    ];
    for (name, x, y) in rows {
        println!("| {name} | {x:.2} | {y:.2} | {:.2}× |", ratio(x, y));
    }
    println!(
        "\nAdded by {added_by}: {:.2} ms at p50, {:.2} ms at p99 (sequential).\n",
        (median(&a.seq) - median(&b.seq)) * 1e3,
        (quantile(&a.seq, 0.99) - quantile(&b.seq, 0.99)) * 1e3
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The overhead's JSON as it was before [`compare_json`] was shared with the metering
    /// comparison: consumers of `gateway-bench.json` read these keys.
    #[test]
    fn overhead_json_is_unchanged() {
        let t = |s: f64| Target {
            seq: vec![0.001 * s, 0.002 * s, 0.004 * s],
            rps: vec![100.0 / s, 110.0 / s],
            closed: vec![0.01 * s, 0.02 * s],
        };
        let o = Overhead {
            gateway: t(2.0),
            direct: t(1.0),
        };
        let want = r#"{"added_p50_ms":2.0,"added_p99_ms":4.0,"direct":{"closed_loop_latency_p50_ms":10.0,"closed_loop_latency_p99_ms":20.0,"closed_loop_rps_median":100.0,"closed_loop_rps_rounds":[100.0,110.0],"sequential_p50_ms":2.0,"sequential_p99_ms":4.0,"sequential_samples":3},"gateway":{"closed_loop_latency_p50_ms":20.0,"closed_loop_latency_p99_ms":40.0,"closed_loop_rps_median":50.0,"closed_loop_rps_rounds":[50.0,55.0],"sequential_p50_ms":4.0,"sequential_p99_ms":8.0,"sequential_samples":3},"gateway_over_direct":{"closed_loop_rps":0.5,"sequential_p50":2.0,"sequential_p99":2.0}}"#;
        // Compared as values: key order follows serde_json's features (llguidance turns
        // on `preserve_order` for the whole build).
        let want: serde_json::Value = serde_json::from_str(want).unwrap();
        assert_eq!(o.to_json(), want);
    }
}
