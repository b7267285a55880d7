//! The endpoints the gateway answers itself: `/health`, `/ready`, `/metrics`,
//! `/v1/models[/{id}]`, `/v1/usage`, `/admin/pools` and the status page (`/`, `/status`,
//! `/status.json`, see [`super::status`]).

use std::sync::atomic::Ordering;

use pingora::proxy::Session;
use pingora::Result;
use serde::Serialize;
use surge_protocol::error::ApiError;

use super::proxy::Gateway;
use super::reply::{self, authorization};
use super::spend::now_ms;
use super::status;
use super::worker_metrics;
use crate::metering::ledger;
use crate::metering::query::{self, Caller};

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
            if let Some(c) = &gw.export {
                gw.metrics.sync_export(c);
            }
            let mut text = gw.metrics.render();
            let own = gw.metrics.family_names();
            let own: Vec<&str> = own.iter().map(String::as_str).collect();
            text.push_str(&worker_metrics::scrape(&gw.pools, &own).await);
            let text = text.into_bytes();
            let ctype = "text/plain; version=0.0.4; charset=utf-8";
            reply::write(session, 200, ctype, text, &[]).await?
        }
        "/admin/pools" => match gw.keys.authenticate(authorization(session)) {
            Ok(_) => reply::json(session, 200, &gw.pools.view().await).await?,
            Err(e) => gw.reject(session, &e).await?,
        },
        "/" | "/status" => status::page(gw, session).await?,
        "/status.json" => status::json(gw, session).await?,
        "/v1/usage" => match usage(gw, session).await {
            Ok(v) => reply::json(session, 200, &v).await?,
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

/// `GET /v1/usage`: the caller's tenant's usage from the ledger (any tenant's for an
/// admin key). The query runs on a blocking thread with a read-only connection of its
/// own, beside the ledger's writer.
async fn usage(
    gw: &Gateway,
    session: &Session,
) -> std::result::Result<serde_json::Value, ApiError> {
    let caller = match gw.keys.authenticate(authorization(session))? {
        Some(t) => Caller {
            tenant: Some(t.name.clone()),
            admin: t.admin,
        },
        None => Caller {
            tenant: None,
            admin: true,
        },
    };
    let Some(ledger) = &gw.ledger else {
        return Err(ApiError::NotFound("GET /v1/usage (no usage ledger)".into()));
    };
    let path = ledger.path().to_path_buf();
    let query = session.req_header().uri.query().map(str::to_string);
    tokio::task::spawn_blocking(move || {
        let conn = ledger::open_read_only(&path).map_err(|e| ApiError::Internal(e.to_string()))?;
        query::answer(&conn, &caller, query.as_deref(), now_ms())
    })
    .await
    .map_err(|e| ApiError::Internal(format!("usage query: {e}")))?
}
