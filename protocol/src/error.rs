//! One error type for everything surge answers with an error, gateway and worker alike:
//! each condition maps to exactly one HTTP status, OpenAI `type`, `code` and `param`, and
//! to a `Retry-After` where retrying later can succeed. The body is OpenAI's
//! `{"error":{"message","type","param","code"}}`, so clients see the same shape from
//! surge as from OpenAI, whether the gateway or a worker refused the request; streams
//! carry the same body as an SSE error event ([`crate::sse::error_event`]).

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Every error surge answers with.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ApiError {
    /// A request that can never succeed as sent (bad JSON, missing field, out of range).
    #[error("{message}")]
    InvalidRequest {
        message: String,
        param: Option<String>,
        code: Option<&'static str>,
    },
    /// The prompt plus `max_tokens` does not fit the model's context.
    #[error("{0}")]
    ContextLengthExceeded(String),
    #[error("The model '{model}' is a {kind} model and cannot serve {route}")]
    WrongKind {
        model: String,
        kind: &'static str,
        route: String,
    },
    #[error("Missing or invalid API key")]
    Unauthorized,
    /// A valid key asking for what it may not see (another tenant's usage).
    #[error("{0}")]
    Forbidden(String),
    #[error("The model '{0}' does not exist")]
    ModelNotFound(String),
    /// An unknown route: "METHOD /path".
    #[error("Unknown route {0}")]
    NotFound(String),
    #[error("Request body too large: the limit is {0} bytes")]
    PayloadTooLarge(usize),
    #[error("Rate limit reached for this API key")]
    RateLimited { retry_after: Duration },
    /// The key's budget cannot cover what the request could cost.
    #[error("{0}")]
    InsufficientQuota(String),
    #[error("Too many requests are waiting for model '{model}'")]
    QueueFull {
        model: String,
        retry_after: Duration,
    },
    /// The worker itself is at capacity.
    #[error("{0}")]
    Overloaded(String),
    #[error("No worker for model '{model}' became available in time")]
    QueueTimeout {
        model: String,
        retry_after: Duration,
    },
    #[error("Model '{model}' could not be started: {why}")]
    WorkerUnavailable { model: String, why: String },
    #[error("The model is still loading")]
    Loading,
    #[error("The server is shutting down")]
    ShuttingDown,
    /// A worker failed or could not be reached (the gateway's view).
    #[error("Upstream error: {0}")]
    Upstream(String),
    #[error("{0}")]
    Internal(String),
}

/// OpenAI's error body: `{"error": {...}}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: ErrorObject,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorObject {
    pub message: String,
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub param: Option<String>,
    #[serde(default)]
    pub code: Option<String>,
}

impl ErrorBody {
    /// An error body for text that is not one (a worker that wrote plain text).
    pub fn server_error(message: impl Into<String>) -> Self {
        ErrorBody {
            error: ErrorObject {
                message: message.into(),
                kind: "server_error".into(),
                param: None,
                code: None,
            },
        }
    }

    /// Parses `bytes` as an OpenAI error body, or wraps the text in one.
    pub fn from_bytes_lossy(bytes: &[u8]) -> Self {
        serde_json::from_slice(bytes)
            .unwrap_or_else(|_| Self::server_error(String::from_utf8_lossy(bytes).trim()))
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("an error body serialises")
    }
}

impl ApiError {
    /// A 400 naming the parameter at fault.
    pub fn invalid(message: impl Into<String>, param: impl Into<Option<&'static str>>) -> Self {
        ApiError::InvalidRequest {
            message: message.into(),
            param: param.into().map(str::to_string),
            code: None,
        }
    }

    pub fn status(&self) -> u16 {
        use ApiError::*;
        match self {
            InvalidRequest { .. } | ContextLengthExceeded(_) | WrongKind { .. } => 400,
            Unauthorized => 401,
            Forbidden(_) => 403,
            ModelNotFound(_) | NotFound(_) => 404,
            PayloadTooLarge(_) => 413,
            RateLimited { .. } | InsufficientQuota(_) | QueueFull { .. } | Overloaded(_) => 429,
            Internal(_) => 500,
            Upstream(_) => 502,
            QueueTimeout { .. } | WorkerUnavailable { .. } | Loading | ShuttingDown => 503,
        }
    }

