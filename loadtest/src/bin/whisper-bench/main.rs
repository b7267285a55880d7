//! Benchmarks surge's Whisper worker against faster-whisper on the same CTranslate2 weights,
//! alternating them in one run so a busy machine hurts both alike, and prints each figure
//! side by side with a ratio where > 1 means surge is better.
//!
//! ```text
//! PY="$(scripts/peers/faster-whisper.sh)"
//! whisper-bench --surge target/release/surge --peer-python "$PY" --json whisper-bench.json
//! ```
//! The clips are generated at run time from `testdata/speech/` (espeak-ng, `sox -D` to
//! 16 kHz mono wav). Measures per server: spawn → ready and model load time; real-time
//! factor on the ~64 s passage (best run after a warm-up); throughput (audio seconds per
//! second, requests per second, latency p50) with 1/4/8 concurrent requests over the 4–7 s
//! sentence clips, a fixed number of requests per level; peak RSS; WER on the passage.
//! surge: `surge worker --model whisper-tiny.en --listen tcp:…`, requests are
//! `POST /v1/audio/transcriptions` (multipart, `response_format=json`). faster-whisper:
//! `loadtest/peers/faster_whisper_peer.py bench` (int8, greedy, `num_workers=C` with C
//! threads calling `transcribe`; see that script).
//!
//! Modules: [`clips`] (made from the corpus), [`surge`] and [`peer`] (one round of each
//! server), [`summary`] (over the rounds: table and JSON), [`corpus_wer`] (`--corpus-wer`).

mod clips;
mod corpus_wer;
mod peer;
mod summary;
mod surge;

use std::path::{Path, PathBuf};

use clap::Parser;
use serde_json::{json, Value};
use surge_loadtest::bench::list;
use surge_loadtest::server::warn_if_busy;
use surge_loadtest::speech::TempDir;

use summary::{ratios, round_json, Summary};

#[derive(Parser)]
struct Args {
    /// The surge binary (runs `surge worker`).
    #[arg(long)]
    surge: Option<PathBuf>,
    /// Model both servers load (surge's cache name; the peer reads the same files).
    #[arg(long, default_value = "whisper-tiny.en")]
    model: String,
    /// Extra arguments for `surge worker` (repeatable), e.g. --surge-arg=--batch-wait-ms=20.
    #[arg(long, allow_hyphen_values = true)]
    surge_arg: Vec<String>,
    /// Python of the faster-whisper venv (`scripts/peers/faster-whisper.sh` prints it);
    /// without it the peer is skipped.
    #[arg(long)]
    peer_python: Option<PathBuf>,
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/peers/faster_whisper_peer.py"))]
    peer_script: PathBuf,
    /// CPU threads the peer uses in all (surge's worker sizes itself to the machine).
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Rounds; each starts every server afresh. Figures are medians over rounds, RTF the
    /// best run of all rounds.
    #[arg(long, default_value_t = 2)]
    rounds: usize,
    /// Timed passage transcriptions per round (after one warm-up).
    #[arg(long, default_value_t = 2)]
    rtf_runs: usize,
    #[arg(long, default_value = "1,4,8")]
    concurrency: String,
    /// Requests per concurrency level.
    #[arg(long, default_value_t = 16)]
    requests: usize,
    /// Corpus directory (sentences.txt, passage.txt).
    #[arg(long)]
    corpus: Option<PathBuf>,
    /// Write every figure here as JSON.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Instead of benchmarking: transcribe every corpus clip in wav, mp3, flac and ogg with
    /// surge and compare its WER with faster-whisper's recorded WER
    /// (testdata/speech/faster_whisper_wer.json) and issue 5's bar (peer + 0.02, over each
    /// format's clips together, as the worker's end-to-end test judges it).
    #[arg(long)]
    corpus_wer: bool,
}

fn main() {
    let args = Args::parse();
    if let Err(e) = run(&args) {
        eprintln!("whisper-bench: {e}");
        std::process::exit(1);
    }
}

