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
    /// Whisper's translation into English: the same pools, limits and metering (by
    /// audio seconds) as transcriptions.
    Translations,
}

impl Route {
    pub fn from_path(path: &str) -> Option<Route> {
        match path {
            "/v1/chat/completions" => Some(Route::Chat),
            "/v1/completions" => Some(Route::Completions),
            "/v1/audio/transcriptions" => Some(Route::Transcriptions),
            "/v1/audio/translations" => Some(Route::Translations),
            _ => None,
        }
    }

    /// The metrics label.
    pub fn label(self) -> &'static str {
        match self {
            Route::Chat => "chat_completions",
            Route::Completions => "completions",
            Route::Transcriptions => "audio_transcriptions",
            Route::Translations => "audio_translations",
        }
    }

    pub fn kind(self) -> ModelKind {
        match self {
            Route::Chat | Route::Completions => ModelKind::Llm,
            Route::Transcriptions | Route::Translations => ModelKind::Whisper,
        }
    }

    pub fn path(self) -> &'static str {
        match self {
            Route::Chat => "/v1/chat/completions",
            Route::Completions => "/v1/completions",
            Route::Transcriptions => "/v1/audio/transcriptions",
            Route::Translations => "/v1/audio/translations",
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
    /// The most the request can use, for its budget reservation.
    pub worst_case: WorstCase,
    /// `temperature`, as sent (for traces).
    pub temperature: Option<f64>,
}

/// What a request can use at most, read from its body before it runs.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct WorstCase {
    /// Prompt tokens, bounded by the body's length in bytes (the gateway does not
    /// tokenize; a byte-level BPE token is at least one byte of the text).
    pub prompt_tokens: u64,
    /// `max_completion_tokens` or `max_tokens` (`None`: not set).
    pub max_tokens: Option<u64>,
    /// Choices (`n`).
    pub choices: u64,
    /// Audio length: from a WAV header's byte rate, else as if the upload were
    /// 32 kbit/s compressed audio (lower rates are rare for speech).
    pub audio_seconds: f64,
}

/// An upload's longest possible duration in seconds.
pub fn audio_seconds_bound(body: &[u8]) -> f64 {
    const COMPRESSED_BYTES_PER_SECOND: f64 = 4000.0;
    // "WAVEfmt " then the fmt chunk's size, format, channels, sample rate, byte rate.
    let byte_rate = body
        .windows(8)
        .position(|w| w == b"WAVEfmt ")
        .and_then(|i| body.get(i + 20..i + 24))
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .filter(|r| *r >= 1000)
        .map_or(COMPRESSED_BYTES_PER_SECOND, f64::from);
    body.len() as f64 / byte_rate
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
    #[serde(default)]
    max_tokens: Option<serde_json::Value>,
    #[serde(default)]
    max_completion_tokens: Option<serde_json::Value>,
    #[serde(default)]
    n: Option<serde_json::Value>,
    #[serde(default)]
    temperature: Option<serde_json::Value>,
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
        Route::Transcriptions | Route::Translations => cfg.max_audio_bytes,
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
    let mut worst_case = WorstCase {
        prompt_tokens: body.len() as u64,
        choices: 1,
        ..WorstCase::default()
    };
    let mut temperature = None;
    let (model_id, stream, include_usage) = if is_form {
        let model = multipart::text_field(content_type.as_deref(), body.clone(), "model").await?;
        worst_case.prompt_tokens = 0;
        worst_case.audio_seconds = audio_seconds_bound(&body);
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
        // Wrong types are the worker's to refuse (with its own message); here they only
        // mean "not set".
        let count = |v: &Option<serde_json::Value>| v.as_ref().and_then(|v| v.as_u64());
        worst_case.max_tokens =
            count(&peek.max_completion_tokens).or_else(|| count(&peek.max_tokens));
        worst_case.choices = count(&peek.n).unwrap_or(1).max(1);
        temperature = peek.temperature.as_ref().and_then(|t| t.as_f64());
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
            worst_case,
            temperature,
        },
        preset_body,
    })
}

pub fn header_str<'a>(req: &'a RequestHeader, name: &str) -> Option<&'a str> {
    req.headers.get(name).and_then(|v| v.to_str().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn translations_route_to_whisper_pools_like_transcriptions() {
        let t = Route::from_path("/v1/audio/translations").unwrap();
        assert_eq!(t, Route::Translations);
        assert_eq!(t.kind(), ModelKind::Whisper);
        assert_eq!(t.label(), "audio_translations");
        assert_eq!(Route::from_path(t.path()), Some(t));
    }

    #[test]
    fn audio_length_is_bounded_by_the_wav_header_or_a_low_bitrate() {
        let mut wav = b"RIFF\0\0\0\0WAVEfmt \x10\0\0\0\x01\0\x01\0".to_vec();
        wav.extend_from_slice(&16_000u32.to_le_bytes());
        wav.extend_from_slice(&32_000u32.to_le_bytes());
        wav.resize(32_000 * 3, 0);
        assert!((audio_seconds_bound(&wav) - 3.0).abs() < 1e-9);
        assert!((audio_seconds_bound(&[0u8; 8000]) - 2.0).abs() < 1e-9);
    }
}
