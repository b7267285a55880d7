//! Routing an inference request: which route it is, and which model (and so which pool)
//! its body names. The whole body is read (up to the route's size limit) before a
//! worker is chosen, so `model` may sit anywhere in a JSON body or multipart form.

use bytes::Bytes;
use pingora::http::RequestHeader;
use pingora::proxy::Session;
use serde_json::Value;
use surge_models::ModelKind;

use super::body::multipart_field;
use super::errors::GatewayError;
use super::proxy::{Ctx, Gateway};

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

impl Gateway {
    /// Reads the request body and finds the model; sets `ctx.model`, `ctx.pool`,
    /// `ctx.include_usage`, `ctx.stream`, and `ctx.preset_body` when the body is larger
    /// than pingora's retry buffer (64 KiB) can replay.
    pub(super) async fn route_request(
        &self,
        session: &mut Session,
        route: Route,
        ctx: &mut Ctx,
    ) -> std::result::Result<(), GatewayError> {
        let audio = route == Route::Transcriptions;
        let limit = if audio {
            self.cfg.max_audio_bytes
        } else {
            self.cfg.max_body_bytes
        };
        let req = session.req_header();
        let length = header_str(req, "content-length").and_then(|v| v.trim().parse::<usize>().ok());
        if length.is_some_and(|n| n > limit) {
            return Err(GatewayError::PayloadTooLarge(limit));
        }
        let content_type = header_str(req, "content-type")
            .unwrap_or_default()
            .to_string();
        let expect_continue = header_str(req, "expect")
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("100-continue"));
        let multipart = content_type
            .to_ascii_lowercase()
            .starts_with("multipart/form-data");

        session.enable_retry_buffering();
        if expect_continue {
            session
                .write_continue_response()
                .await
                .map_err(|e| GatewayError::Upstream(format!("writing 100 Continue: {e}")))?;
        }
        // The whole body is read, up to the route's limit. One that fits pingora's
        // retry buffer is forwarded from there; a larger one is handed to a subrequest
        // as a preset body (`ctx.preset_body`, see [`super::subrequest`]).
        let mut buf = Vec::with_capacity(length.unwrap_or(0).min(limit));
        loop {
            let chunk =
                session
                    .read_request_body()
                    .await
                    .map_err(|e| GatewayError::BadRequest {
                        message: format!("could not read the request body: {e}"),
                        param: None,
                    })?;
            let Some(chunk) = chunk else { break };
            buf.extend_from_slice(&chunk);
            if buf.len() > limit {
                return Err(GatewayError::PayloadTooLarge(limit));
            }
        }

        let model_id = if multipart {
            multipart_field(&buf, &content_type, "model").ok_or_else(missing_model)?
        } else {
            let v: Value = serde_json::from_slice(&buf).map_err(|e| GatewayError::BadRequest {
                message: format!("the request body is not valid JSON: {e}"),
                param: None,
            })?;
            if !v.is_object() {
                return Err(GatewayError::BadRequest {
                    message: "the request body must be a JSON object".into(),
                    param: None,
                });
            }
            ctx.include_usage = v
                .pointer("/stream_options/include_usage")
                .and_then(Value::as_bool)
                .unwrap_or(false);
            ctx.stream = v.get("stream").and_then(Value::as_bool).unwrap_or(false);
            match v.get("model") {
                Some(Value::String(m)) => m.clone(),
                Some(_) => {
                    return Err(GatewayError::BadRequest {
                        message: "'model' must be a string".into(),
                        param: Some("model".into()),
                    })
                }
                None => return Err(missing_model()),
            }
        };
        if session.retry_buffer_truncated() {
            ctx.preset_body = Some(Bytes::from(buf));
        }

        let entry = self
            .registry
            .resolve(&model_id)
            .ok_or_else(|| GatewayError::ModelNotFound(model_id.clone()))?;
        if entry.kind != route.kind() {
            return Err(GatewayError::WrongKind {
                model: model_id,
                kind: entry.kind_name(),
                route: route.path().to_string(),
            });
        }
        let pool = self
            .pools
            .get(&entry.name)
            .ok_or_else(|| GatewayError::ModelNotFound(model_id.clone()))?;
        ctx.model = Some(entry.name.clone());
        ctx.pool = Some(pool);
        Ok(())
    }
}

fn missing_model() -> GatewayError {
    GatewayError::BadRequest {
        message: "you must provide a model parameter".into(),
        param: Some("model".into()),
    }
}

fn header_str<'a>(req: &'a RequestHeader, name: &str) -> Option<&'a str> {
    req.headers.get(name).and_then(|v| v.to_str().ok())
}