    /// OpenAI's `type`: one per status class.
    pub fn kind(&self) -> &'static str {
        if let ApiError::InsufficientQuota(_) = self {
            // As OpenAI sends it: a type of its own, not a rate limit to retry.
            return "insufficient_quota";
        }
        match self.status() {
            401 => "authentication_error",
            429 => "rate_limit_error",
            400..=499 => "invalid_request_error",
            _ => "server_error",
        }
    }

    /// OpenAI's `code`: every condition has one, so clients can branch on it.
    pub fn code(&self) -> &'static str {
        use ApiError::*;
        match self {
            InvalidRequest { code, .. } => code.unwrap_or("invalid_request"),
            ContextLengthExceeded(_) => "context_length_exceeded",
            WrongKind { .. } => "wrong_model_kind",
            Unauthorized => "invalid_api_key",
            Forbidden(_) => "forbidden",
            ModelNotFound(_) => "model_not_found",
            NotFound(_) => "not_found",
            PayloadTooLarge(_) => "payload_too_large",
            RateLimited { .. } => "rate_limit_exceeded",
            InsufficientQuota(_) => "insufficient_quota",
            QueueFull { .. } => "queue_full",
            Overloaded(_) => "overloaded",
            QueueTimeout { .. } => "queue_timeout",
            WorkerUnavailable { .. } => "worker_unavailable",
            Loading => "model_loading",
            ShuttingDown => "shutting_down",
            Upstream(_) => "upstream_error",
            Internal(_) => "internal_error",
        }
    }

    pub fn param(&self) -> Option<&str> {
        match self {
            ApiError::InvalidRequest { param, .. } => param.as_deref(),
            ApiError::ContextLengthExceeded(_) => Some("messages"),
            ApiError::ModelNotFound(_) | ApiError::WrongKind { .. } => Some("model"),
            _ => None,
        }
    }

    /// Seconds for `Retry-After`, where retrying later can succeed.
    pub fn retry_after(&self) -> Option<u64> {
        use ApiError::*;
        match self {
            RateLimited { retry_after }
            | QueueFull { retry_after, .. }
            | QueueTimeout { retry_after, .. } => {
                Some(retry_after.as_secs_f64().ceil().max(1.0) as u64)
            }
            WorkerUnavailable { .. } | ShuttingDown | Loading | Overloaded(_) => Some(1),
            _ => None,
        }
    }

    /// Label for `surge_rejections_total{reason}` (stable: dashboards select on it).
    pub fn reason(&self) -> &'static str {
        match self {
            ApiError::InvalidRequest { .. } | ApiError::ContextLengthExceeded(_) => "bad_request",
            ApiError::WrongKind { .. } => "wrong_kind",
            ApiError::Unauthorized => "unauthorized",
            ApiError::Forbidden(_) => "forbidden",
            ApiError::ModelNotFound(_) => "model_not_found",
            ApiError::NotFound(_) => "route_not_found",
            ApiError::PayloadTooLarge(_) => "payload_too_large",
            ApiError::RateLimited { .. } => "rate_limited",
            ApiError::InsufficientQuota(_) => "insufficient_quota",
            ApiError::QueueFull { .. } => "queue_full",
            ApiError::Overloaded(_) => "overloaded",
            ApiError::QueueTimeout { .. } => "queue_timeout",
            ApiError::WorkerUnavailable { .. } => "worker_unavailable",
            ApiError::Loading => "loading",
            ApiError::ShuttingDown => "shutting_down",
            ApiError::Upstream(_) => "upstream",
            ApiError::Internal(_) => "internal",
        }
    }

    /// The OpenAI error body.
    pub fn error_body(&self) -> ErrorBody {
        ErrorBody {
            error: ErrorObject {
                message: self.to_string(),
                kind: self.kind().into(),
                param: self.param().map(str::to_string),
                code: Some(self.code().into()),
            },
        }
    }

    /// The body as a JSON value (the payload of an SSE error event).
    pub fn body(&self) -> serde_json::Value {
        serde_json::to_value(self.error_body()).expect("an error body serialises")
    }

    /// The body as bytes, ready to send.
    pub fn body_bytes(&self) -> Vec<u8> {
        self.error_body().to_json().into_bytes()
    }
}

/// Parses a JSON body so that malformed JSON gets the OpenAI error shape (400 with code
/// `invalid_json`, or `invalid_value` for JSON of the wrong shape).
pub fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| {
        let (message, code) = if e.is_data() {
            (format!("Invalid request: {e}"), "invalid_value")
        } else {
            (
                format!("We could not parse the JSON body of your request: {e}"),
                "invalid_json",
            )
        };
        ApiError::InvalidRequest {
            message,
            param: None,
            code: Some(code),
        }
    })
}

#[cfg(feature = "axum")]
impl axum::response::IntoResponse for ApiError {
    fn into_response(self) -> axum::response::Response {
        use axum::http::{header, HeaderValue, StatusCode};
        let status =
            StatusCode::from_u16(self.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut resp = (status, axum::Json(self.error_body())).into_response();
        if let Some(s) = self.retry_after() {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_condition_has_one_status_type_and_code() {
        let e = ApiError::ModelNotFound("nope".into());
        assert_eq!(e.status(), 404);
        let b = e.error_body();
        assert_eq!(b.error.code.as_deref(), Some("model_not_found"));
        assert_eq!(b.error.param.as_deref(), Some("model"));
        assert_eq!(b.error.kind, "invalid_request_error");
        let q = ApiError::QueueFull {
            model: "m".into(),
            retry_after: Duration::from_millis(1500),
        };
        assert_eq!(
            (q.status(), q.retry_after(), q.kind()),
            (429, Some(2), "rate_limit_error")
        );
        assert_eq!(ApiError::Unauthorized.kind(), "authentication_error");
        let f = ApiError::Forbidden("not yours".into());
        assert_eq!(
            (f.status(), f.kind(), f.code()),
            (403, "invalid_request_error", "forbidden")
        );
        assert_eq!(ApiError::ShuttingDown.status(), 503);
        assert_eq!(ApiError::ShuttingDown.retry_after(), Some(1));
        assert_eq!(ApiError::Internal("x".into()).kind(), "server_error");
        let c = ApiError::ContextLengthExceeded("too long".into());
        assert_eq!(
            (c.status(), c.code(), c.param()),
            (400, "context_length_exceeded", Some("messages"))
        );
    }

    #[test]
    fn bodies_round_trip_and_bad_json_is_a_400() {
        let e = ApiError::invalid("bad temperature", "temperature");
        let back: ErrorBody = serde_json::from_slice(&e.body_bytes()).unwrap();
        assert_eq!(back, e.error_body());
        assert_eq!(back.error.param.as_deref(), Some("temperature"));
        let bad: Result<serde_json::Value, _> = parse_json(b"{nope");
        assert_eq!(bad.unwrap_err().code(), "invalid_json");
        let wrong: Result<Vec<u8>, _> = parse_json(b"{}");
        assert_eq!(wrong.unwrap_err().code(), "invalid_value");
        assert_eq!(ErrorBody::from_bytes_lossy(b"oops\n").error.message, "oops");
    }
}
