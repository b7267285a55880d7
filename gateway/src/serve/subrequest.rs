//! Bodies larger than pingora's retry buffer (64 KiB: audio uploads, long prompts).
//!
//! The gateway must read a body to find its `model` before it can pick a worker, but
//! pingora only replays the first 64 KiB of what was read. For a larger body the
//! request is forwarded as a pingora subrequest with the body preset (pingora's
//! `pipe_subrequest` with `InputBodyType::Preset`): the subrequest runs through the
//! same [`ProxyHttp`](pingora::proxy::ProxyHttp) phases as any request, carrying the
//! routing already done in a [`Routed`] user context, and its response is piped to the
//! client.

use bytes::Bytes;
use pingora::proxy::subrequest::pipe::{pipe_subrequest, InputBody, InputBodyType};
use pingora::proxy::subrequest::{BodyMode, Ctx as SubrequestCtx};
use pingora::proxy::Session;

use super::errors::GatewayError;
use super::proxy::{Ctx, Gateway};
use super::routing::Route;

/// What the main request learnt before handing over to its subrequest.
pub struct Routed {
    pub route: Route,
    pub model: String,
    pub include_usage: bool,
    pub stream: bool,
    /// The key's `x-ratelimit-*` headers (its admission stays with the main request).
    pub ratelimit_headers: Vec<(&'static str, String)>,
}

/// The routing of a subrequest started by [`Gateway::forward_preset`].
pub fn routed(session: &Session) -> Option<&Routed> {
    session
        .subrequest_ctx
        .as_ref()?
        .user_ctx()?
        .downcast_ref::<Routed>()
}

impl Gateway {
    /// Forwards a request whose body (`body`, already read whole) is over the retry
    /// buffer as a subrequest, and writes its response to the client.
    pub(super) async fn forward_preset(
        &self,
        session: &mut Session,
        ctx: &mut Ctx,
        body: Bytes,
    ) -> Result<(), GatewayError> {
        let (Some(route), Some(model)) = (ctx.route, ctx.model.clone()) else {
            return Err(GatewayError::Upstream("request was not routed".into()));
        };
        let Some(spawner) = session.subrequest_spawner.as_ref() else {
            return Err(GatewayError::Upstream("subrequests are disabled".into()));
        };
        let routed = Routed {
            route,
            model,
            include_usage: ctx.include_usage,
            stream: ctx.stream,
            ratelimit_headers: ctx
                .admission
                .as_ref()
                .map(|a| a.headers.clone())
                .unwrap_or_default(),
        };
        let sub_ctx = SubrequestCtx::builder()
            .body_mode(BodyMode::ExpectBody)
            .user_ctx(Box::new(routed))
            .build();
        let (prepared, handle) = spawner.create_subrequest(session.as_ref(), sub_ctx);
        let preset = InputBodyType::Preset(InputBody::Bytes(vec![body]));
        let outcome = pipe_subrequest(session, prepared, handle, |t| Ok(Some(t)), preset).await;
        // The subrequest counts the request in the metrics; the main one must not.
        ctx.route = None;
        let mut state = match outcome {
            Ok(state) => state,
            Err(e) if !e.state.header_received => {
                return Err(GatewayError::Upstream(format!(
                    "forwarding the request failed: {}",
                    e.error.etype().as_str()
                )))
            }
            Err(mut e) => {
                // The client already has a response header; the subrequest's own
                // error handling wrote what could be written.
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
}
