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

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::Parser;
use serde_json::{json, Value};
use surge_loadtest::server::{free_port, peak_rss_mib, stop, wait_ready, warn_if_busy};
use surge_loadtest::speech::{
    duration_s, synthesize, testdata_dir, Corpus, PeerWer, Score, TempDir, FORMATS,
};
use surge_loadtest::stats::median;
use surge_loadtest::transcribe::{transcribe_bytes, transcribe_file};
use surge_loadtest::wer::{wer, word_errors};

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

/// One server's figures from one round.
#[derive(Debug, Clone, Default)]
struct Round {
    ready_s: f64,
    load_s: Option<f64>,
    rtf_runs_s: Vec<f64>,
    passage_wer: f64,
    passage_text: String,
    /// (concurrency, audio s/s, req/s, latency p50)
    conc: Vec<(usize, f64, f64, f64)>,
    /// VmHWM after the RTF runs (one request at a time).
    peak_rss_single_mib: f64,
    peak_rss_mib: f64,
}

struct Clips {
    passage: PathBuf,
    passage_s: f64,
    passage_ref: PathBuf,
    passage_text: String,
    /// (path, seconds, audio bytes)
    sentences: Vec<(PathBuf, f64, Vec<u8>)>,
}

fn main() {
    let args = Args::parse();
    if let Err(e) = run(&args) {
        eprintln!("whisper-bench: {e}");
        std::process::exit(1);
    }
}

