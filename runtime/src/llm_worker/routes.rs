//! HTTP routes of the LLM worker. Handlers only parse, validate and hand jobs to the
//! engine; everything slow happens on the engine thread.

use std::sync::{Arc, OnceLock};
use std::time::Instant;

use axum::body::Body;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};

use crate::llm::{ChatTemplate, Tokenizer};
use crate::server::{self, parse_json, ApiError, Lifecycle, ModelIds, WorkerInfo};

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
    pub ids: ModelIds,
    pub max_body_bytes: usize,
    pub life: Lifecycle,
    pub ready: OnceLock<Ready>,
    pub metrics: Arc<WorkerMetrics>,
}

impl WorkerInfo for AppState {
    fn kind(&self) -> &'static str {
        "llm"
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
        .route("/v1/chat/completions", post(chat))
        .route("/v1/completions", post(completions))
        .with_state(state)
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
            st.ids.check(model.as_deref())?;
            (
                model,
                validate::chat(req, &ready.tokenizer, &ready.template, &ready.limits)?,
            )
        }
        Endpoint::Completion => {
            let req: super::api::CompletionRequest = parse_json(&bytes)?;
            let model = req.model.clone();
            st.ids.check(model.as_deref())?;
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
        model.as_deref().unwrap_or(&st.ids.name),
        validated,
    );
    if stream {
        Ok(respond::stream(reply, receivers))
    } else {
        Ok(Json(respond::complete(reply, receivers).await?).into_response())
    }
}
