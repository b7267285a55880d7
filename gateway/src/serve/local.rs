//! The endpoints the gateway answers itself: `/health`, `/ready`, `/metrics`,
//! `/v1/models[/{id}]` and `/admin/pools`.

use std::sync::atomic::Ordering;

use pingora::proxy::Session;
use pingora::Result;
use serde_json::json;

use super::errors::GatewayError;
use super::proxy::{authorization, write_json, Gateway};

impl Gateway {
    /// Answers a local endpoint; `None` when the path is not one.
    pub(super) async fn local(&self, session: &mut Session, path: &str) -> Option<Result<()>> {
        let get = session.req_header().method == http::Method::GET;
        let (status, body, ctype) = match path {
            "/health" => (200, json!({"status": "ok"}).to_string(), "application/json"),
            "/ready" => {
                if self.draining.load(Ordering::Relaxed) {
                    (
                        503,
                        json!({"status": "draining"}).to_string(),
                        "application/json",
                    )
                } else {
                    (
                        200,
                        json!({"status": "ready"}).to_string(),
                        "application/json",
                    )
                }
            }
            "/metrics" => (
                200,
                self.metrics.render(),
                "text/plain; version=0.0.4; charset=utf-8",
            ),
            "/admin/pools" => {
                let auth = authorization(session);
                if let Err(e) = self.keys.authenticate(auth) {
                    return Some(self.reject(session, &e).await);
                }
                (200, self.pools.json().to_string(), "application/json")
            }
            "/v1/models" => (
                200,
                self.registry.list_json().to_string(),
                "application/json",
            ),
            p if p.starts_with("/v1/models/") => {
                let id = &p["/v1/models/".len()..];
                match self.registry.model_json(id) {
                    Some(v) if get => (200, v.to_string(), "application/json"),
                    Some(_) => return None,
                    None if get => {
                        let e = GatewayError::ModelNotFound(id.to_string());
                        return Some(self.reject(session, &e).await);
                    }
                    None => return None,
                }
            }
            _ => return None,
        };
        if !get {
            return None;
        }
        Some(write_json(session, status, body.into_bytes(), None, ctype).await)
    }
}
