//! Routing an inference request: which route it is, and which model (and so which pool)
//! its body names. The whole body is read (up to the route's size limit) before a
//! worker is chosen, so `model` may sit anywhere in a JSON body or multipart form.

use std::sync::Arc;

use bytes::Bytes;
use pingora::http::RequestHeader;
use pingora::proxy::Session;
use serde::Deserialize;
use surge_models::ModelKind;
use surge_protocol::error::{parse_json, ApiError};
use surge_protocol::multipart;

use super::config::GatewayConfig;
use super::pool::{Pool, Pools};
use super::registry::Registry;

/// The inference routes the gateway forwards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    Chat,
    Completions,
    Transcriptions,
}

impl Route {
    pub fn from_path(path: &str) -> Option<Route> {
        match path {
            "/v1/chat/completions" => Some(Route::Chat),
            "/v1/completions" => Some(Route::Completions),
            "/v1/audio/transcriptions" => Some(Route::Transcriptions),
            _ => None,
        }
    }

    /// The metrics label.
    pub fn label(self) -> &'static str {
        match self {
            Route::Chat => "chat_completions",
            Route::Completions => "completions",
            Route::Transcriptions => "audio_transcriptions",
        }
    }

    pub fn kind(self) -> ModelKind {
        match self {
            Route::Chat | Route::Completions => ModelKind::Llm,
            Route::Transcriptions => ModelKind::Whisper,
        }
    }

    pub fn path(self) -> &'static str {
        match self {
            Route::Chat => "/v1/chat/completions",
            Route::Completions => "/v1/completions",
            Route::Transcriptions => "/v1/audio/transcriptions",
        }
    }
}

/// Where a request goes and what the client asked of the response.
#[derive(Clone)]
pub struct Target {
    pub route: Route,
    /// Canonical model name.
    pub model: String,
    pub pool: Arc<Pool>,
    /// `stream: true`.
    pub stream: bool,
    /// `stream_options.include_usage`: forward the worker's usage chunk.
    pub include_usage: bool,
}

/// A body that pingora's retry buffer (64 KiB) cannot replay: forwarded as a subrequest
/// with the body preset ([`super::subrequest`]).
pub struct Routed {
    pub target: Target,
    pub preset_body: Option<Bytes>,
}

/// The fields of a JSON inference request the gateway routes by; the worker validates
/// the rest.
#[derive(Deserialize)]
struct JsonPeek {
    model: Option<serde_json::Value>,
    #[serde(default)]
    stream: Option<serde_json::Value>,
    #[serde(default)]
    stream_options: Option<StreamOptionsPeek>,
}

#[derive(Deserialize)]
struct StreamOptionsPeek {
    #[serde(default)]
    include_usage: Option<serde_json::Value>,
}

/// Reads the whole request body (up to the route's limit) and finds its model and pool.
pub async fn route_request(
    session: &mut Session,
    route: Route,
    cfg: &GatewayConfig,
    registry: &Registry,
    pools: &Pools,
) -> Result<Routed, ApiError> {
    let limit = match route {
        Route::Transcriptions => cfg.max_audio_bytes,
        _ => cfg.max_body_bytes,
    };
    let req = session.req_header();
    let length = header_str(req, "content-length").and_then(|v| v.trim().parse::<usize>().ok());
    if length.is_some_and(|n| n > limit) {
        return Err(ApiError::PayloadTooLarge(limit));
    }
    let content_type = header_str(req, "content-type").map(str::to_string);
    let expect_continue =
        header_str(req, "expect").is_some_and(|v| v.trim().eq_ignore_ascii_case("100-continue"));

    session.enable_retry_buffering();
    if expect_continue {
        session
            .write_continue_response()
            .await
            .map_err(|e| ApiError::Upstream(format!("writing 100 Continue: {e}")))?;
    }
    // The whole body is read, up to the route's limit. One that fits pingora's retry
    // buffer is forwarded from there; a larger one is handed to a subrequest.
    let mut buf = Vec::with_capacity(length.unwrap_or(0).min(limit));
    while let Some(chunk) = session
        .read_request_body()
        .await
        .map_err(|e| ApiError::invalid(format!("Could not read the request body: {e}"), None))?
    {
        buf.extend_from_slice(&chunk);
        if buf.len() > limit {
            return Err(ApiError::PayloadTooLarge(limit));
        }
    }
    let body = Bytes::from(buf);

    let is_form = content_type.as_deref().is_some_and(multipart::is_form);
    let (model_id, stream, include_usage) = if is_form {
        let model = multipart::text_field(content_type.as_deref(), body.clone(), "model").await?;
        (model, false, false)
    } else {
        let v: serde_json::Value = parse_json(&body)?;
        if !v.is_object() {
            return Err(ApiError::invalid(
                "The request body must be a JSON object",
                None,
            ));
        }
        let peek = JsonPeek::deserialize(&v)
            .map_err(|e| ApiError::invalid(format!("Invalid request: {e}"), None))?;
        let model = match peek.model {
            Some(serde_json::Value::String(m)) => Some(m),
            Some(_) => return Err(ApiError::invalid("'model' must be a string", "model")),
            None => None,
        };
        let flag = |v: Option<serde_json::Value>| v.and_then(|v| v.as_bool()).unwrap_or(false);
        let include_usage = flag(peek.stream_options.and_then(|o| o.include_usage));
        (model, flag(peek.stream), include_usage)
    };
    let model_id =
        model_id.ok_or_else(|| ApiError::invalid("You must provide a model parameter", "model"))?;
    let preset_body = session.retry_buffer_truncated().then_some(body);

    let entry = registry
        .resolve(&model_id)
        .ok_or_else(|| ApiError::ModelNotFound(model_id.clone()))?;
    if entry.kind != route.kind() {
        return Err(ApiError::WrongKind {
            model: model_id,
            kind: entry.kind_name(),
            route: route.path().to_string(),
        });
    }
    let pool = pools
        .get(&entry.name)
        .ok_or_else(|| ApiError::ModelNotFound(model_id.clone()))?;
    Ok(Routed {
        target: Target {
            route,
            model: entry.name.clone(),
            pool,
            stream,
            include_usage,
        },
        preset_body,
    })
}

pub fn header_str<'a>(req: &'a RequestHeader, name: &str) -> Option<&'a str> {
    req.headers.get(name).and_then(|v| v.to_str().ok())
}
