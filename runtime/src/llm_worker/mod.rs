//! The LLM worker process: `surge worker --model NAME` for an LLM. It answers `/health`
//! at once (503 while loading), loads the model on the engine thread, then serves the
//! OpenAI completion APIs with continuous batching.
//!
//! Split TGI-style: `api` (request shapes) → `validate` (to jobs, or a 400) →
//! `scheduler` (the engine thread) → `respond` (JSON or SSE); `routes` wires HTTP.

pub mod api;
pub mod metrics;
mod prefix_cache;
pub mod respond;
pub mod routes;
pub mod scheduler;
pub mod stop;
mod structured;
mod tool_calls;
mod tools;
pub mod trace;
pub mod validate;

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use candle_core::Device;

use crate::llm::{ChatTemplate, GgufFile, Grammars, LlmModel, LoadOptions, Tokenizer};
use crate::server::startup::StartupPhase;
use crate::server::{self, EngineFailure, Lifecycle, Listen, ModelIds, StartupTimer};

use metrics::WorkerMetrics;
use routes::{AppState, Ready};
use scheduler::{EngineHandle, SchedulerConfig};
use validate::Limits;

#[derive(Debug, Clone)]
pub struct LlmWorkerConfig {
    pub model_name: String,
    pub aliases: Vec<String>,
    pub gguf: PathBuf,
    /// Overrides the GGUF's chat template (from the model's manifest).
    pub chat_template: Option<String>,
    pub device: Device,
    pub max_num_seqs: usize,
    /// Memory for all sequences' KV caches together.
    pub kv_cache_bytes: usize,
    pub prefill_chunk: usize,
    /// Reuse finished sequences' KV caches for prompts that start the same way, where
    /// the model's attention makes reuse exact ([`crate::llm::LlmModel::chunk_invariant`]).
    pub prefix_cache: bool,
    pub default_max_tokens: usize,
    pub max_context: Option<usize>,
    pub max_body_bytes: usize,
    /// The model cache's packed-weights file for this GGUF and the GGUF's sha256
    /// (see `crate::llm::packed`); `None` repacks on every start.
    pub packed_weights: Option<(PathBuf, String)>,
    /// The cold start's clock, started in `main`; the engine thread finishes it.
    pub startup: StartupTimer,
}

/// Serves until SIGTERM/SIGINT (drain, exit code 0) or an engine failure (exit code 1).
pub async fn run(cfg: LlmWorkerConfig, listen: Listen) -> i32 {
    let metrics = match WorkerMetrics::new() {
        Ok(m) => Arc::new(m),
        Err(e) => {
            tracing::error!("metrics: {e}");
            return 1;
        }
    };
    let state = Arc::new(AppState {
        ids: ModelIds::new(cfg.model_name.clone(), cfg.aliases.clone()),
        max_body_bytes: cfg.max_body_bytes,
        life: Lifecycle::default(),
        ready: OnceLock::new(),
        metrics,
    });
    let life = state.life.clone();
    let router = routes::router(state.clone());
    let engine_state = state;
    server::run_worker(router, &listen, life, move |failed| {
        engine_thread(cfg, engine_state, failed)
    })
    .await
}