fn run(args: &Args) -> Result<(), String> {
    let conc = list(&args.concurrency);
    if args.surge.is_none() && args.peer_python.is_none() {
        return Err("nothing to benchmark: pass --surge and/or --peer-python".into());
    }
    if args.peer_python.is_none() {
        eprintln!(
            "note: faster-whisper skipped (no --peer-python); \
             PY=\"$(scripts/peers/faster-whisper.sh)\" and pass --peer-python \"$PY\""
        );
    }
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    warn_if_busy();

    let tmp = TempDir::new("whisper-bench")?;
    if args.corpus_wer {
        return corpus_wer::run(args, tmp.path());
    }
    let clips = clips::make(args, tmp.path())?;
    eprintln!(
        "clips: passage {:.1} s, {} sentences of {:.1}–{:.1} s",
        clips.passage_s,
        clips.sentences.len(),
        clips.sentences.iter().map(|c| c.1).fold(f64::MAX, f64::min),
        clips.sentences.iter().map(|c| c.1).fold(0.0, f64::max)
    );

    let mut surge: Vec<surge::Round> = Vec::new();
    let mut peer: Vec<Value> = Vec::new();
    // A server that fails is reported and dropped; the other one still runs.
    let mut surge_err: Option<String> = None;
    let mut peer_err: Option<String> = None;
    for round in 0..args.rounds {
        // Alternate who goes first, so neither always runs on a freshly idle machine.
        let order: [bool; 2] = if round % 2 == 0 {
            [true, false]
        } else {
            [false, true]
        };
        for is_surge in order {
            if is_surge {
                if let (Some(bin), None) = (&args.surge, &surge_err) {
                    eprintln!("round {} / {}: surge", round + 1, args.rounds);
                    match surge::round(bin, args, &clips, &conc) {
                        Ok(r) => surge.push(r),
                        Err(e) => {
                            eprintln!("surge failed: {e}");
                            surge_err = Some(e);
                        }
                    }
                }
            } else if let (Some(py), None) = (&args.peer_python, &peer_err) {
                eprintln!("round {} / {}: faster-whisper", round + 1, args.rounds);
                match peer::round(py, args, &clips, tmp.path()) {
                    Ok(r) => peer.push(r),
                    Err(e) => {
                        eprintln!("faster-whisper failed: {e}");
                        peer_err = Some(e);
                    }
                }
            }
        }
    }
    let surge_sum = (!surge.is_empty()).then(|| summary::of_surge(&surge, &conc, clips.passage_s));
    let peer_sum = (!peer.is_empty()).then(|| summary::of_peer(&peer, &conc));
    summary::print_table(
        surge_sum.as_ref(),
        peer_sum.as_ref(),
        &conc,
        clips.passage_s,
    );

    if let Some(path) = &args.json {
        let out = json!({
            "model": args.model,
            "load_average_at_start": load.trim(),
            "clips": {
                "passage_s": clips.passage_s,
                "sentences_s": clips.sentences.iter().map(|c| c.1).collect::<Vec<_>>(),
            },
            "settings": {"rounds": args.rounds, "rtf_runs": args.rtf_runs,
                         "concurrency": conc, "requests_per_level": args.requests,
                         "peer_threads": args.threads, "surge_args": args.surge_arg},
            "surge": surge_sum.as_ref().map(Summary::to_json),
            "surge_rounds": surge.iter().map(round_json).collect::<Vec<_>>(),
            "faster_whisper": peer_sum.as_ref().map(Summary::to_json),
            "faster_whisper_rounds": peer,
            "errors": {"surge": surge_err, "faster_whisper": peer_err},
            "ratios_surge_better_above_1": ratios(surge_sum.as_ref(), peer_sum.as_ref(), &conc, clips.passage_s),
        });
        write_json(path, &out)?;
        eprintln!("wrote {}", path.display());
    }
    match (surge_err, peer_err) {
        (None, None) => Ok(()),
        (s, p) => Err([
            s.map(|e| format!("surge: {e}")),
            p.map(|e| format!("faster-whisper: {e}")),
        ]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join("; ")),
    }
}

/// `--json`: pretty, with a final newline.
fn write_json(path: &Path, v: &Value) -> Result<(), String> {
    std::fs::write(path, serde_json::to_string_pretty(v).unwrap() + "\n")
        .map_err(|e| format!("{}: {e}", path.display()))
}
