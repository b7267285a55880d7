//! The routes every worker kind answers the same way: `/health` (readiness for the
//! gateway), `/metrics` (Prometheus), `GET /v1/models`, and OpenAI's 404 for anything else.
//! A worker builds its router on [`base_router`] and adds its own API routes.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;
use surge_protocol::openai::{Model, ModelList};

use super::{ApiError, Lifecycle, Phase};

/// The names a worker answers to: the model's own name and its aliases.
#[derive(Debug, Clone)]
pub struct ModelIds {
    pub name: String,
    pub aliases: Vec<String>,
}

impl ModelIds {
    pub fn new(name: impl Into<String>, aliases: impl IntoIterator<Item = String>) -> Self {
        let name = name.into();
        let mut out: Vec<String> = Vec::new();
        for a in aliases {
            if a != name && !out.contains(&a) {
                out.push(a);
            }
        }
        ModelIds { name, aliases: out }
    }

    pub fn accepts(&self, model: &str) -> bool {
        model == self.name || self.aliases.iter().any(|a| a == model)
    }

    /// A request's `model`: absent is fine (the worker serves one model), unknown is a 404.
    pub fn check(&self, model: Option<&str>) -> Result<(), ApiError> {
        match model {
            Some(m) if !self.accepts(m) => Err(ApiError::ModelNotFound(m.to_string())),
            _ => Ok(()),
        }
    }
}

/// What the shared routes need to know about a worker's state.
pub trait WorkerInfo: Send + Sync + 'static {
    /// `llm` or `whisper`, reported by `/health`.
    fn kind(&self) -> &'static str;
    fn model_ids(&self) -> &ModelIds;
    fn life(&self) -> &Lifecycle;
    /// The Prometheus text exposition of the worker's metrics.
    fn render_metrics(&self) -> String;
}

/// `/health`, `/metrics`, `/v1/models` and the OpenAI-shaped 404 fallback.
pub fn base_router<S: WorkerInfo>() -> Router<Arc<S>> {
    Router::new()
        .route("/health", get(health::<S>))
        .route("/metrics", get(metrics::<S>))
        .route("/v1/models", get(models::<S>))
        .fallback(not_found)
}

/// `GET /health`: 200 once ready; 503 while loading or draining; 500 when the engine
/// failed. The body (JSON):
///
/// ```json
/// {"status": "ok", "model": "smollm2-135m-instruct", "kind": "llm",
///  "load_seconds": 0.16, "uptime_seconds": 12.5, "error": null,
///  "startup": {"exec_s": 0.003, "init_s": 0.001, "resolve_s": 0.001,
///              "weights_s": 0.12, "tokenizer_s": 0.03, "warmup_s": 0.01,
///              "total_s": 0.17, "listening_s": 0.004, "exec_source": "env"}}
/// ```
///
/// - `status`: `loading`, `ok`, `draining` or `failed`; `error` the failure, else null.
/// - `load_seconds`: engine thread start → ready (null until ready).
/// - `startup` (null until ready; see [`super::startup`]): one cold start, in seconds,
///   along its critical path. `exec_s` spawn → `main` (null when the parent set no
///   `SURGE_SPAWNED_AT_UNIX_NS` and `/proc` gave nothing; `exec_source` is `env`,
///   `proc` — 10 ms resolution — or `none`), `init_s` `main` → model lookup, `resolve_s`
///   cache and manifest, `weights_s` weights read and converted, `tokenizer_s`
///   tokenizer and chat template (LLM) or mel filters and rules (Whisper), `warmup_s`
///   one small forward before readiness. Every phase is ≥ 0 and their sum ≤ `total_s`
///   (spawn → ready; from `main` when `exec_s` is null). `listening_s` is spawn → socket
///   bound, which happens beside the load, so it is not a phase.
pub fn health_response(life: &Lifecycle, model: &str, kind: &str) -> Response {
    let (code, status) = match life.phase() {
        Phase::Ready => (StatusCode::OK, "ok"),
        Phase::Loading => (StatusCode::SERVICE_UNAVAILABLE, "loading"),
        Phase::Draining => (StatusCode::SERVICE_UNAVAILABLE, "draining"),
        Phase::Failed => (StatusCode::INTERNAL_SERVER_ERROR, "failed"),
    };
    let body = json!({
        "status": status,
        "model": model,
        "kind": kind,
        "load_seconds": life.load_seconds(),
        "uptime_seconds": life.uptime_seconds(),
        "error": life.failure(),
        "startup": life.startup(),
    });
    (code, Json(body)).into_response()
}

async fn health<S: WorkerInfo>(State(st): State<Arc<S>>) -> Response {
    health_response(st.life(), &st.model_ids().name, st.kind())
}

async fn metrics<S: WorkerInfo>(State(st): State<Arc<S>>) -> Response {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        st.render_metrics(),
    )
        .into_response()
}

async fn models<S: WorkerInfo>(State(st): State<Arc<S>>) -> Json<ModelList> {
    let ids = st.model_ids();
    let data = std::iter::once(&ids.name)
        .chain(ids.aliases.iter())
        .map(|id| Model::new(id, 0, "surge"))
        .collect();
    Json(ModelList::new(data))
}

/// The fallback: OpenAI's error body with code `not_found`.
pub async fn not_found(uri: Uri) -> ApiError {
    ApiError::NotFound(uri.path().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_ids_accept_name_and_aliases_only() {
        let ids = ModelIds::new(
            "whisper-tiny.en",
            ["whisper-1".to_string(), "whisper-1".to_string()],
        );
        assert_eq!(ids.aliases, ["whisper-1"]);
        assert!(ids.check(None).is_ok());
        assert!(ids.check(Some("whisper-tiny.en")).is_ok());
        assert!(ids.check(Some("whisper-1")).is_ok());
        let e = ids.check(Some("gpt-4o-transcribe")).unwrap_err();
        assert_eq!(e.status(), StatusCode::NOT_FOUND);
        assert_eq!(e.body()["error"]["code"], "model_not_found");
    }
}
