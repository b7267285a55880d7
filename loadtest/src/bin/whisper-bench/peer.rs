//! One round of faster-whisper: `peers/faster_whisper_peer.py bench` on the same clips,
//! which measures itself and prints its figures as one JSON line.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::Value;

use crate::clips::Clips;
use crate::Args;

pub fn round(py: &Path, args: &Args, clips: &Clips, dir: &Path) -> Result<Value, String> {
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
