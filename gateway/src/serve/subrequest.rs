//! Bodies larger than pingora's retry buffer (64 KiB: audio uploads, long prompts).
//!
//! The gateway must read a body to find its `model` before it can pick a worker, but
//! pingora only replays the first 64 KiB of what was read. For a larger body the
//! request is forwarded as a pingora subrequest with the body preset (pingora's
//! `pipe_subrequest` with `InputBodyType::Preset`): the subrequest runs through the
//! same [`ProxyHttp`](pingora::proxy::ProxyHttp) phases as any request, carrying the
//! routing already done in a [`Handoff`] user context, and its response is piped to the
//! client.

use bytes::Bytes;
use pingora::proxy::subrequest::pipe::{pipe_subrequest, InputBody, InputBodyType};
use pingora::proxy::subrequest::{BodyMode, Ctx as SubrequestCtx};
use pingora::proxy::Session;
use surge_protocol::error::ApiError;

use std::sync::{Arc, Mutex};

use super::bill::Bill;
use super::proxy::Ctx;
use super::routing::Target;
use super::trace::RequestTrace;

/// What the main request learnt before handing over to its subrequest.
pub struct Handoff {
    pub target: Target,
    /// The key's `x-ratelimit-*` headers and `x-request-id` (its admission stays with
    /// the main request).
    pub response_headers: Vec<(&'static str, String)>,
    /// The request's bill and spans, taken by the subrequest, which sees the response.
    pub bill: Arc<Mutex<Option<Bill>>>,
    pub trace: Arc<Mutex<Option<RequestTrace>>>,
}

/// Takes what the main request left in `slot` (once).
pub fn take<T>(slot: &Mutex<Option<T>>) -> Option<T> {
    slot.lock().unwrap_or_else(|p| p.into_inner()).take()
}

/// The routing of a subrequest started by [`forward_preset`].
pub fn handoff(session: &Session) -> Option<&Handoff> {
    session
        .subrequest_ctx
        .as_ref()?
        .user_ctx()?
        .downcast_ref::<Handoff>()
}

/// Forwards a routed request whose body (`body`, already read whole) is over the retry
/// buffer as a subrequest, and writes its response to the client.
pub async fn forward_preset(
    session: &mut Session,
    ctx: &mut Ctx,
    body: Bytes,
) -> Result<(), ApiError> {
    let Some(target) = ctx.target.clone() else {
        return Err(ApiError::Upstream("request was not routed".into()));
    };
    let Some(spawner) = session.subrequest_spawner.as_ref() else {
        return Err(ApiError::Upstream("subrequests are disabled".into()));
    };
    let bill = Arc::new(Mutex::new(ctx.bill.take()));
    let trace = Arc::new(Mutex::new(ctx.trace.take()));
    let handoff = Handoff {
        target,
        response_headers: ctx.response_headers.clone(),
        bill: bill.clone(),
        trace: trace.clone(),
    };
    let sub_ctx = SubrequestCtx::builder()
        .body_mode(BodyMode::ExpectBody)
        .user_ctx(Box::new(handoff))
        .build();
    let (prepared, handle) = spawner.create_subrequest(session.as_ref(), sub_ctx);
    let preset = InputBodyType::Preset(InputBody::Bytes(vec![body]));
    let outcome = pipe_subrequest(session, prepared, handle, |t| Ok(Some(t)), preset).await;
    // The subrequest counts and bills the request; the main one must not — unless the
    // subrequest never started, and the bill is still here.
    ctx.route = None;
    ctx.bill = take(&bill);
    ctx.trace = take(&trace);
    if ctx.bill.is_some() {
        ctx.route = ctx.target.as_ref().map(|t| t.route);
    }
    let mut state = match outcome {
        Ok(state) => state,
        Err(e) if !e.state.header_received => {
            return Err(ApiError::Upstream(format!(
                "forwarding the request failed: {}",
                e.error.etype().as_str()
            )))
        }
        Err(mut e) => {
            // The client already has a response header; the subrequest's own error
            // handling wrote what could be written.
            e.state.pipe_rx.take();
            if let Some(h) = e.state.join_handle.take() {
                h.abort();
            }
            return Ok(());
        }
    };
    // Let the subrequest finish (its logging phase) while nothing reads its pipe.
    if let Some(mut rx) = state.pipe_rx.take() {
        tokio::spawn(async move { while rx.recv().await.is_some() {} });
    }
    if let Some(h) = state.join_handle.take() {
        let _ = h.await;
    }
    Ok(())
}
