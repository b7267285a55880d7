//! One error enum for every worker endpoint, mapped to an HTTP status and to OpenAI's
//! error body `{"error":{"message","type","param","code"}}` so clients see the same shape
//! from surge as from OpenAI.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

#[derive(Debug, Clone, thiserror::Error)]
pub enum ApiError {
    /// A request that can never succeed as sent (bad JSON, missing field, out of range).
    #[error("{message}")]
    InvalidRequest {
        message: String,
        param: Option<String>,
        code: Option<&'static str>,
    },
    #[error("{0}")]
    ContextLengthExceeded(String),
    #[error("The model '{0}' does not exist")]
    ModelNotFound(String),
    #[error("Unknown route {0}")]
    NotFound(String),
    #[error("Request body too large: the limit is {0} bytes")]
    PayloadTooLarge(usize),
    #[error("The model is still loading")]
    Loading,
    #[error("The worker is shutting down")]
    ShuttingDown,
    #[error("{0}")]
    Overloaded(String),
    #[error("{0}")]
    Internal(String),
}

impl ApiError {
    pub fn invalid(message: impl Into<String>, param: impl Into<Option<&'static str>>) -> Self {
        ApiError::InvalidRequest {
            message: message.into(),
            param: param.into().map(str::to_string),
            code: None,
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::InvalidRequest { .. } | ApiError::ContextLengthExceeded(_) => {
                StatusCode::BAD_REQUEST
            }
            ApiError::ModelNotFound(_) | ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Loading | ApiError::ShuttingDown => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Overloaded(_) => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_type(&self) -> &'static str {
        match self {
            ApiError::InvalidRequest { .. }
            | ApiError::ContextLengthExceeded(_)
            | ApiError::PayloadTooLarge(_) => "invalid_request_error",
            ApiError::ModelNotFound(_) | ApiError::NotFound(_) => "invalid_request_error",
            ApiError::Loading | ApiError::ShuttingDown | ApiError::Overloaded(_) => {
                "server_overloaded"
            }
            ApiError::Internal(_) => "server_error",
        }
    }

    fn code(&self) -> Option<&'static str> {
        match self {
            ApiError::InvalidRequest { code, .. } => *code,
            ApiError::ContextLengthExceeded(_) => Some("context_length_exceeded"),
            ApiError::ModelNotFound(_) => Some("model_not_found"),
            ApiError::NotFound(_) => Some("not_found"),
            ApiError::PayloadTooLarge(_) => Some("payload_too_large"),
            ApiError::Loading => Some("model_loading"),
            ApiError::ShuttingDown => Some("shutting_down"),
            ApiError::Overloaded(_) => Some("overloaded"),
            ApiError::Internal(_) => Some("internal_error"),
        }
    }

    fn param(&self) -> Option<&str> {
        match self {
            ApiError::InvalidRequest { param, .. } => param.as_deref(),
            ApiError::ContextLengthExceeded(_) => Some("messages"),
            ApiError::ModelNotFound(_) => Some("model"),
            _ => None,
        }
    }

    /// The OpenAI error body; also sent as the payload of an SSE error event.
    pub fn body(&self) -> serde_json::Value {
        json!({"error": {
            "message": self.to_string(),
            "type": self.error_type(),
            "param": self.param(),
            "code": self.code(),
        }})
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut resp = (self.status(), axum::Json(self.body())).into_response();
        if matches!(
            self,
            ApiError::Loading | ApiError::ShuttingDown | ApiError::Overloaded(_)
        ) {
            resp.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from_static("1"),
            );
        }
        resp
    }
}

/// Parses a JSON body ourselves so malformed JSON gets the OpenAI error shape (axum's
/// `Json` extractor answers with plain text).
pub fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| {
        let message = if e.is_data() {
            format!("Invalid request: {e}")
        } else {
            format!("We could not parse the JSON body of your request: {e}")
        };
        ApiError::InvalidRequest {
            message,
            param: None,
            code: Some(if e.is_data() {
                "invalid_value"
            } else {
                "invalid_json"
            }),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_to_openai_shape_and_status() {
        let e = ApiError::ContextLengthExceeded("too long".into());
        assert_eq!(e.status(), StatusCode::BAD_REQUEST);
        let b = e.body();
        assert_eq!(b["error"]["code"], "context_length_exceeded");
        assert_eq!(b["error"]["type"], "invalid_request_error");
        assert_eq!(b["error"]["message"], "too long");
        let bad: Result<serde_json::Value, _> = parse_json(b"{nope");
        assert_eq!(bad.unwrap_err().body()["error"]["code"], "invalid_json");
    }
}
