//! The surge processes and the timed first requests that the measurements share.

use std::path::Path;
use std::process::{Child, Command};

use serde_json::json;
use surge_loadtest::bench::process;
use surge_loadtest::speech::{have_tools, synthesize, Corpus};
use surge_loadtest::sse::stream_chat;
use surge_loadtest::transcribe::transcribe_bytes;

use crate::Args;

/// What [`first_result`] times, for the LLM and for Whisper.
pub const LLM_FIRST: &str = "streaming chat sent → first content chunk";
pub const WHISPER_FIRST: &str = "transcription sent → response read";

/// `surge serve --no-pull` on a free loopback port with `extra` flags, in the bench's own
/// environment; returns it and its base URL.
pub fn spawn_gateway(args: &Args, extra: &[&str]) -> Result<(Child, String), String> {
    spawn_gateway_env(args, extra, &[])
}

/// [`spawn_gateway`] with its environment changed by `env`: `(name, Some(value))` sets
/// a variable, `(name, None)` removes it (the gateway's workers inherit both).
pub fn spawn_gateway_env(
    args: &Args,
    extra: &[&str],
    env: &[(&str, Option<&str>)],
) -> Result<(Child, String), String> {
    let (mut cmd, base) = process::surge_serve(&args.surge);
    cmd.arg("--no-pull").args(extra);
    home(args, &mut cmd);
    for (name, value) in env {
        match value {
            Some(v) => cmd.env(name, v),
            None => cmd.env_remove(name),
        };
    }
    Ok((process::spawn(&mut cmd)?, base))
}

/// `surge worker` for `model` on a free loopback port with the gateway's worker settings
/// (its spawn passes `--device`, auto → cpu without a GPU, and `--exit-with-parent`; no
/// pool here has extra worker_args), not yet spawned; and its base URL.
pub fn worker(args: &Args, model: &str) -> (Command, String) {
    let (mut cmd, base) = process::surge_worker(&args.surge, model);
    cmd.args(["--device", "cpu", "--exit-with-parent"]);
    if args.no_packed_weights {
        cmd.arg("--no-packed-weights");
    }
    home(args, &mut cmd);
    (cmd, base)
}

/// `--home` when one was given.
pub fn home(args: &Args, cmd: &mut Command) {
    if let Some(h) = &args.home {
        cmd.arg("--home").arg(h);
    }
}

/// One first request to `model` at `base`, timed in seconds: for the LLM (`llm`) a
/// streaming chat, sent → first content chunk; for Whisper `clip`'s transcription, sent →
/// response read.
pub fn first_result(base: &str, model: &str, llm: bool, clip: &[u8]) -> Result<f64, String> {
    if llm {
        let body = json!({
            "model": model,
            "messages": [{"role": "user", "content": "Hi"}],
            "max_tokens": 4, "temperature": 0, "stream": true,
        });
        let t = stream_chat(base, &body)?;
        if t.token_times.is_empty() {
            return Err(format!("{model}: no content chunk"));
        }
        Ok(t.ttft)
    } else {
        let fields = [("model", model), ("response_format", "json")];
        Ok(transcribe_bytes(base, "clip.wav", clip, &fields)?.elapsed)
    }
}

/// The Whisper cold starts' clip: the corpus's first sentence spoken (espeak-ng + sox)
/// as 16 kHz wav, written under `dir`.
pub fn whisper_clip(dir: &Path) -> Result<Vec<u8>, String> {
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
