//! HTTP routes of the Whisper worker. A transcription (or translation: the same path with
//! `<|translate|>`) is: read the body (bounded), parse the multipart form, decode the
//! audio on the blocking pool (symphonia and the resampler are CPU-heavy and must not
//! stall the reactor), queue the PCM for the engine thread, and render the transcript in
//! the requested format.

use std::sync::{Arc, OnceLock};
use std::time::Instant;

use axum::body::Body;
use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use tokio::sync::Semaphore;
use tracing::Instrument;

use crate::audio::{self, AudioError};
use crate::server::{self, trace, ApiError, Lifecycle, ModelIds, WorkerInfo};
use crate::whisper::{DecodeOptions, WhisperTask};

use super::api;
use super::format::{self, Metering};
use super::metrics::WhisperMetrics;
use super::scheduler::{EngineHandle, Times};

/// What exists once the model has loaded.
pub struct Ready {
    pub engine: EngineHandle,
    /// Whether the model knows languages other than English (and so can translate).
    pub multilingual: bool,
    /// The language codes it can be told (`en` alone for an English-only model).
    pub languages: Vec<&'static str>,
}

pub struct AppState {
    pub ids: ModelIds,
    pub max_body_bytes: usize,
    pub max_audio_seconds: f64,
    pub life: Lifecycle,
    pub ready: OnceLock<Ready>,
    pub metrics: Arc<WhisperMetrics>,
    /// Bounds concurrent audio decodes to the core count, so a burst of uploads cannot
    /// fill the blocking pool with decoders (each holding its decoded PCM in memory).
    pub decoders: Semaphore,
}

impl WorkerInfo for AppState {
    fn kind(&self) -> &'static str {
        "whisper"
    }
    fn model_ids(&self) -> &ModelIds {
        &self.ids
    }
    fn life(&self) -> &Lifecycle {
        &self.life
    }
    fn render_metrics(&self) -> String {
        self.metrics.render()
    }
}

pub fn router(state: Arc<AppState>) -> Router {
    server::base_router::<AppState>()
        .route("/v1/audio/transcriptions", post(transcriptions))
        .route("/v1/audio/translations", post(translations))
        .with_state(state)
}

const TRANSCRIPTIONS: &str = "audio_transcriptions";
const TRANSLATIONS: &str = "audio_translations";

fn count(st: &AppState, endpoint: &str, arrived: Instant, resp: &Response) {
    st.metrics
        .requests
        .with_label_values(&[endpoint, resp.status().as_str()])
        .inc();
    st.metrics
        .request_seconds
        .with_label_values(&[endpoint])
        .observe(arrived.elapsed().as_secs_f64());
}

async fn transcriptions(
    State(st): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    serve(&st, &headers, body, WhisperTask::Transcribe).await
}

async fn translations(State(st): State<Arc<AppState>>, headers: HeaderMap, body: Body) -> Response {
    serve(&st, &headers, body, WhisperTask::Translate).await
}

/// Either endpoint: they differ only in the task token and the metrics label.
async fn serve(st: &AppState, headers: &HeaderMap, body: Body, task: WhisperTask) -> Response {
    let arrived = Instant::now();
    let content_type = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let span = request_span(headers, &st.ids.name, task);
    let work = transcribe(st, content_type.as_deref(), body, task, &span);
    let resp = match work.instrument(span.clone()).await {
        Ok(r) => r,
        Err(e) => {
            span.record("error.type", e.code());
            e.into_response()
        }
    };
    let endpoint = match task {
        WhisperTask::Transcribe => TRANSCRIPTIONS,
        WhisperTask::Translate => TRANSLATIONS,
    };
    count(st, endpoint, arrived, &resp);
    resp
}

