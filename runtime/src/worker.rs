//! `surge worker`: one model per process. Resolves the model in the shared cache (offline)
//! and runs the worker kind its manifest names.

use candle_core::Device;
use surge_models::{ModelCache, ModelKind};

use crate::llm_worker::{self, LlmWorkerConfig};
use crate::server::startup::StartupPhase;
use crate::server::StartupTimer;
use crate::whisper_worker::{self, WhisperWorkerConfig};

/// Everything `surge worker` accepts: the flags, their defaults and docs are the
/// contract's (`surge_protocol::worker::WorkerOptions`).
pub use surge_protocol::worker::WorkerOptions;

/// Largest request body an LLM worker accepts unless told otherwise: chat JSON.
pub const LLM_MAX_BODY_BYTES: usize = 4 << 20;
/// Largest upload a Whisper worker accepts unless told otherwise: OpenAI's 25 MiB limit.
pub const WHISPER_MAX_BODY_BYTES: usize = 25 << 20;

/// `cpu`, `cuda` or `cuda:N`. CUDA needs a build with the `cuda` feature.
pub fn parse_device(s: &str) -> Result<Device, String> {
    match s {
        "cpu" => Ok(Device::Cpu),
        _ => {
            let ordinal = match s.strip_prefix("cuda") {
                Some("") => 0,
                Some(rest) => rest
                    .strip_prefix(':')
                    .and_then(|n| n.parse().ok())
                    .ok_or_else(|| format!("bad device '{s}' (expected cpu, cuda or cuda:N)"))?,
                None => return Err(format!("bad device '{s}' (expected cpu, cuda or cuda:N)")),
            };
            if !crate::CUDA {
                return Err(format!(
                    "device {s}: this surge was built without the `cuda` feature (CPU only)"
                ));
            }
            Device::new_cuda(ordinal).map_err(|e| format!("device {s}: {e}"))
        }
    }
}

/// Polls the parent pid: when the parent dies we are re-parented, and nobody is left to
/// route requests to us. (PR_SET_PDEATHSIG would fire when the spawning *thread* exits,
/// which for a multi-threaded parent can be long before the parent process does.)
fn watch_parent() {
    let parent = std::os::unix::process::parent_id();
    let _ = std::thread::Builder::new()
        .name("parent-watch".into())
        .spawn(move || loop {
            std::thread::sleep(std::time::Duration::from_millis(200));
            if std::os::unix::process::parent_id() != parent {
                eprintln!("parent process {parent} is gone; exiting");
                std::process::exit(1);
            }
        });
}

/// Runs the worker to completion; returns the process exit code.
pub fn run(opts: WorkerOptions) -> i32 {
    match run_inner(opts) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            1
        }
    }
}

/// The body limit a worker of `kind` uses when the operator names none.
pub fn default_max_body_bytes(kind: ModelKind) -> usize {
    match kind {
        ModelKind::Llm => LLM_MAX_BODY_BYTES,
        ModelKind::Whisper => WHISPER_MAX_BODY_BYTES,
    }
}

/// Thread pools for `kind`, set before any pool starts. `threads` is `--threads`: when
/// given it sizes every pool and wins over the environment; without it every pool gets
/// every core unless the operator's own `CANDLE_NUM_THREADS` / `RAYON_NUM_THREADS` /
/// `SURGE_KERNEL_THREADS` say otherwise. Returns the compute thread count.
///
/// LLM: the matmuls and attention run on surge's own kernel pool; what is left on candle
/// (norms, RoPE, activations, sampling) is small, and candle's pool spins 25,000 times
/// after every op before it parks, taking a core from the kernel pool's next matmul.
/// One thread for candle and one for rayon measured, against candle on every core (2
/// cores, same session): SmolLM2 decode 203 → 231 tok/s, 16 streams 546–619 → 665–671;
/// Qwen2.5-Coder-1.5B 16 streams 92–94 → 97–98, prefill unchanged.
///
/// Whisper: the model runs in f32, and candle's f32 GEMM parallelises over rayon with as
/// many threads as `RAYON_NUM_THREADS` says; one rayon thread would make every matmul
/// single-threaded, so both get every core.
fn tune_cpu_threads(kind: ModelKind, threads: Option<usize>) -> usize {
    let (cores, pinned) = match threads {
        Some(n) => (n.max(1), true),
        None => (
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
            false,
        ),
    };
    let (candle, rayon) = pool_sizes(kind, cores);
    if pinned || std::env::var_os("CANDLE_NUM_THREADS").is_none() {
        std::env::set_var("CANDLE_NUM_THREADS", candle.to_string());
    }
    if pinned || std::env::var_os("RAYON_NUM_THREADS").is_none() {
        std::env::set_var("RAYON_NUM_THREADS", rayon.to_string());
    }
    if pinned {
        crate::kernels::set_threads(cores);
    }
    crate::kernels::threads()
}

