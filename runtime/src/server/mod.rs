//! HTTP plumbing shared by every worker kind (LLM, Whisper): listening on a Unix socket
//! or TCP, the OpenAI error shape, readiness, the common routes (`/health`, `/metrics`,
//! `/v1/models`, 404), Prometheus helpers, the engine thread's lifecycle, and SIGTERM
//! draining.

pub mod engine;
pub mod error;
pub mod listen;
pub mod metrics;
pub mod routes;
pub mod startup;
pub mod state;
pub mod trace;

use std::future::Future;

use axum::Router;

pub use engine::{catch_engine_panic, run_worker, EngineFailure};
pub use error::{parse_json, ApiError};
pub use listen::Listen;
pub use routes::{base_router, ModelIds, WorkerInfo};
pub use startup::{StartupReport, StartupTimer};
pub use state::{Lifecycle, Phase};

/// Serves `router` until `shutdown` resolves, then stops accepting and waits for in-flight
/// requests (streams included) to finish — the worker contract's SIGTERM drain.
/// `bound` runs once the socket accepts connections.
pub async fn serve(
    router: Router,
    listen: &Listen,
    shutdown: impl Future<Output = ()> + Send + 'static,
    bound: impl FnOnce(),
) -> std::io::Result<()> {
    let router = match std::env::var(surge_protocol::worker::SECRET_ENV) {
        Ok(secret) if !secret.is_empty() => require_secret(router, secret),
        _ => router,
    };
    match listen {
        Listen::Unix(path) => {
            // A socket file left by a killed predecessor would make bind fail.
            if path.exists() {
                std::fs::remove_file(path)?;
            }
            let listener = tokio::net::UnixListener::bind(path)?;
            bound();
            tracing::info!("listening on unix:{}", path.display());
            axum::serve(listener, router)
                .with_graceful_shutdown(shutdown)
                .await
        }
        Listen::Tcp(addr) => {
            let listener = tokio::net::TcpListener::bind(addr).await?;
            bound();
            tracing::info!("listening on tcp:{}", listener.local_addr()?);
            axum::serve(listener, router)
                .with_graceful_shutdown(shutdown)
                .await
        }
    }
}

/// Refuses (401) every request but `GET /health` that lacks `Authorization: Bearer
/// <secret>`: a worker reachable over the network serves only its gateway.
fn require_secret(router: Router, secret: String) -> Router {
    let want: std::sync::Arc<[u8]> = format!("Bearer {secret}").into_bytes().into();
    router.layer(axum::middleware::from_fn(
        move |req: axum::extract::Request, next: axum::middleware::Next| {
            let want = want.clone();
            async move {
                let open = req.uri().path() == "/health";
                let got = req
                    .headers()
                    .get(axum::http::header::AUTHORIZATION)
                    .map(|v| v.as_bytes());
                if open || got.is_some_and(|g| same_bytes(g, &want)) {
                    next.run(req).await
                } else {
                    axum::response::IntoResponse::into_response(ApiError::Unauthorized)
                }
            }
        },
    ))
}

/// Equality that takes as long wherever the first difference is.
fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Reads a request body of at most `limit` bytes. An oversized body is still read (and
/// discarded) up to 4 × `limit` before the 413 goes out: answering early and closing a
/// socket with unread data makes the kernel send RST, which can destroy the 413 before a
/// client that is still uploading reads it.
pub async fn read_body(body: axum::body::Body, limit: usize) -> Result<Vec<u8>, ApiError> {
    use futures_util::StreamExt;
    let mut stream = body.into_data_stream();
    let mut buf = Vec::new();
    let mut total = 0usize;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| {
            ApiError::invalid(format!("could not read the request body: {e}"), None)
        })?;
        total += chunk.len();
        if total <= limit {
            buf.extend_from_slice(&chunk);
        } else if total > limit.saturating_mul(4) {
            break;
        }
    }
    if total > limit {
        return Err(ApiError::PayloadTooLarge(limit));
    }
    Ok(buf)
}

/// Resolves on the first SIGTERM or SIGINT.
pub async fn termination_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        // Without signal handlers we can still serve; we just cannot drain gracefully.
        std::future::pending::<()>().await;
        return;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: draining"),
        _ = int.recv() => tracing::info!("SIGINT: draining"),
    }
}
