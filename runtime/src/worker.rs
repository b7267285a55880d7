//! `surge worker`: one model per process. Resolves the model in the shared cache (offline)
//! and runs the worker kind its manifest names.

use std::path::PathBuf;

use candle_core::Device;
use surge_models::{ModelCache, ModelKind};

use crate::llm_worker::{self, LlmWorkerConfig};
use crate::server::Listen;

/// Everything `surge worker` accepts; parsed by the binary, defaults documented there.
#[derive(Debug, Clone)]
pub struct WorkerOptions {
    pub model: String,
    pub listen: Listen,
    pub device: String,
    pub cache_dir: Option<PathBuf>,
    pub max_num_seqs: usize,
    pub kv_cache_mb: usize,
    pub prefill_chunk: usize,
    pub default_max_tokens: usize,
    pub max_context: Option<usize>,
    pub max_body_bytes: usize,
    /// Exit as soon as the parent process is gone, so a worker never outlives the gateway
    /// (or test) that started it, even when that parent was SIGKILLed.
    pub exit_with_parent: bool,
}

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

/// candle's CPU ops use its own pool plus rayon; with two pools on two cores they fight.
/// One candle pool of all cores and a single rayon thread measured +35% aggregate at 16
/// streams. Set before any thread pool starts; an operator's own values win.
fn tune_cpu_threads() {
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    if std::env::var_os("CANDLE_NUM_THREADS").is_none() {
        std::env::set_var("CANDLE_NUM_THREADS", cores.to_string());
    }
    if std::env::var_os("RAYON_NUM_THREADS").is_none() {
        std::env::set_var("RAYON_NUM_THREADS", "1");
    }
}

fn run_inner(opts: WorkerOptions) -> Result<i32, String> {
    tune_cpu_threads();
    if opts.exit_with_parent {
        watch_parent();
    }
    let cache = match &opts.cache_dir {
        Some(d) => ModelCache::open(d),
        None => ModelCache::open_default(),
    }
    .map_err(|e| e.to_string())?;
    let model = cache.resolve(&opts.model).map_err(|e| e.to_string())?;
    let device = parse_device(&opts.device)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        // The engine thread does the heavy work; HTTP needs little.
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    match model.manifest.kind {
        ModelKind::Llm => {
            let gguf = model
                .path_with_suffix(".gguf")
                .ok_or_else(|| format!("model {} has no .gguf file", model.manifest.name))?
                .to_path_buf();
            let cfg = LlmWorkerConfig {
                model_name: model.manifest.name.clone(),
                aliases: model.manifest.aliases.clone(),
                gguf,
                chat_template: model.manifest.defaults.chat_template.clone(),
                device,
                max_num_seqs: opts.max_num_seqs,
                kv_cache_bytes: opts.kv_cache_mb << 20,
                prefill_chunk: opts.prefill_chunk,
                default_max_tokens: opts.default_max_tokens,
                max_context: opts.max_context.or(model
                    .manifest
                    .defaults
                    .context_length
                    .map(|c| c as usize)),
                max_body_bytes: opts.max_body_bytes,
            };
            Ok(rt.block_on(llm_worker::run(cfg, opts.listen)))
        }
        ModelKind::Whisper => Err(format!(
            "model {} is a Whisper model; the Whisper worker is not implemented yet",
            model.manifest.name
        )),
    }
}