/// The transcription's span, a child of the gateway's (W3C `traceparent`); nothing when
/// traces are off. Its children — `decode audio`, `queue`, `encode`, `decode` — are
/// recorded from the instants kept while it ran.
fn request_span(headers: &HeaderMap, model: &str, task: WhisperTask) -> tracing::Span {
    if !trace::enabled() {
        return tracing::Span::none();
    }
    let operation = match task {
        WhisperTask::Transcribe => "transcription",
        WhisperTask::Translate => "translation",
    };
    let span = tracing::info_span!(
        "worker request",
        otel.name = %format!("{operation} {model}"),
        otel.kind = "server",
        gen_ai.operation.name = operation,
        gen_ai.request.model = model,
        surge.audio_seconds = tracing::field::Empty,
        error.type = tracing::field::Empty,
        trace_id = tracing::field::Empty,
    );
    trace::set_parent(&span, headers);
    span.record("trace_id", trace::trace_id(&span));
    span
}

fn phases(span: &tracing::Span, decode_audio: (Instant, Instant), t: &Times) {
    trace::child(span, "decode audio", decode_audio.0, decode_audio.1, vec![]);
    trace::child(span, "queue", t.arrived, t.admitted, vec![]);
    let encoded = t.encoded.unwrap_or(t.admitted);
    trace::child(span, "encode", t.admitted, encoded, vec![]);
    trace::child(
        span,
        "decode",
        t.decoding.unwrap_or(encoded),
        t.finished,
        vec![],
    );
}

async fn transcribe(
    st: &AppState,
    content_type: Option<&str>,
    body: Body,
    task: WhisperTask,
    span: &tracing::Span,
) -> Result<Response, ApiError> {
    if let Some(e) = st.life.admission_error() {
        return Err(e);
    }
    let ready = st.ready.get().ok_or(ApiError::Loading)?;
    let bytes = server::read_body(body, st.max_body_bytes).await?;
    let req = api::parse(content_type, bytes, task).await?;
    st.ids.check(Some(&req.model))?;
    api::check_task(task, ready.multilingual, &st.ids.name)?;
    api::check_language(req.language, &ready.languages, &st.ids.name)?;
    let options = DecodeOptions {
        language: req.language,
        task,
        temperature: req.temperature,
        prompt: req.prompt.clone(),
        seed: api::seed(&req),
    };

    let decode_started = Instant::now();
    let audio = {
        let _permit = st
            .decoders
            .acquire()
            .await
            .map_err(|_| ApiError::ShuttingDown)?;
        let (file, filename, max) = (req.file, req.filename, st.max_audio_seconds);
        tokio::task::spawn_blocking(move || {
            audio::decode_to_16k_mono(&file, filename.as_deref(), Some(max))
        })
        .await
        .map_err(|e| ApiError::Internal(format!("audio decoding failed: {e}")))?
        .map_err(audio_error)?
    };
    let decoded = Instant::now();
    let decode_seconds = decoded.duration_since(decode_started).as_secs_f64();
    let audio_seconds = audio.duration_seconds;
    span.record("surge.audio_seconds", audio_seconds);

    let finished = ready
        .engine
        .transcribe(audio.samples, options)
        .await
        .map_err(|e| ApiError::Internal(format!("transcription failed: {e}")))?;
    phases(span, (decode_started, decoded), &finished.times);
    let metering = Metering {
        queue_seconds: finished.queue_seconds,
        execution_seconds: finished.execution_seconds,
        audio_seconds,
        decode_seconds,
    };
    Ok(format::response(
        req.response_format,
        &finished.transcript,
        &metering,
    ))
}

/// Problems with the upload are the client's (400, param `file`); a resampler fault is ours.
fn audio_error(e: AudioError) -> ApiError {
    match e {
        AudioError::Resample(_) => ApiError::Internal(e.to_string()),
        _ => ApiError::invalid(e.to_string(), "file"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn audio_errors_map_to_400_on_file_except_internal_faults() {
        for e in [
            AudioError::UnsupportedFormat("x".into()),
            AudioError::Corrupt("y".into()),
            AudioError::Empty,
            AudioError::TooLong { max_seconds: 30.0 },
        ] {
            let msg = e.to_string();
            let api = audio_error(e);
            assert_eq!(api.status(), 400);
            assert_eq!(api.body()["error"]["param"], "file");
            assert_eq!(api.body()["error"]["message"], msg);
        }
        assert_eq!(audio_error(AudioError::Resample("z".into())).status(), 500);
    }
}
