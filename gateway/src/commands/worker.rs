//! `surge worker`: the process the gateway spawns, one model each. Also usable alone:
//! `surge worker --model smollm2-135m-instruct --listen tcp:127.0.0.1:9000`, or
//! `surge worker --model whisper-tiny.en …` for speech to text.

use std::path::PathBuf;

use clap::Args;
use surge_runtime::server::Listen;
use surge_runtime::worker::{self, WorkerOptions};

#[derive(Args, Debug)]
pub struct WorkerCommand {
    /// Model name or alias in the cache.
    #[arg(long)]
    model: String,
    /// unix:PATH or tcp:HOST:PORT.
    #[arg(long, default_value = "tcp:127.0.0.1:9000")]
    listen: Listen,
    /// cpu, cuda or cuda:N (CUDA needs a build with the `cuda` feature).
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Cache directory (default: $SURGE_HOME, else ~/.cache/surge).
    #[arg(long, value_name = "DIR")]
    home: Option<PathBuf>,
    /// Most sequences decoded together in one step.
    #[arg(long, default_value_t = 16)]
    max_num_seqs: usize,
    /// Memory for the KV caches of all running sequences, in MiB.
    #[arg(long, default_value_t = 1024)]
    kv_cache_mb: usize,
    /// Most prompt tokens prefilled per step, so long prompts cannot stall running streams.
    #[arg(long, default_value_t = 256)]
    prefill_chunk: usize,
    /// max_tokens for chat requests that give none (bounded by the context).
    #[arg(long, default_value_t = 1024)]
    default_max_tokens: usize,
    /// Serve a shorter context than the model's own.
    #[arg(long)]
    max_context: Option<usize>,
    /// Largest request body accepted, in bytes [default: 4194304 (4 MiB) for LLMs,
    /// 26214400 (25 MiB, OpenAI's upload limit) for Whisper].
    #[arg(long)]
    max_body_bytes: Option<usize>,
    /// Whisper: longest audio accepted, in seconds; longer uploads get a 400.
    #[arg(long, default_value_t = 1800.0)]
    max_audio_seconds: f64,
    /// Whisper: most sequences decoded together in one step.
    #[arg(long, default_value_t = 8)]
    max_batch: usize,
    /// Whisper: most 30 s windows encoded together in one step. On a CPU 1 is fastest
    /// (the encoder is compute-bound; batches of 4 measured 10% slower per window).
    #[arg(long, default_value_t = 1)]
    encode_batch: usize,
    /// Whisper: how long a lone window waits for others to encode with, in milliseconds
    /// (only with --encode-batch above 1).
    #[arg(long, default_value_t = 5)]
    batch_wait_ms: u64,
    /// Exit when the parent process exits (the gateway sets this).
    #[arg(long)]
    exit_with_parent: bool,
}

pub fn run(cmd: WorkerCommand) -> i32 {
    worker::run(WorkerOptions {
        model: cmd.model,
        listen: cmd.listen,
        device: cmd.device,
        cache_dir: cmd.home,
        max_num_seqs: cmd.max_num_seqs,
        kv_cache_mb: cmd.kv_cache_mb,
        prefill_chunk: cmd.prefill_chunk,
        default_max_tokens: cmd.default_max_tokens,
        max_context: cmd.max_context,
        max_body_bytes: cmd.max_body_bytes,
        max_audio_seconds: cmd.max_audio_seconds,
        max_batch: cmd.max_batch,
        encode_batch: cmd.encode_batch,
        batch_wait_ms: cmd.batch_wait_ms,
        exit_with_parent: cmd.exit_with_parent,
    })
}
