//! Waiting for a worker slot (a cold start, a full pool) on the client's behalf.
//!
//! While it waits the client's connection is watched: a client that hangs up leaves
//! the pool's queue at once (its place, the queue-depth gauge and the autoscaler's
//! demand with it) instead of at its queue timeout.
//!
//! Streaming clients get heartbeats: after `sse_heartbeat` the gateway sends the SSE
//! response header itself, then a `: waiting` comment at that interval, so load
//! balancers and proxies in between do not cut an idle connection. From then on the
//! client has a 200, so a refusal (queue timeout) or a worker's error ends the stream
//! with an error event and `[DONE]` instead.

use std::time::Duration;

use pingora::http::ResponseHeader;
use pingora::proxy::Session;
use pingora::Result;
use surge_protocol::error::ApiError;
use surge_protocol::sse;

use super::metrics::GatewayMetrics;
use super::pool::{Lease, Pool};
use super::proxy::Ctx;

/// [`Pool::acquire`] while the client is still there; with `heartbeat`, an SSE comment
/// at that interval. `Err` when the client is gone (the wait is abandoned).
pub async fn wait_for_slot(
    session: &mut Session,
    ctx: &mut Ctx,
    pool: &Pool,
    heartbeat: Option<Duration>,
) -> Result<std::result::Result<Lease, ApiError>> {
    let acquire = pool.acquire();
    tokio::pin!(acquire);
    let every = heartbeat.unwrap_or(Duration::from_secs(3600));
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    let mut watching = true;
    loop {
        let mut due = false;
        tokio::select! {
            lease = &mut acquire => return Ok(lease),
            _ = tick.tick(), if heartbeat.is_some() => due = true,
            // The body was read whole: this returns only when the client closes (an
            // error), or pipelines its next request (left for pingora to read).
            gone = session.downstream_session.read_body_or_idle(true), if watching => {
                gone?;
                watching = false;
            }
        }
        if due {
            beat(session, ctx).await?;
        }
    }
}

async fn beat(session: &mut Session, ctx: &mut Ctx) -> Result<()> {
    if !ctx.early_sse {
        let mut h = ResponseHeader::build(200, Some(3 + ctx.response_headers.len()))?;
        h.insert_header("Content-Type", "text/event-stream")?;
        h.insert_header("Cache-Control", "no-cache")?;
        h.insert_header("Transfer-Encoding", "chunked")?;
        for (name, value) in &ctx.response_headers {
            h.insert_header(*name, value.as_str())?;
        }
        session.write_response_header(Box::new(h), false).await?;
        ctx.early_sse = true;
    }
    session
        .write_response_body(Some(sse::comment("waiting for a worker")), false)
        .await
}

/// Ends an SSE response with `e` as an error event and `[DONE]`.
pub async fn end_stream_with(
    session: &mut Session,
    ctx: &mut Ctx,
    metrics: &GatewayMetrics,
    e: &ApiError,
) {
    metrics.rejections.with_label_values(&[e.reason()]).inc();
    // A partial event the worker left unfinished is dropped.
    ctx.body.drop_partial();
    let _ = session
        .write_response_body(Some(sse::error_event(&e.error_body())), true)
        .await;
}
