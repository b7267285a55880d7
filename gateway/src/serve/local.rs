//! The endpoints the gateway answers itself: `/health`, `/ready`, `/metrics`,
//! `/v1/models[/{id}]` and `/admin/pools`.

use std::sync::atomic::Ordering;

use pingora::proxy::Session;
use pingora::Result;
use serde::Serialize;
use surge_protocol::error::ApiError;

use super::proxy::Gateway;
use super::reply::{self, authorization};

#[derive(Serialize)]
struct Status {
    status: &'static str,
}

/// Answers `path` if it is a local endpoint (GET only); `Ok(false)` when it is not one.
pub async fn answer(gw: &Gateway, session: &mut Session, path: &str) -> Result<bool> {
    if session.req_header().method != http::Method::GET {
        return Ok(false);
    }
    match path {
        "/health" => reply::json(session, 200, &Status { status: "ok" }).await?,
        "/ready" if gw.draining.load(Ordering::Relaxed) => {
            reply::json(session, 503, &Status { status: "draining" }).await?
        }
        "/ready" => reply::json(session, 200, &Status { status: "ready" }).await?,
        "/metrics" => {
            let text = gw.metrics.render().into_bytes();
            let ctype = "text/plain; version=0.0.4; charset=utf-8";
            reply::write(session, 200, ctype, text, &[]).await?
        }
        "/admin/pools" => match gw.keys.authenticate(authorization(session)) {
            Ok(()) => reply::json(session, 200, &gw.pools.view().await).await?,
            Err(e) => gw.reject(session, &e).await?,
        },
        "/v1/models" => reply::json(session, 200, &gw.registry.list()).await?,
        p if p.starts_with("/v1/models/") => {
            let id = &p["/v1/models/".len()..];
            match gw.registry.model(id) {
                Some(v) => reply::json(session, 200, &v).await?,
                None => {
                    let e = ApiError::ModelNotFound(id.to_string());
                    gw.reject(session, &e).await?
                }
            }
        }
        _ => return Ok(false),
    }
    Ok(true)
}
