//! Streaming clients that wait for a worker (a cold start, a full pool): after
//! `sse_heartbeat` the gateway sends the SSE response header itself, then a `: waiting`
//! comment at that interval, so load balancers and proxies in between do not cut an
//! idle connection. From then on the client has a 200, so a refusal (queue timeout) or
//! a worker's error ends the stream with an error event and `[DONE]` instead.

use bytes::Bytes;
use pingora::http::ResponseHeader;
use pingora::proxy::Session;
use pingora::Result;

use super::errors::GatewayError;
use super::pool::{Lease, Pool};
use super::proxy::{Ctx, Gateway};
use super::sse;

const HEARTBEAT: &[u8] = b": waiting for a worker\n\n";

impl Gateway {
    /// [`Pool::acquire`], sending heartbeats to the client while it waits.
    pub(super) async fn acquire_with_heartbeats(
        &self,
        session: &mut Session,
        ctx: &mut Ctx,
        pool: &std::sync::Arc<Pool>,
    ) -> Result<std::result::Result<Lease, GatewayError>> {
        let every = self.cfg.sse_heartbeat;
        let acquire = pool.acquire();
        tokio::pin!(acquire);
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        loop {
            tokio::select! {
                lease = &mut acquire => return Ok(lease),
                _ = tick.tick() => self.heartbeat(session, ctx).await?,
            }
        }
    }

    async fn heartbeat(&self, session: &mut Session, ctx: &mut Ctx) -> Result<()> {
        if !ctx.early_sse {
            let mut h = ResponseHeader::build(200, Some(4 + ctx.ratelimit_headers.len()))?;
            h.insert_header("Content-Type", "text/event-stream")?;
            h.insert_header("Cache-Control", "no-cache")?;
            h.insert_header("Transfer-Encoding", "chunked")?;
            for (name, value) in &ctx.ratelimit_headers {
                h.insert_header(*name, value.as_str())?;
            }
            session.write_response_header(Box::new(h), false).await?;
            ctx.early_sse = true;
            ctx.sse = true;
        }
        session
            .write_response_body(Some(Bytes::from_static(HEARTBEAT)), false)
            .await
    }

    /// Ends an SSE response with `e` as an error event and `[DONE]`.
    pub(super) async fn end_stream_with(
        &self,
        session: &mut Session,
        ctx: &mut Ctx,
        e: &GatewayError,
    ) {
        self.metrics
            .rejections
            .with_label_values(&[e.reason()])
            .inc();
        // A partial event the worker left unfinished is dropped.
        ctx.pending.clear();
        let _ = session
            .write_response_body(Some(sse::error_event(&e.body())), true)
            .await;
    }
}
