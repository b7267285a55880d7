//! The Whisper worker process: `surge worker --model NAME` for a Whisper model. It answers
//! `/health` at once (503 while loading), loads the model on the engine thread, then serves
//! OpenAI's `POST /v1/audio/transcriptions` and `POST /v1/audio/translations`.
//!
//! `api` (the multipart request, checked) → audio decode on the blocking pool →
//! `scheduler` (the engine thread) → `format` (json, text, srt, vtt, verbose_json);
//! `routes` wires HTTP. The process shape (engine thread, drain, failure exit) and the
//! common routes come from [`crate::server`], shared with the LLM worker.

pub mod api;
pub mod format;
pub mod metrics;
pub mod routes;
pub mod scheduler;

/// Whisper's language table lives with the engine (it looks up the language tokens);
/// the API parses and names languages with it.
pub use crate::whisper::languages;

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use candle_core::Device;
use tokio::sync::Semaphore;

use crate::server::startup::StartupPhase;
use crate::server::{self, EngineFailure, Lifecycle, Listen, ModelIds, StartupTimer};
use crate::whisper::WhisperEngine;

use metrics::WhisperMetrics;
use routes::{AppState, Ready};
use scheduler::{EngineHandle, SchedulerConfig};

/// OpenAI's name for its Whisper model; every Whisper worker answers to it, so OpenAI
/// clients work unchanged.
pub const OPENAI_MODEL_ID: &str = "whisper-1";

#[derive(Debug, Clone)]
pub struct WhisperWorkerConfig {
    pub model_name: String,
    pub aliases: Vec<String>,
    /// The CTranslate2 model directory's files.
    pub model_bin: PathBuf,
    pub config_json: PathBuf,
    pub tokenizer_json: PathBuf,
    pub device: Device,
    /// Most sequences decoded together.
    pub max_batch: usize,
    /// Most windows encoded together.
    pub encode_batch: usize,
    /// How long a lone window waits for company before running alone.
    pub batch_wait: Duration,
    /// Longest upload accepted, in seconds of audio.
    pub max_audio_seconds: f64,
    pub max_body_bytes: usize,
    /// The cold start's clock, started in `main`; the engine thread finishes it.
    pub startup: StartupTimer,
}

/// Serves until SIGTERM/SIGINT (drain, exit code 0) or an engine failure (exit code 1).
pub async fn run(cfg: WhisperWorkerConfig, listen: Listen) -> i32 {
    let metrics = match WhisperMetrics::new() {
        Ok(m) => Arc::new(m),
        Err(e) => {
            tracing::error!("metrics: {e}");
            return 1;
        }
    };
    // The worker's compute threads (`--threads`, else every core).
    let cores = crate::kernels::threads();
    let aliases = cfg
        .aliases
        .iter()
        .cloned()
        .chain([OPENAI_MODEL_ID.to_string()]);
    let state = Arc::new(AppState {
        ids: ModelIds::new(cfg.model_name.clone(), aliases),
        max_body_bytes: cfg.max_body_bytes,
        max_audio_seconds: cfg.max_audio_seconds,
        life: Lifecycle::default(),
        ready: OnceLock::new(),
        metrics,
        decoders: Semaphore::new(cores),
    });
    let life = state.life.clone();
    let router = routes::router(state.clone());
    let engine_state = state;
    server::run_worker(router, &listen, life, move |failed| {
        engine_thread(cfg, engine_state, failed)
    })
    .await
}

fn engine_thread(mut cfg: WhisperWorkerConfig, state: Arc<AppState>, failed: EngineFailure) {
    let started = Instant::now();
    let mut startup = std::mem::take(&mut cfg.startup);
    // Metrics, router and this thread's start.
    startup.lap(StartupPhase::Init);
    let loaded = WhisperEngine::load_timed(
        &cfg.model_bin,
        &cfg.config_json,
        &cfg.tokenizer_json,
        &cfg.device,
        &mut startup,
    );
    let mut engine = match loaded {
        Ok(e) => e,
        Err(e) => {
            let why = format!("loading {}: {e}", cfg.model_bin.display());
            state.life.set_failed(why.clone());
            let _ = failed.send(why);
            return;
        }
    };
    let multilingual = engine.is_multilingual();
    let languages = engine.languages();
    let sched = SchedulerConfig {
        max_batch: cfg.max_batch.max(1),
        max_encode_batch: cfg.encode_batch.max(1),
        max_wait: cfg.batch_wait,
    };
    let (tx, rx) = std::sync::mpsc::channel();
    let _ = state.ready.set(Ready {
        engine: EngineHandle::new(tx),
        multilingual,
        languages,
    });
    let load_seconds = started.elapsed().as_secs_f64();
    let report = startup.finish(state.life.listening_at());
    report.export(&state.metrics.startup);
    report.log(&cfg.model_name);
    tracing::info!(model = %cfg.model_name, load_seconds, multilingual, "ready");
    state.life.set_startup(report);
    state.life.set_ready(load_seconds);
    let metrics = state.metrics.clone();
    // The engine must not keep the app state (and so the last sender) alive.
    drop(state);
    let outcome = server::catch_engine_panic(|| scheduler::run(&mut engine, &sched, rx, &metrics));
    if let Err(failure) = outcome {
        let _ = failed.send(failure);
    }
}
