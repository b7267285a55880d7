//! Every way the gateway itself answers a request with an error, mapped to the HTTP
//! status and the OpenAI error body (`{"error":{"message","type","param","code"}}`).

use std::time::Duration;

use serde_json::json;

/// An error the gateway answers itself (worker errors pass through as the worker sent
/// them).
#[derive(Debug, Clone, thiserror::Error)]
pub enum GatewayError {
    #[error("unknown route {method} {path}")]
    RouteNotFound { method: String, path: String },
    #[error("the model '{0}' does not exist")]
    ModelNotFound(String),
    #[error("the model '{model}' is a {kind} model and cannot serve {route}")]
    WrongKind {
        model: String,
        kind: &'static str,
        route: String,
    },
    #[error("{message}")]
    BadRequest {
        message: String,
        param: Option<String>,
    },
    #[error("request body is larger than {0} bytes")]
    PayloadTooLarge(usize),
    #[error("missing or invalid API key")]
    Unauthorized,
    #[error("rate limit reached for this API key")]
    RateLimited { retry_after: Duration },
    #[error("too many requests are waiting for model '{model}'")]
    QueueFull {
        model: String,
        retry_after: Duration,
    },
    #[error("no worker for model '{model}' became available in time")]
    QueueTimeout {
        model: String,
        retry_after: Duration,
    },
    #[error("model '{model}' could not be started: {why}")]
    WorkerUnavailable { model: String, why: String },
    #[error("the gateway is shutting down")]
    ShuttingDown,
    #[error("upstream error: {0}")]
    Upstream(String),
}

impl GatewayError {
    pub fn status(&self) -> u16 {
        match self {
            GatewayError::RouteNotFound { .. } | GatewayError::ModelNotFound(_) => 404,
            GatewayError::WrongKind { .. } | GatewayError::BadRequest { .. } => 400,
            GatewayError::PayloadTooLarge(_) => 413,
            GatewayError::Unauthorized => 401,
            GatewayError::RateLimited { .. } | GatewayError::QueueFull { .. } => 429,
            GatewayError::QueueTimeout { .. }
            | GatewayError::WorkerUnavailable { .. }
            | GatewayError::ShuttingDown => 503,
            GatewayError::Upstream(_) => 502,
        }
    }

    /// OpenAI's `type` field.
    pub fn kind(&self) -> &'static str {
        match self.status() {
            401 => "authentication_error",
            429 => "rate_limit_error",
            400 | 404 | 413 => "invalid_request_error",
            _ => "server_error",
        }
    }

    /// OpenAI's `code` field, where it has one.
    pub fn code(&self) -> Option<&'static str> {
        match self {
            GatewayError::ModelNotFound(_) => Some("model_not_found"),
            GatewayError::Unauthorized => Some("invalid_api_key"),
            GatewayError::RateLimited { .. } => Some("rate_limit_exceeded"),
            GatewayError::QueueFull { .. } => Some("queue_full"),
            GatewayError::QueueTimeout { .. } => Some("queue_timeout"),
            _ => None,
        }
    }

    fn param(&self) -> Option<&str> {
        match self {
            GatewayError::ModelNotFound(_) | GatewayError::WrongKind { .. } => Some("model"),
            GatewayError::BadRequest { param, .. } => param.as_deref(),
            _ => None,
        }
    }

    /// Seconds for the `Retry-After` header, where retrying later makes sense.
    pub fn retry_after(&self) -> Option<u64> {
        match self {
            GatewayError::RateLimited { retry_after }
            | GatewayError::QueueFull { retry_after, .. }
            | GatewayError::QueueTimeout { retry_after, .. } => {
                Some(retry_after.as_secs_f64().ceil().max(1.0) as u64)
            }
            GatewayError::WorkerUnavailable { .. } | GatewayError::ShuttingDown => Some(1),
            _ => None,
        }
    }

    /// Label for the rejections metric.
    pub fn reason(&self) -> &'static str {
        match self {
            GatewayError::RouteNotFound { .. } => "route_not_found",
            GatewayError::ModelNotFound(_) => "model_not_found",
            GatewayError::WrongKind { .. } => "wrong_kind",
            GatewayError::BadRequest { .. } => "bad_request",
            GatewayError::PayloadTooLarge(_) => "payload_too_large",
            GatewayError::Unauthorized => "unauthorized",
            GatewayError::RateLimited { .. } => "rate_limited",
            GatewayError::QueueFull { .. } => "queue_full",
            GatewayError::QueueTimeout { .. } => "queue_timeout",
            GatewayError::WorkerUnavailable { .. } => "worker_unavailable",
            GatewayError::ShuttingDown => "shutting_down",
            GatewayError::Upstream(_) => "upstream",
        }
    }

    /// The OpenAI error body.
    pub fn body(&self) -> Vec<u8> {
        json!({"error": {
            "message": self.to_string(),
            "type": self.kind(),
            "param": self.param(),
            "code": self.code(),
        }})
        .to_string()
        .into_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_and_bodies() {
        let e = GatewayError::ModelNotFound("nope".into());
        assert_eq!(e.status(), 404);
        let v: serde_json::Value = serde_json::from_slice(&e.body()).unwrap();
        assert_eq!(v["error"]["code"], "model_not_found");
        assert_eq!(v["error"]["param"], "model");
        let q = GatewayError::QueueFull {
            model: "m".into(),
            retry_after: Duration::from_millis(1500),
        };
        assert_eq!((q.status(), q.retry_after()), (429, Some(2)));
        assert_eq!(GatewayError::Unauthorized.kind(), "authentication_error");
    }
}
