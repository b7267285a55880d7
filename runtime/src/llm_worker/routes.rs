//! HTTP routes of the LLM worker. Handlers only parse, validate and hand jobs to the
//! engine; everything slow happens on the engine thread.

use std::sync::{Arc, OnceLock};
use std::time::Instant;

use axum::body::Body;
use axum::extract::State;
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;

use crate::llm::{ChatTemplate, Tokenizer};
use crate::server::{self, parse_json, ApiError, Lifecycle, Phase};

use super::metrics::WorkerMetrics;
use super::respond::{self, Endpoint, Reply};
use super::scheduler::EngineHandle;
use super::validate::{self, Limits};

/// What exists once the model has loaded.
pub struct Ready {
    pub tokenizer: Arc<Tokenizer>,
    pub template: ChatTemplate,
    pub limits: Limits,
    pub engine: EngineHandle,
}

pub struct AppState {
    pub model_name: String,
    pub aliases: Vec<String>,
    pub max_body_bytes: usize,
    pub life: Lifecycle,
    pub ready: OnceLock<Ready>,
    pub metrics: Arc<WorkerMetrics>,
}

pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .route("/v1/models", get(models))
        .route("/v1/chat/completions", post(chat))
        .route("/v1/completions", post(completions))
        .fallback(not_found)
        .with_state(state)
}

async fn health(State(st): State<Arc<AppState>>) -> Response {
    let phase = st.life.phase();
    let (code, status) = match phase {
        Phase::Ready => (StatusCode::OK, "ok"),
        Phase::Loading => (StatusCode::SERVICE_UNAVAILABLE, "loading"),
        Phase::Draining => (StatusCode::SERVICE_UNAVAILABLE, "draining"),
        Phase::Failed => (StatusCode::INTERNAL_SERVER_ERROR, "failed"),
    };
    let body = json!({
        "status": status,
        "model": st.model_name,
        "kind": "llm",
        "load_seconds": st.life.load_seconds(),
        "uptime_seconds": st.life.uptime_seconds(),
        "error": st.life.failure(),
    });
    (code, Json(body)).into_response()
}

async fn metrics(State(st): State<Arc<AppState>>) -> Response {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        st.metrics.render(),
    )
        .into_response()
}

async fn models(State(st): State<Arc<AppState>>) -> Json<serde_json::Value> {
    let data: Vec<_> = std::iter::once(&st.model_name)
        .chain(st.aliases.iter())
        .map(|id| json!({"id": id, "object": "model", "created": 0, "owned_by": "surge"}))
        .collect();
    Json(json!({"object": "list", "data": data}))
}

async fn not_found(uri: Uri) -> ApiError {
    ApiError::NotFound(uri.path().to_string())
}

async fn chat(State(st): State<Arc<AppState>>, body: Body) -> Response {
    handle(st, body, Endpoint::Chat).await
}

async fn completions(State(st): State<Arc<AppState>>, body: Body) -> Response {
    handle(st, body, Endpoint::Completion).await
}

async fn handle(st: Arc<AppState>, body: Body, endpoint: Endpoint) -> Response {
    let arrived = Instant::now();
    let resp = match generate(&st, body, endpoint, arrived).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    };
    st.metrics
        .requests
        .with_label_values(&[endpoint.name(), resp.status().as_str()])
        .inc();
    resp
}

async fn generate(
    st: &AppState,
    body: Body,
    endpoint: Endpoint,
    arrived: Instant,
) -> Result<Response, ApiError> {
    if let Some(e) = st.life.admission_error() {
        return Err(e);
    }
    let ready = st.ready.get().ok_or(ApiError::Loading)?;
    let bytes = server::read_body(body, st.max_body_bytes).await?;
    let (model, validated) = match endpoint {
        Endpoint::Chat => {
            let req: super::api::ChatCompletionRequest = parse_json(&bytes)?;
            let model = req.model.clone();
            check_model(st, model.as_deref())?;
            (
                model,
                validate::chat(req, &ready.tokenizer, &ready.template, &ready.limits)?,
            )
        }
        Endpoint::Completion => {
            let req: super::api::CompletionRequest = parse_json(&bytes)?;
            let model = req.model.clone();
            check_model(st, model.as_deref())?;
            (
                model,
                validate::completion(req, &ready.tokenizer, &ready.limits)?,
            )
        }
    };
    let mut receivers = Vec::with_capacity(validated.jobs.len());
    for job in &validated.jobs {
        let rx = ready
            .engine
            .submit(job.clone(), arrived)
            .ok_or_else(|| ApiError::Internal("the engine is not running".into()))?;
        receivers.push(rx);
    }
    let stream = validated.stream;
    let reply = Reply::new(
        endpoint,
        model.as_deref().unwrap_or(&st.model_name),
        validated,
    );
    if stream {
        Ok(respond::stream(reply, receivers))
    } else {
        Ok(Json(respond::complete(reply, receivers).await?).into_response())
    }
}

fn check_model(st: &AppState, model: Option<&str>) -> Result<(), ApiError> {
    match model {
        None => Ok(()),
        Some(m) if m == st.model_name || st.aliases.iter().any(|a| a == m) => Ok(()),
        Some(m) => Err(ApiError::ModelNotFound(m.to_string())),
    }
}