/// `(CANDLE_NUM_THREADS, RAYON_NUM_THREADS)` for a worker of `kind` on `cores` threads.
fn pool_sizes(kind: ModelKind, cores: usize) -> (usize, usize) {
    match kind {
        ModelKind::Llm => (1, 1),
        ModelKind::Whisper => (cores, cores),
    }
}

fn run_inner(opts: WorkerOptions) -> Result<i32, String> {
    // main → here: logging and argument parsing.
    let mut startup = StartupTimer::start();
    startup.lap(StartupPhase::Init);
    if opts.exit_with_parent {
        watch_parent();
    }
    let cache = match &opts.home {
        Some(d) => ModelCache::open(d),
        None => ModelCache::open_default(),
    }
    .map_err(|e| e.to_string())?;
    let model = cache.resolve(&opts.model).map_err(|e| e.to_string())?;
    startup.lap(StartupPhase::Resolve);
    // Resolving reads only manifests: no thread pool has started yet.
    let threads = tune_cpu_threads(model.manifest.kind, opts.threads);
    tracing::debug!(threads, "compute threads");
    let max_body_bytes = opts
        .max_body_bytes
        .unwrap_or_else(|| default_max_body_bytes(model.manifest.kind));
    let device = parse_device(&opts.device)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        // The engine thread does the heavy work; HTTP needs little.
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    startup.lap(StartupPhase::Init);
    match model.manifest.kind {
        ModelKind::Llm => {
            let gguf = model
                .path_with_suffix(".gguf")
                .ok_or_else(|| format!("model {} has no .gguf file", model.manifest.name))?
                .to_path_buf();
            let sha = model
                .manifest
                .files
                .iter()
                .find(|f| f.name.ends_with(".gguf"))
                .map(|f| f.sha256.clone());
            let packed_weights = sha
                .filter(|_| !opts.no_packed_weights)
                .map(|sha| (crate::llm::packed::pack_path(cache.root(), &sha), sha));
            let cfg = LlmWorkerConfig {
                model_name: model.manifest.name.clone(),
                aliases: model.manifest.aliases.clone(),
                gguf,
                chat_template: model.manifest.defaults.chat_template.clone(),
                device,
                max_num_seqs: opts.max_num_seqs,
                kv_cache_bytes: opts.kv_cache_mb << 20,
                prefill_chunk: opts.prefill_chunk,
                prefix_cache: !opts.no_prefix_cache,
                default_max_tokens: opts.default_max_tokens,
                max_context: opts.max_context.or(model
                    .manifest
                    .defaults
                    .context_length
                    .map(|c| c as usize)),
                max_body_bytes,
                packed_weights,
                startup,
            };
            Ok(rt.block_on(llm_worker::run(cfg, opts.listen)))
        }
        ModelKind::Whisper => {
            let file = |name: &str| {
                model
                    .path(name)
                    .map(|p| p.to_path_buf())
                    .ok_or_else(|| format!("model {} has no {name} file", model.manifest.name))
            };
            if opts.max_audio_seconds.is_nan() || opts.max_audio_seconds <= 0.0 {
                return Err(format!(
                    "--max-audio-seconds must be positive, got {}",
                    opts.max_audio_seconds
                ));
            }
            let cfg = WhisperWorkerConfig {
                model_name: model.manifest.name.clone(),
                aliases: model.manifest.aliases.clone(),
                model_bin: file("model.bin")?,
                config_json: file("config.json")?,
                tokenizer_json: file("tokenizer.json")?,
                device,
                max_batch: opts.max_batch,
                encode_batch: opts.encode_batch,
                batch_wait: std::time::Duration::from_millis(opts.batch_wait_ms),
                max_audio_seconds: opts.max_audio_seconds,
                max_body_bytes,
                startup,
            };
            Ok(rt.block_on(whisper_worker::run(cfg, opts.listen)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thread_pools_follow_the_kind() {
        assert_eq!(pool_sizes(ModelKind::Llm, 1), (1, 1));
        assert_eq!(pool_sizes(ModelKind::Llm, 4), (1, 1));
        assert_eq!(pool_sizes(ModelKind::Whisper, 3), (3, 3));
    }

    #[test]
    fn cuda_devices_need_the_cuda_build() {
        assert!(matches!(parse_device("cpu"), Ok(Device::Cpu)));
        assert!(parse_device("gpu").is_err());
        assert!(parse_device("cuda:x").is_err());
        if !crate::CUDA {
            let e = parse_device("cuda:0").unwrap_err();
            assert!(e.contains("`cuda` feature"), "{e}");
        }
    }

    #[test]
    fn body_limit_defaults_depend_on_the_kind() {
        assert_eq!(default_max_body_bytes(ModelKind::Llm), 4 * 1024 * 1024);
        assert_eq!(default_max_body_bytes(ModelKind::Whisper), 26_214_400);
    }
}
