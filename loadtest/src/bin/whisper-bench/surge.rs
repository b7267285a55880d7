//! One round of surge's Whisper worker: spawn → ready, model load, real-time factor on the
//! passage, throughput at each concurrency over the sentence clips, peak memory.

use std::path::Path;
use std::process::Child;
use std::time::{Duration, Instant};

use serde_json::Value;
use surge_loadtest::bench::{closed_loop, process};
use surge_loadtest::server::{peak_rss_mib, stop, wait_ready};
use surge_loadtest::stats::median;
use surge_loadtest::transcribe::transcribe_bytes;
use surge_loadtest::wer::wer;

use crate::clips::Clips;
use crate::Args;

/// One server's figures from one round.
#[derive(Debug, Clone, Default)]
pub struct Round {
    pub ready_s: f64,
    pub load_s: Option<f64>,
    pub rtf_runs_s: Vec<f64>,
    pub passage_wer: f64,
    pub passage_text: String,
    /// (concurrency, audio s/s, req/s, latency p50)
    pub conc: Vec<(usize, f64, f64, f64)>,
    /// VmHWM after the RTF runs (one request at a time).
    pub peak_rss_single_mib: f64,
    pub peak_rss_mib: f64,
}

/// Starts `surge worker` on the benchmark's model (with `--surge-arg`s) on a free local
/// port; returns the process and its base URL. The caller waits for it to be ready.
pub fn spawn(bin: &Path, args: &Args) -> Result<(Child, String), String> {
    let (mut cmd, base) = process::surge_worker(bin, &args.model);
    cmd.args(&args.surge_arg);
    Ok((process::spawn(&mut cmd)?, base))
}

pub fn round(bin: &Path, args: &Args, clips: &Clips, conc: &[usize]) -> Result<Round, String> {
    let spawned = Instant::now();
    let (mut child, base) = spawn(bin, args)?;
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
            // (audio s, latency) of each request.
            let (wall, done) = closed_loop(
                c,
                args.requests,
                || (),
                |_, i| {
                    let (path, secs, bytes) = &clips.sentences[i % clips.sentences.len()];
                    let name = path.file_name().unwrap().to_string_lossy();
                    Ok((
                        *secs,
                        transcribe_bytes(&base, &name, bytes, &fields)?.elapsed,
                    ))
                },
            )
            .map_err(|e| format!("{c} concurrent: {e}"))?;
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
