//! The routes every worker kind answers the same way: `/health` (readiness for the
//! gateway), `/metrics` (Prometheus), `GET /v1/models`, and OpenAI's 404 for anything else.
//! A worker builds its router on [`base_router`] and adds its own API routes.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use surge_protocol::openai::{Model, ModelList};
use surge_protocol::worker::health::{Health, Status};

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
        .route("/health", get(health_route::<S>))
        .route("/metrics", get(metrics::<S>))
        .route("/v1/models", get(models::<S>))
        .fallback(not_found)
}

/// `GET /health`: 200 once ready; 503 while loading or draining; 500 when the engine
/// failed. The body is a [`Health`]; its fields, their order and meaning are documented
/// in [`surge_protocol::worker::health`], and `startup` comes from [`super::startup`].
pub fn health_response(life: &Lifecycle, model: &str, kind: &str) -> Response {
    let (code, status) = health(life, model, kind);
    // Through a `Value`, as before the typed body: the same bytes whatever the order.
    let body = serde_json::to_value(&status).unwrap_or_default();
    (code, Json(body)).into_response()
}

/// The status code and body of `/health`.
pub fn health(life: &Lifecycle, model: &str, kind: &str) -> (StatusCode, Health) {
    let (code, status) = match life.phase() {
        Phase::Ready => (StatusCode::OK, Status::Ok),
        Phase::Loading => (StatusCode::SERVICE_UNAVAILABLE, Status::Loading),
        Phase::Draining => (StatusCode::SERVICE_UNAVAILABLE, Status::Draining),
        Phase::Failed => (StatusCode::INTERNAL_SERVER_ERROR, Status::Failed),
    };
    let body = Health {
        error: life.failure().map(str::to_string),
        kind: kind.to_string(),
        load_seconds: life.load_seconds(),
        model: model.to_string(),
        startup: life.startup().map(|r| r.0),
        status,
        threads: Some(crate::kernels::threads()),
        uptime_seconds: life.uptime_seconds(),
    };
    (code, body)
}

async fn health_route<S: WorkerInfo>(State(st): State<Arc<S>>) -> Response {
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
        assert_eq!(e.status(), 404);
        assert_eq!(e.body()["error"]["code"], "model_not_found");
    }

    /// The body the worker writes parses as the protocol's type, and keeps the keys (and
    /// their order) it had before the type existed.
    #[test]
    fn health_body_is_the_protocol_type() {
        use super::super::startup::{StartupPhase, StartupTimer};
        let life = Lifecycle::default();
        let (code, h) = health(&life, "m", "llm");
        assert_eq!(
            (code, h.status, h.startup),
            (StatusCode::SERVICE_UNAVAILABLE, Status::Loading, None)
        );
        let mut t = StartupTimer::start();
        t.lap(StartupPhase::Weights);
        life.set_startup(t.finish(None));
        life.set_ready(0.5);
        let (code, written) = health(&life, "m", "llm");
        assert_eq!(code, StatusCode::OK);
        let text = serde_json::to_string(&serde_json::to_value(&written).unwrap()).unwrap();
        let read: Health = serde_json::from_str(&text).unwrap();
        // Every key read back, as the text says (serde_json's default float parser may
        // be an ulp off the written value, for the typed reader and `Value` alike).
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(serde_json::to_value(&read).unwrap(), v);
        assert_eq!(
            (&read.model, &read.kind, read.load_seconds),
            (&written.model, &written.kind, written.load_seconds)
        );
        assert_eq!(read.status, Status::Ok);
        assert_eq!(read.threads, Some(crate::kernels::threads()));
        assert!(read.startup.unwrap().weights_s >= 0.0);
        let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            [
                "error",
                "kind",
                "load_seconds",
                "model",
                "startup",
                "status",
                "threads",
                "uptime_seconds"
            ]
        );
        assert_eq!(text, serde_json::to_string(&written).unwrap());
        life.set_failed("boom");
        let (code, h) = health(&life, "m", "llm");
        assert_eq!(
            (code, h.status, h.error.as_deref()),
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                Status::Failed,
                Some("boom")
            )
        );
    }
}