fn run(args: &Args) -> Result<(), String> {
    let conc: Vec<usize> = args
        .concurrency
        .split(',')
        .filter_map(|c| c.trim().parse().ok())
        .collect();
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
        return corpus_wer(args, tmp.path());
    }
    let clips = make_clips(args, tmp.path())?;
    eprintln!(
        "clips: passage {:.1} s, {} sentences of {:.1}–{:.1} s",
        clips.passage_s,
        clips.sentences.len(),
        clips.sentences.iter().map(|c| c.1).fold(f64::MAX, f64::min),
        clips.sentences.iter().map(|c| c.1).fold(0.0, f64::max)
    );

    let mut surge: Vec<Round> = Vec::new();
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
                    match surge_round(bin, args, &clips, &conc) {
                        Ok(r) => surge.push(r),
                        Err(e) => {
                            eprintln!("surge failed: {e}");
                            surge_err = Some(e);
                        }
                    }
                }
            } else if let (Some(py), None) = (&args.peer_python, &peer_err) {
                eprintln!("round {} / {}: faster-whisper", round + 1, args.rounds);
                match peer_round(py, args, &clips, tmp.path()) {
                    Ok(r) => peer.push(r),
                    Err(e) => {
                        eprintln!("faster-whisper failed: {e}");
                        peer_err = Some(e);
                    }
                }
            }
        }
    }
    let surge_sum = (!surge.is_empty()).then(|| summarize_surge(&surge, &conc, clips.passage_s));
    let peer_sum = (!peer.is_empty()).then(|| summarize_peer(&peer, &conc));
    print_table(
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
        std::fs::write(path, serde_json::to_string_pretty(&out).unwrap() + "\n")
            .map_err(|e| format!("{}: {e}", path.display()))?;
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

/// `--corpus-wer`: surge's WER on every corpus clip and format against the peer's record.
fn corpus_wer(args: &Args, dir: &Path) -> Result<(), String> {
    let bin = args.surge.as_ref().ok_or("--corpus-wer needs --surge")?;
    let corpus_dir = args.corpus.clone().unwrap_or_else(testdata_dir);
    let corpus = Corpus::load(&corpus_dir)?;
    let peer = PeerWer::load(&corpus_dir.join("faster_whisper_wer.json"))?;
    let (mut child, base) = spawn_surge(bin, args)?;
    let result = (|| {
        wait_ready(&base, &mut child, Duration::from_secs(300))?;
        let fields = [("model", args.model.as_str()), ("response_format", "json")];
        let items: Vec<(String, &str)> = corpus
            .sentences
            .iter()
            .enumerate()
            .map(|(i, s)| (format!("sentence{}", i + 1), s.as_str()))
            .chain([("passage".to_string(), corpus.passage.as_str())])
            .collect();
        // format → (sentence edits, sentence words, passage edits, passage words)
        let mut totals = vec![(0, 0, 0, 0); FORMATS.len()];
        let mut rows = Vec::new();
        for (stem, text) in &items {
            let paths = synthesize(text, dir, stem, &FORMATS)?;
            for (k, (fmt, path)) in FORMATS.iter().zip(&paths).enumerate() {
                let t = transcribe_file(&base, path, &fields)?;
                let (e, n) = word_errors(text, &t.text);
                let p = peer.clip(stem, fmt);
                eprintln!(
                    "{stem}.{fmt}: WER {:.3} (faster-whisper {}): {}",
                    e as f64 / n as f64,
                    p.map(|p| format!("{:.3}", p.wer())).unwrap_or("?".into()),
                    t.text
                );
                if stem == "passage" {
                    totals[k].2 += e;
                    totals[k].3 += n;
                } else {
                    totals[k].0 += e;
                    totals[k].1 += n;
                }
                rows.push(
                    json!({"clip": stem, "format": fmt, "edits": e, "ref_words": n,
                                 "wer": e as f64 / n as f64, "text": t.text,
                                 "peer_wer": p.map(|p| p.wer())}),
                );
            }
        }
        // The bar (as in the worker's end-to-end test) applies to each format's clips
        // together: one word is 0.65 points of the sentences alone, so per-subset
        // figures are shown but a single near-tie cannot fail the run.
        println!("| format | all clips WER: surge | faster-whisper | bar (+0.02) | sentences: surge / faster-whisper | passage: surge / faster-whisper |");
        println!("|---|---|---|---|---|---|");
        let mut ok = true;
        let mut summary = serde_json::Map::new();
        for (k, fmt) in FORMATS.iter().enumerate() {
            let (se, sn, pe, pn) = totals[k];
            let (sw, pw) = (se as f64 / sn as f64, pe as f64 / pn as f64);
            let aw = (se + pe) as f64 / (sn + pn) as f64;
            let (ps, pp) = (peer.sentences(fmt), peer.passage(fmt));
            let wer = |s: Option<Score>| s.map(|s| s.wer()).unwrap_or(f64::NAN);
            let pa = match (ps, pp) {
                (Some(a), Some(b)) => {
                    (a.edits + b.edits) as f64 / (a.ref_words + b.ref_words) as f64
                }
                _ => f64::NAN,
            };
            let pass = aw <= pa + 0.02 + 1e-9;
            ok &= pass;
            println!(
                "| {fmt} | {aw:.3}{} | {pa:.3} | {:.3} | {sw:.3} / {:.3} | {pw:.3} / {:.3} |",
                if pass { "" } else { " ✗" },
                pa + 0.02,
                wer(ps),
                wer(pp),
            );
            summary.insert(
                fmt.to_string(),
                json!({
                    "all_clips": {"edits": se + pe, "ref_words": sn + pn, "wer": aw, "peer_wer": pa},
                    "sentences_corpus": {"edits": se, "ref_words": sn, "wer": sw, "peer_wer": wer(ps)},
                    "passage": {"edits": pe, "ref_words": pn, "wer": pw, "peer_wer": wer(pp)},
                }),
            );
        }
        if let Some(path) = &args.json {
            let out = json!({"model": args.model, "formats": summary, "clips": rows});
            std::fs::write(path, serde_json::to_string_pretty(&out).unwrap() + "\n")
                .map_err(|e| format!("{}: {e}", path.display()))?;
        }
        if ok {
            Ok(())
        } else {
            Err("surge's WER is above the bar (✗)".to_string())
        }
    })();
    stop(&mut child);
    result
}

/// Starts `surge worker` on the benchmark's model (with `--surge-arg`s) on a free local
/// port; returns the process and its base URL. The caller waits for it to be ready.
fn spawn_surge(bin: &Path, args: &Args) -> Result<(Child, String), String> {
    let port = free_port();
    let child = Command::new(bin)
        .args(["worker", "--model", &args.model, "--listen"])
        .arg(format!("tcp:127.0.0.1:{port}"))
        .args(&args.surge_arg)
        .env("SURGE_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("spawn {}: {e}", bin.display()))?;
    Ok((child, format!("http://127.0.0.1:{port}")))
}

fn make_clips(args: &Args, dir: &Path) -> Result<Clips, String> {
    let corpus = Corpus::load(&args.corpus.clone().unwrap_or_else(testdata_dir))?;
    let passage = synthesize(&corpus.passage, dir, "passage", &["wav"])?.remove(0);
    let passage_ref = dir.join("passage.txt");
    std::fs::write(&passage_ref, &corpus.passage).map_err(|e| e.to_string())?;
    let mut sentences = Vec::new();
    for (i, s) in corpus.sentences.iter().enumerate() {
        let p = synthesize(s, dir, &format!("sentence{}", i + 1), &["wav"])?.remove(0);
        let bytes = std::fs::read(&p).map_err(|e| e.to_string())?;
        sentences.push((p.clone(), duration_s(&p)?, bytes));
    }
    Ok(Clips {
        passage_s: duration_s(&passage)?,
        passage,
        passage_ref,
        passage_text: corpus.passage,
        sentences,
    })
}

fn surge_round(bin: &Path, args: &Args, clips: &Clips, conc: &[usize]) -> Result<Round, String> {
    let spawned = Instant::now();
    let (mut child, base) = spawn_surge(bin, args)?;
    let result = (|| {
        wait_ready(&base, &mut child, Duration::from_secs(300))?;
        let mut r = Round {
            ready_s: spawned.elapsed().as_secs_f64(),
            ..Round::default()
        };
        r.load_s = ureq::get(&format!("{base}/health"))
            .call()
            .ok()
            .and_then(|resp| resp.into_json::<Value>().ok())
            .and_then(|v| v["load_seconds"].as_f64());
        let fields = [("model", args.model.as_str()), ("response_format", "json")];
        let passage = std::fs::read(&clips.passage).map_err(|e| e.to_string())?;

        transcribe_bytes(&base, "passage.wav", &passage, &fields)?; // warm-up
        for _ in 0..args.rtf_runs.max(1) {
            let t = transcribe_bytes(&base, "passage.wav", &passage, &fields)?;
            r.rtf_runs_s.push(t.elapsed);
            r.passage_wer = wer(&clips.passage_text, &t.text);
            r.passage_text = t.text;
        }
        r.peak_rss_single_mib = peak_rss_mib(child.id());

        for &c in conc {
            let next = AtomicUsize::new(0);
            let done: Mutex<Vec<(f64, f64)>> = Mutex::new(Vec::new()); // (audio s, latency)
            let wall = Instant::now();
            let errors: Vec<String> = std::thread::scope(|sc| {
                let hs: Vec<_> = (0..c)
                    .map(|_| {
                        let (next, done, base, fields) = (&next, &done, &base, &fields);
                        sc.spawn(move || -> Result<(), String> {
                            loop {
                                let i = next.fetch_add(1, Ordering::Relaxed);
                                if i >= args.requests {
                                    return Ok(());
                                }
                                let (path, secs, bytes) =
                                    &clips.sentences[i % clips.sentences.len()];
                                let name = path.file_name().unwrap().to_string_lossy();
                                let t = transcribe_bytes(base, &name, bytes, fields)?;
                                done.lock().unwrap().push((*secs, t.elapsed));
                            }
                        })
                    })
                    .collect();
                hs.into_iter()
                    .filter_map(|h| h.join().unwrap_or_else(|_| Err("panicked".into())).err())
                    .collect()
            });
            let wall = wall.elapsed().as_secs_f64();
            if let Some(e) = errors.first() {
                return Err(format!("{c} concurrent: {e}"));
            }
            let done = done.into_inner().unwrap();
            let audio: f64 = done.iter().map(|d| d.0).sum();
            let lat: Vec<f64> = done.iter().map(|d| d.1).collect();
            eprintln!(
                "surge: {c} concurrent: {:.2} req/s",
                done.len() as f64 / wall
            );
            r.conc
                .push((c, audio / wall, done.len() as f64 / wall, median(&lat)));
        }
        r.peak_rss_mib = peak_rss_mib(child.id());
        Ok(r)
    })();
    stop(&mut child);
    result
}

fn peer_round(py: &Path, args: &Args, clips: &Clips, dir: &Path) -> Result<Value, String> {
    // The peer runs in the clips' directory: hand it absolute paths.
    let abs = |p: &Path| std::fs::canonicalize(p).map_err(|e| format!("{}: {e}", p.display()));
    let mut cmd = Command::new(py);
    cmd.arg(abs(&args.peer_script)?);
    if let Some(bin) = &args.surge {
        cmd.arg("--surge").arg(abs(bin)?);
    }
    cmd.args(["--model-name", &args.model])
        .args(["--threads", &args.threads.to_string()])
        .arg("bench")
        .arg("--passage")
        .arg(&clips.passage)
        .arg("--passage-ref")
        .arg(&clips.passage_ref)
        .args(["--rtf-runs", &args.rtf_runs.max(1).to_string()])
        .args(["--concurrency", &args.concurrency])
        .args(["--requests", &args.requests.to_string()])
        .arg("--clips")
        .args(clips.sentences.iter().map(|c| &c.0))
        .current_dir(dir)
        .stderr(Stdio::inherit());
    let spawned_at = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0);
    cmd.arg("--spawned-at").arg(format!("{spawned_at:.6}"));
    let out = cmd.output().map_err(|e| format!("{}: {e}", py.display()))?;
    if !out.status.success() {
        return Err(format!("faster-whisper peer: {}", out.status));
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let last = stdout.lines().last().unwrap_or("");
    serde_json::from_str(last).map_err(|e| format!("faster-whisper peer output: {e}: {last}"))
}

/// Per-server summary: medians over rounds, RTF from the best run of all rounds, the
/// highest peak RSS.
#[derive(Debug, Clone)]
struct Summary {
    ready_s: f64,
    load_s: Option<f64>,
    rtf: f64,
    passage_wer: f64,
    /// (concurrency, audio s/s, req/s, latency p50)
    conc: Vec<(usize, f64, f64, f64)>,
    peak_rss_single_mib: f64,
    peak_rss_mib: f64,
}

impl Summary {
    fn to_json(&self) -> Value {
        json!({
            "ready_after_spawn_s": self.ready_s,
            "load_s": self.load_s,
            "rtf": self.rtf,
            "passage_wer": self.passage_wer,
            "throughput": self.conc.iter().map(|(c, a, r, l)| json!({
                "concurrency": c, "audio_s_per_s": a, "req_per_s": r, "latency_p50_s": l,
            })).collect::<Vec<_>>(),
            "peak_rss_single_mib": self.peak_rss_single_mib,
            "peak_rss_mib": self.peak_rss_mib,
        })
    }
}

fn round_json(r: &Round) -> Value {
    json!({
        "ready_after_spawn_s": r.ready_s,
        "load_s": r.load_s,
        "rtf_runs_s": r.rtf_runs_s,
        "passage_wer": r.passage_wer,
        "passage_text": r.passage_text,
        "throughput": r.conc.iter().map(|(c, a, q, l)| json!({
            "concurrency": c, "audio_s_per_s": a, "req_per_s": q, "latency_p50_s": l,
        })).collect::<Vec<_>>(),
        "peak_rss_single_mib": r.peak_rss_single_mib,
        "peak_rss_mib": r.peak_rss_mib,
    })
}

fn summarize_surge(rounds: &[Round], conc: &[usize], passage_s: f64) -> Summary {
    let load: Vec<f64> = rounds.iter().filter_map(|r| r.load_s).collect();
    Summary {
        ready_s: median(&rounds.iter().map(|r| r.ready_s).collect::<Vec<_>>()),
        load_s: (!load.is_empty()).then(|| median(&load)),
        rtf: rounds
            .iter()
            .flat_map(|r| r.rtf_runs_s.iter().copied())
            .fold(f64::MAX, f64::min)
            / passage_s,
        passage_wer: rounds[0].passage_wer,
        conc: conc
            .iter()
            .map(|&c| {
                let pick = |k: usize| {
                    median(
                        &rounds
                            .iter()
                            .flat_map(|r| r.conc.iter().filter(|x| x.0 == c))
                            .map(|x| [x.1, x.2, x.3][k])
                            .collect::<Vec<_>>(),
                    )
                };
                (c, pick(0), pick(1), pick(2))
            })
            .collect(),
        peak_rss_single_mib: rounds
            .iter()
            .map(|r| r.peak_rss_single_mib)
            .fold(0.0, f64::max),
        peak_rss_mib: rounds.iter().map(|r| r.peak_rss_mib).fold(0.0, f64::max),
    }
}

fn summarize_peer(rounds: &[Value], conc: &[usize]) -> Summary {
    let f = |v: &Value, k: &str| v[k].as_f64().unwrap_or(f64::NAN);
    let med = |k: &str| median(&rounds.iter().map(|r| f(r, k)).collect::<Vec<_>>());
    Summary {
        ready_s: med("ready_after_spawn_s"),
        load_s: Some(med("load_s")),
        rtf: rounds
            .iter()
            .flat_map(|r| {
                let secs = f(r, "passage_audio_s");
                r["rtf_runs_s"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|x| x.as_f64())
                    .map(move |x| x / secs)
                    .collect::<Vec<_>>()
            })
            .fold(f64::MAX, f64::min),
        passage_wer: f(&rounds[0], "passage_wer"),
        conc: conc
            .iter()
            .map(|&c| {
                let pick = |k: &str| {
                    median(
                        &rounds
                            .iter()
                            .flat_map(|r| r["throughput"].as_array().cloned().unwrap_or_default())
                            .filter(|t| t["concurrency"].as_u64() == Some(c as u64))
                            .map(|t| f(&t, k))
                            .collect::<Vec<_>>(),
                    )
                };
                (
                    c,
                    pick("audio_s_per_s"),
                    pick("req_per_s"),
                    pick("latency_p50_s"),
                )
            })
            .collect(),
        peak_rss_single_mib: rounds
            .iter()
            .map(|r| f(r, "peak_rss_single_mib"))
            .fold(0.0, f64::max),
        peak_rss_mib: rounds
            .iter()
            .map(|r| f(r, "peak_rss_mib"))
            .fold(0.0, f64::max),
    }
}

/// (label, surge, peer, higher is better)
fn rows(
    s: Option<&Summary>,
    p: Option<&Summary>,
    conc: &[usize],
    passage_s: f64,
) -> Vec<(String, [Option<f64>; 2], Option<bool>)> {
    let both = |g: &dyn Fn(&Summary) -> Option<f64>| [s.and_then(g), p.and_then(g)];
    let mut rows = vec![
        (
            "ready after spawn (s)".to_string(),
            both(&|x| Some(x.ready_s)),
            Some(false),
        ),
        (
            "model load (s)".to_string(),
            both(&|x| x.load_s),
            Some(false),
        ),
        (
            format!("RTF, {passage_s:.0} s clip (best)"),
            both(&|x| Some(x.rtf)),
            Some(false),
        ),
        (
            format!("WER, {passage_s:.0} s clip"),
            both(&|x| Some(x.passage_wer)),
            None,
        ),
    ];
    for (i, c) in conc.iter().enumerate() {
        rows.push((
            format!("throughput, {c} concurrent (audio s/s)"),
            both(&|x| x.conc.get(i).map(|t| t.1)),
            Some(true),
        ));
        rows.push((
            format!("throughput, {c} concurrent (req/s)"),
            both(&|x| x.conc.get(i).map(|t| t.2)),
            Some(true),
        ));
        rows.push((
            format!("latency p50, {c} concurrent (s)"),
            both(&|x| x.conc.get(i).map(|t| t.3)),
            Some(false),
        ));
    }
    rows.push((
        "peak RSS, one request at a time (MiB)".to_string(),
        both(&|x| Some(x.peak_rss_single_mib)),
        Some(false),
    ));
    rows.push((
        "peak RSS, whole run (MiB)".to_string(),
        both(&|x| Some(x.peak_rss_mib)),
        Some(false),
    ));
    rows
}

/// surge's advantage: surge ÷ peer where higher is better, peer ÷ surge where lower is
/// better; > 1 means surge is better either way.
fn advantage(v: [Option<f64>; 2], higher_better: bool) -> Option<f64> {
    let (s, p) = (v[0]?, v[1]?);
    let r = if higher_better { s / p } else { p / s };
    r.is_finite().then_some(r)
}

fn ratios(s: Option<&Summary>, p: Option<&Summary>, conc: &[usize], passage_s: f64) -> Value {
    let mut m = serde_json::Map::new();
    for (label, v, hb) in rows(s, p, conc, passage_s) {
        if let Some(r) = hb.and_then(|hb| advantage(v, hb)) {
            m.insert(label, json!(r));
        }
    }
    Value::Object(m)
}

fn print_table(s: Option<&Summary>, p: Option<&Summary>, conc: &[usize], passage_s: f64) {
    println!("| metric | surge | faster-whisper | surge advantage (> 1: surge better) |");
    println!("|---|---|---|---|");
    let cell = |v: Option<f64>| v.map(|v| format!("{v:.3}")).unwrap_or_else(|| "–".into());
    for (label, v, hb) in rows(s, p, conc, passage_s) {
        let ratio = match hb {
            Some(hb) => advantage(v, hb)
                .map(|r| {
                    format!(
                        "{r:.2}× ({})",
                        if hb { "surge ÷ peer" } else { "peer ÷ surge" }
                    )
                })
                .unwrap_or_else(|| "–".into()),
            None => match (v[0], v[1]) {
                (Some(a), Some(b)) => format!("{:+.3} (surge − peer)", a - b),
                _ => "–".into(),
            },
        };
        println!("| {label} | {} | {} | {ratio} |", cell(v[0]), cell(v[1]));
    }
}
