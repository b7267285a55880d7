//! Benchmarks `surge serve`: what the gateway adds to a request over the worker behind it,
//! what its metering and its trace export add, and how long a request takes when no
//! worker runs (cold start).
//! Loopback only; fixed counts and `--max-seconds` bound the run.
//!
//! ```text
//! gateway-bench --surge target/release/surge --json gateway-bench.json
//! ```
//! 1. **Overhead**: a gateway (`serve --no-pull --min-workers 1`: one warm worker per
//!    cached model) and a direct `surge worker` for the LLM with the gateway's worker
//!    settings (its `--threads` too), side by side. Short non-streaming chats (`max_tokens: 1`, temperature 0, a
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
//! 4. **Metering** (`--metering`, off by default; `--only-metering` skips 1 to 3):
//!    two gateways (`serve --no-pull --min-workers 1`, each with its own scratch
//!    `--data-dir` so they share no ledger), one metering every request (usage record to
//!    the SQLite ledger, budgets, billed counters) and one with `--no-metering`, side by
//!    side; measured exactly as the overhead (1) is, rounds alternating who goes first.
//!    Afterwards the metered gateway must have recorded a usage record for every request
//!    and the other none, so that the figures compare metering on and off. Runs right
//!    after 1, before the cold starts, as a steady-state measurement.
//! 5. **Tracing** (`--tracing`, off by default; `--only-tracing` skips 1 to 3): two
//!    gateways (`serve --no-pull --min-workers 1`, each with its own scratch
//!    `--data-dir`), one with `OTEL_EXPORTER_OTLP_ENDPOINT` pointing at an OTLP/HTTP sink
//!    that the bench runs on loopback (answers 200, counts the spans of each batch; every
//!    request sampled, the SDK's batch interval or `OTEL_BSP_SCHEDULE_DELAY`), and one
//!    without it (so no spans at all), side by side; measured exactly as the overhead (1)
//!    is. Afterwards the sink must have received more spans than the traced gateway
//!    served requests, and no more of its request spans than requests, so that the
//!    figures compare tracing on and off. Runs after 4, before the cold starts.
//!
//! `--only-metering` and `--only-tracing` skip 1, 2 and 3; `--metering` and `--tracing`
//! still add 4 and 5 to them (`--only-metering --tracing`: the two comparisons alone).
//!
//! One module per measurement ([`overhead`], [`metering`], [`tracing`], [`cold_start`],
//! [`worker_cold_start`]: its figures, its run, its table; [`overhead`] also holds the
//! side-by-side comparison that [`metering`] and [`tracing`] reuse); [`surge`] starts the
//! processes and times the first requests they share. Common bench pieces are in
//! `surge_loadtest::bench`.

mod cold_start;
mod metering;
mod overhead;
mod surge;
mod tracing;
mod worker_cold_start;

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use serde_json::json;
use surge_loadtest::bench::Deadline;
use surge_loadtest::server::warn_if_busy;

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
    /// Rounds of the overhead, metering and tracing measurements (the two targets
    /// alternate in each).
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
    /// Direct worker cold starts repack the LLM's weights on every start instead of
    /// mapping the model cache's packed-weights file (what that file saves).
    #[arg(long)]
    no_packed_weights: bool,
    /// Also measure metering's cost: a metered and a `--no-metering` gateway side by side.
    #[arg(long)]
    metering: bool,
    /// Only the metering measurement (implies `--metering`; skips the overhead and both
    /// cold starts).
    #[arg(long, conflicts_with = "only_worker")]
    only_metering: bool,
    /// Also measure trace export's cost: a gateway exporting OpenTelemetry traces (to a
    /// sink in the bench) and one without, side by side.
    #[arg(long)]
    tracing: bool,
    /// Only the tracing measurement (implies `--tracing`; skips the overhead and both
    /// cold starts).
    #[arg(long, conflicts_with_all = ["only_worker", "only_metering"])]
    only_tracing: bool,
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

fn main() {
    let args = Args::parse();
    if let Err(e) = run(&args) {
        eprintln!("gateway-bench: {e}");
        std::process::exit(1);
    }
}

fn run(args: &Args) -> Result<(), String> {
    let load1 = warn_if_busy();
    let deadline = Deadline::after(Duration::from_secs(args.max_seconds));
    // The overhead and the gateway cold starts run unless one measurement alone was asked.
    let all = !args.only_worker && !args.only_metering && !args.only_tracing;
    let overhead = all
        .then(|| overhead::measure(args, &deadline))
        .transpose()?;
    let metering = (args.metering || args.only_metering)
        .then(|| metering::measure(args, &deadline))
        .transpose()?;
    let tracing = (args.tracing || args.only_tracing)
        .then(|| tracing::measure(args, &deadline))
        .transpose()?;
    let cold = if all {
        cold_start::measure(args, &deadline)?
    } else {
        Vec::new()
    };
    let worker_cold = if args.worker_cold_starts > 0 && !args.only_metering && !args.only_tracing {
        worker_cold_start::measure(args, &deadline)?
    } else {
        Vec::new()
    };
    if let Some(o) = &overhead {
        overhead::print(args, o);
    }
    if let Some(m) = &metering {
        metering::print(args, m);
    }
    if let Some(t) = &tracing {
        tracing::print(args, t);
    }
    if all {
        cold_start::print(&cold);
    }
    worker_cold_start::print(args, &worker_cold);
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
            "overhead": overhead.as_ref().map(overhead::Overhead::to_json),
            "metering": metering.as_ref().map(metering::Metering::to_json),
            "tracing": tracing.as_ref().map(tracing::Tracing::to_json),
            "cold_start": cold.iter().map(cold_start::ColdFigures::to_json).collect::<Vec<_>>(),
            "worker_cold_start": worker_cold
                .iter()
                .map(worker_cold_start::WorkerCold::to_json)
                .collect::<Vec<_>>(),
        });
        std::fs::write(p, serde_json::to_string_pretty(&out).unwrap_or_default())
            .map_err(|e| format!("{}: {e}", p.display()))?;
    }
    Ok(())
}