fn engine_thread(mut cfg: LlmWorkerConfig, state: Arc<AppState>, failed: EngineFailure) {
    let started = Instant::now();
    let mut startup = std::mem::take(&mut cfg.startup);
    // Metrics, router and this thread's start.
    startup.lap(StartupPhase::Init);
    let loaded = load(&cfg, &mut startup);
    let (model, tokenizer, template, eos) = match loaded {
        Ok(l) => l,
        Err(e) => {
            state.life.set_failed(e.clone());
            let _ = failed.send(format!("loading {}: {e}", cfg.gguf.display()));
            return;
        }
    };
    let max_context = model.max_context();
    let kv_per_token = {
        let c = model.config();
        // K and V, f32, every layer.
        (c.n_layer * 2 * c.n_kv_head * c.head_dim * 4).max(1)
    };
    let sched = SchedulerConfig {
        max_num_seqs: cfg.max_num_seqs.max(1),
        kv_budget_tokens: (cfg.kv_cache_bytes / kv_per_token).max(1),
        prefill_chunk: cfg.prefill_chunk.max(1),
        prefix_cache: cfg.prefix_cache && model.chunk_invariant(),
    };
    if cfg.prefix_cache && !sched.prefix_cache {
        tracing::info!("prefix cache off: this attention path is not chunk-invariant");
    }
    let limits = Limits {
        max_context,
        default_max_tokens: cfg.default_max_tokens,
        max_sequence_tokens: sched.kv_budget_tokens.min(max_context),
        max_n: sched.max_num_seqs.min(16),
    };
    let (tx, rx) = std::sync::mpsc::channel();
    let tokenizer = Arc::new(tokenizer);
    let grammars = Grammars::new((*tokenizer).clone(), model.config().vocab_size, &eos);
    let _ = state.ready.set(Ready {
        tokenizer: tokenizer.clone(),
        template,
        grammars,
        limits,
        engine: EngineHandle::new(tx, state.metrics.clone()),
    });
    let load_seconds = started.elapsed().as_secs_f64();
    let report = startup.finish(state.life.listening_at());
    report.export(&state.metrics.startup);
    report.log(&cfg.model_name);
    tracing::info!(
        model = %cfg.model_name,
        load_seconds,
        weights = %model.load_report().memory_dtype,
        packed_weights = %model.load_report().packed_weights,
        kv_budget_tokens = sched.kv_budget_tokens,
        max_context,
        "ready"
    );
    state.life.set_startup(report);
    state.life.set_ready(load_seconds);
    let metrics = state.metrics.clone();
    // The engine must not keep the app state (and so the last sender) alive.
    drop(state);
    let outcome = server::catch_engine_panic(|| {
        scheduler::run(&model, &tokenizer, &eos, &sched, rx, &metrics)
    });
    if let Err(failure) = outcome {
        let _ = failed.send(failure);
    }
}

type Loaded = (LlmModel, Tokenizer, ChatTemplate, Vec<u32>);

fn load(cfg: &LlmWorkerConfig, startup: &mut StartupTimer) -> Result<Loaded, String> {
    let opts = LoadOptions {
        max_context: cfg.max_context,
        packed_weights: cfg.packed_weights.clone(),
        ..LoadOptions::default()
    };
    // One header parse serves the weights, the tokenizer and the template.
    let gguf = GgufFile::open(&cfg.gguf).map_err(|e| e.to_string())?;
    // The tokenizer and template need only the header: they build on a second thread
    // while this one repacks the weights (single-threaded), so on two cores they cost
    // the cold start almost nothing. `tokenizer_s` is then the wait for them after the
    // weights are done.
    let (model, text) = std::thread::scope(|s| {
        let text = std::thread::Builder::new()
            .name("surge-tokenizer".into())
            .spawn_scoped(s, || text_side(&gguf, cfg.chat_template.as_deref()));
        let model = LlmModel::load_gguf(&gguf, &cfg.device, &opts).map_err(|e| e.to_string());
        startup.lap(StartupPhase::Weights);
        let text = match text {
            Ok(h) => h
                .join()
                .unwrap_or_else(|_| Err("the tokenizer thread panicked".into())),
            // No thread to spare: build it here.
            Err(_) => text_side(&gguf, cfg.chat_template.as_deref()),
        };
        (model, text)
    });
    let model = model?;
    let (tokenizer, template, eos) = text?;
    startup.lap(StartupPhase::Tokenizer);
    Ok((model, tokenizer, template, eos))
}

/// The tokenizer, the chat template and the ids that end a turn.
fn text_side(
    gguf: &GgufFile,
    template_override: Option<&str>,
) -> Result<(Tokenizer, ChatTemplate, Vec<u32>), String> {
    let tokenizer = Tokenizer::from_gguf(gguf).map_err(|e| e.to_string())?;
    let template = ChatTemplate::from_gguf(gguf, template_override).map_err(|e| e.to_string())?;
    // The end of a turn ends generation: the GGUF's eos, the template's eos token, and
    // the end-of-turn tokens of the chat formats in use (Gemma's `<end_of_turn>` is
    // not its eos), as llama.cpp's end-of-generation set does.
    let mut eos: Vec<u32> = tokenizer.eos_token_id().into_iter().collect();
    let named = [template.eos_token()].into_iter().chain(END_OF_TURN_TOKENS);
    for id in named.filter_map(|t| tokenizer.token_to_id(t)) {
        if !eos.contains(&id) {
            eos.push(id);
        }
    }
    Ok((tokenizer, template, eos))
}

/// Tokens that close an assistant turn in the chat formats of the supported models.
const END_OF_TURN_TOKENS: [&str; 3] = ["<|im_end|>", "<end_of_turn>", "<|eot_id|>"];
