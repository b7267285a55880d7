//! The pingora `ProxyHttp` phases of `surge serve`, and nothing else: each phase hands
//! its work to the module that owns it.
//!
//! - `request_filter`: local endpoints ([`local`]) are answered here; an inference
//!   request is admitted by its API key ([`super::auth`]) and routed by the `model` in
//!   its body ([`routing`]). A body over pingora's 64 KiB retry buffer is forwarded as a
//!   subrequest with the body preset ([`subrequest`]).
//! - `upstream_peer`: a [`Lease`](super::pool::Lease) on a worker slot from the model's
//!   pool (waiting in its admission queue during a cold start, while the client stays
//!   connected; streaming clients get heartbeats meanwhile, [`stream_wait`]), and the
//!   worker's Unix socket as the peer.
//! - `response_filter` / `response_body_filter`: the worker's response on its way to
//!   the client ([`ResponseBody`]: SSE event by event, usage, time to first token).
//! - `fail_to_connect` / `error_while_proxy`: one retry on another worker when a worker
//!   died before answering.
//! - `fail_to_proxy`: errors in the OpenAI shape; after an SSE response began, an error
//!   event and `[DONE]` instead of a cut stream.
//! - `logging`: request metrics; the lease (worker slot) is released.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::upstreams::peer::HttpPeer;
use pingora::{Error, ErrorSource, ErrorType, Result};
use surge_protocol::error::ApiError;

use super::auth::{Admission, Keys};
use super::bill::{request_id, Bill};
use super::config::GatewayConfig;
use super::metrics::GatewayMetrics;
use super::pool::{Lease, Pools};
use super::registry::Registry;
use super::reply::{self, authorization};
use super::response::{Counting, ResponseBody};
use super::routing::{self, Route, Target};
use super::spend::{now_ms, Spending};
use super::trace::RequestTrace;
use super::{local, stream_wait, subrequest};
use crate::metering::Ledger;

/// The gateway's `ProxyHttp` service: what every request shares.
pub struct Gateway {
    pub registry: Arc<Registry>,
    pub pools: Arc<Pools>,
    pub metrics: Arc<GatewayMetrics>,
    pub cfg: Arc<GatewayConfig>,
    /// Set on SIGTERM/SIGINT: `/ready` turns 503 and new inference requests get 503.
    pub draining: Arc<AtomicBool>,
    /// API keys and their limits (none configured: open).
    pub keys: Arc<Keys>,
    /// Budgeted keys' spending and reservations.
    pub spending: Arc<Spending>,
    /// Where usage records go (none: not kept).
    pub ledger: Option<Arc<Ledger>>,
    /// The CloudEvents export's counters, for `/metrics`.
    pub export: Option<Arc<crate::metering::export::Counters>>,
}

/// Per-request state.
pub struct Ctx {
    pub(super) arrived: Instant,
    /// Metrics label of the route (`None` for local endpoints, which are not counted).
    pub(super) route: Option<Route>,
    /// Model, pool and response options, once the body was read.
    pub(super) target: Option<Target>,
    pub(super) lease: Option<Lease>,
    /// The error the gateway answers with (from `upstream_peer`).
    error: Option<ApiError>,
    /// Connect attempts to workers (one retry on another worker).
    attempts: u32,
    /// The gateway sent the client an SSE header itself (heartbeats while waiting for a
    /// worker): from then on errors are SSE events, and the worker's header is not sent.
    pub(super) early_sse: bool,
    /// The status the worker answered with (the client may have had an early 200).
    pub(super) upstream_status: Option<u16>,
    pub(super) body: ResponseBody,
    /// The API key's rate/concurrency admission; dropped (slot freed) with the request.
    pub(super) admission: Option<Admission>,
    /// The API key's `x-ratelimit-*` headers and `x-request-id`, added to the worker's
    /// response.
    pub(super) response_headers: Vec<(&'static str, String)>,
    /// What the request is billed (from its admission on).
    pub(super) bill: Option<Bill>,
    /// The gateway refused it after routing (queue full or timed out, no worker).
    pub(super) refused: bool,
    /// Its spans (traces on), and the headers that carry them to the worker.
    pub(super) trace: Option<RequestTrace>,
    trace_headers: Vec<(String, String)>,
}

impl Ctx {
    fn model_label(&self) -> &str {
        self.target.as_ref().map_or("-", |t| t.model.as_str())
    }
}

impl Gateway {
    /// Answers with a gateway error and counts it.
    pub(super) async fn reject(&self, session: &mut Session, e: &ApiError) -> Result<()> {
        reply::error(session, &self.metrics, e, &[]).await
    }

    /// Admits, reads and routes an inference request; `Ok(true)` when it was answered
    /// here (refused, or forwarded whole as a subrequest).
    async fn inference(&self, session: &mut Session, route: Route, ctx: &mut Ctx) -> Result<bool> {
        if session.req_header().method != http::Method::POST {
            let e = not_found(session);
            self.reject(session, &e).await?;
            return Ok(true);
        }
        if self.draining.load(Ordering::Relaxed) {
            session.set_keepalive(None);
            self.reject(session, &ApiError::ShuttingDown).await?;
            return Ok(true);
        }
        let id = request_id();
        ctx.trace = RequestTrace::start(session.req_header(), route, &id);
        let auth = ctx.trace.as_ref().map(|t| t.child("auth"));
        let admitted = self.keys.admit(authorization(session));
        drop(auth);
        match admitted {
            Ok(a) => {
                if let Some(t) = &ctx.trace {
                    t.tenant(a.tenant());
                }
                ctx.response_headers = a.headers.clone();
                ctx.response_headers.push(("x-request-id", id.clone()));
                if self.cfg.metering {
                    let mut bill = Bill::new(id, now_ms());
                    bill.tenant = a.tenant().to_string();
                    bill.key_id = a.key().map(|k| k.key_id.clone());
                    ctx.bill = Some(bill);
                }
                ctx.admission = Some(a);
            }
            Err(refusal) => {
                session.set_keepalive(None);
                reply::error(session, &self.metrics, &refusal.error, &refusal.headers).await?;
                return Ok(true);
            }
        }
        let routed =
            routing::route_request(session, route, &self.cfg, &self.registry, &self.pools).await;
        let forwarded = match routed {
            Ok(r) => {
                if let Some(t) = &ctx.trace {
                    t.routed(&r.target);
                }
                ctx.target = Some(r.target);
                if let Err(e) = self.reserve(ctx) {
                    session.set_keepalive(None);
                    self.reject(session, &e).await?;
                    return Ok(true);
                }
                match r.preset_body {
                    Some(body) => subrequest::forward_preset(session, ctx, body).await,
                    None => return Ok(false),
                }
            }
            Err(e) => Err(e),
        };
        if let Err(e) = forwarded {
            // The body may be unread: do not reuse the connection.
            session.set_keepalive(None);
            self.reject(session, &e).await?;
        }
        Ok(true)
    }
}

fn not_found(session: &Session) -> ApiError {
    let req = session.req_header();
    ApiError::NotFound(format!("{} {}", req.method, req.uri.path()))
}

#[async_trait]
impl ProxyHttp for Gateway {
    type CTX = Ctx;

    fn new_ctx(&self) -> Ctx {
        Ctx {
            arrived: Instant::now(),
            route: None,
            target: None,
            lease: None,
            error: None,
            attempts: 0,
            early_sse: false,
            upstream_status: None,
            body: ResponseBody::Pending,
            admission: None,
            response_headers: Vec::new(),
            bill: None,
            refused: false,
            trace: None,
            trace_headers: Vec::new(),
        }
    }

    fn allow_spawning_subrequest(&self, _session: &Session, _ctx: &Ctx) -> bool {
        true
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut Ctx) -> Result<bool> {
        if let Some(h) = subrequest::handoff(session) {
            // Routed (and admitted) by the main request, which read the body.
            ctx.route = Some(h.target.route);
            ctx.target = Some(h.target.clone());
            ctx.response_headers = h.response_headers.clone();
            ctx.bill = subrequest::take(&h.bill);
            ctx.trace = subrequest::take(&h.trace);
            return Ok(false);
        }
        let path = session.req_header().uri.path().to_string();
        if let Some(route) = Route::from_path(&path) {
            ctx.route = Some(route);
            return self.inference(session, route, ctx).await;
        }
        if path.starts_with("/v1/") {
            // Model listings need a key too when keys are configured (as OpenAI's do);
            // /health, /ready and /metrics stay open to probes and scrapers.
            if let Err(e) = self.keys.authenticate(authorization(session)) {
                self.reject(session, &e).await?;
                return Ok(true);
            }
        }
        if local::answer(self, session, &path).await? {
            return Ok(true);
        }
        let e = not_found(session);
        self.reject(session, &e).await?;
        Ok(true)
    }

    async fn upstream_peer(&self, session: &mut Session, ctx: &mut Ctx) -> Result<Box<HttpPeer>> {
        ctx.attempts += 1;
        // A retry after a failed connect: give the broken worker's slot back first.
        ctx.lease = None;
        let Some(target) = ctx.target.clone() else {
            return Err(Error::explain(
                ErrorType::InternalError,
                "no pool for request",
            ));
        };
        let heartbeat = target.stream.then_some(self.cfg.sse_heartbeat);
        let since = Instant::now();
        let queue = ctx.trace.as_ref().map(|t| t.child("queue"));
        let acquired = stream_wait::wait_for_slot(session, ctx, &target.pool, heartbeat).await;
        let now = Instant::now();
        if let (Some(t), Some(q), Ok(Ok(lease))) = (&mut ctx.trace, &queue, &acquired) {
            t.waited(q, lease, since, now);
            drop(queue);
            ctx.trace_headers = t.upstream(lease);
        }
        if let Some(bill) = &mut ctx.bill {
            bill.gateway_wait_seconds += (now - since).as_secs_f64();
            if let Ok(Ok(lease)) = &acquired {
                bill.cold_start_seconds += lease.cold_start_waited(since, now).as_secs_f64();
            }
        }
        match acquired? {
            Ok(lease) => {
                let peer = lease.endpoint().peer()?;
                ctx.lease = Some(lease);
                Ok(Box::new(peer))
            }
            Err(e) => {
                let status = e.status();
                ctx.error = Some(e);
                Err(Error::explain(
                    ErrorType::HTTPStatus(status),
                    "no worker slot for the request",
                ))
            }
        }
    }

    async fn upstream_request_filter(
        &self,
        _session: &mut Session,
        upstream: &mut RequestHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        // The gateway answered `Expect: 100-continue` itself and already holds the body.
        upstream.remove_header("expect");
        // The client's API key is the gateway's business; a remote worker gets the
        // shared secret of its endpoint instead.
        upstream.remove_header("authorization");
        if let Some(auth) = ctx
            .lease
            .as_ref()
            .and_then(|l| l.endpoint().authorization())
        {
            upstream.insert_header("authorization", auth)?;
        }
        // The client's own traceparent was our parent; the worker's is our upstream span.
        for (name, value) in &ctx.trace_headers {
            upstream.insert_header(name.clone(), value.as_str())?;
        }
        Ok(())
    }

    fn fail_to_connect(
        &self,
        _session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut Ctx,
        mut e: Box<Error>,
    ) -> Box<Error> {
        if let Some(lease) = &ctx.lease {
            lease.mark_failed();
        }
        // One more try, on another worker (the pool skips failed ones).
        e.set_retry(ctx.attempts < 2);
        e
    }

    fn error_while_proxy(
        &self,
        peer: &HttpPeer,
        session: &mut Session,
        e: Box<Error>,
        ctx: &mut Ctx,
        client_reused: bool,
    ) -> Box<Error> {
        let mut e = e.more_context(format!("Peer: {peer}"));
        if session.as_ref().retry_buffer_truncated() || session.response_written().is_some() {
            e.set_retry(false);
            return e;
        }
        // The worker's connection broke before it answered and the body is still
        // buffered: a worker that died mid-request. Send the request once more, to
        // another worker (or the replacement the pool starts).
        let worker_died = matches!(
            e.etype(),
            ErrorType::ConnectionClosed | ErrorType::ReadError | ErrorType::WriteError
        );
        if worker_died && ctx.attempts < 2 {
            if let Some(lease) = &ctx.lease {
                lease.mark_failed();
            }
            e.set_retry(true);
        } else {
            // A pooled keep-alive connection found closed is safe to retry as well.
            e.retry.decide_reuse(client_reused);
        }
        e
    }

    async fn response_filter(
        &self,
        _session: &mut Session,
        upstream: &mut ResponseHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        let ctype = upstream
            .headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        ctx.body = ResponseBody::for_response(ctype, ctx.early_sse);
        ctx.upstream_status = Some(upstream.status.as_u16());
        if let Some(bill) = &mut ctx.bill {
            // A transcription's metering comes in the worker's headers, whatever the
            // response format.
            let secs = |name: &str| {
                upstream
                    .headers
                    .get(name)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<f64>().ok())
            };
            if let Some(audio) = secs("x-surge-audio-seconds") {
                let exec = secs("x-surge-execution-seconds").unwrap_or(0.0);
                let queue = secs("x-surge-queue-seconds").unwrap_or(0.0);
                bill.audio(audio, exec, queue);
            }
        }
        for (name, value) in &ctx.response_headers {
            upstream.insert_header(*name, value.as_str())?;
        }
        let include_usage = ctx.target.as_ref().is_some_and(|t| t.include_usage);
        if ctx.body.is_sse() && !include_usage {
            // Events are removed, so any length the worker sent no longer holds.
            upstream.remove_header("content-length");
        }
        Ok(())
    }

    fn response_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut Ctx,
    ) -> Result<Option<Duration>> {
        let Some(target) = &ctx.target else {
            return Ok(None);
        };
        let counting = Counting {
            metrics: &self.metrics,
            model: &target.model,
            arrived: ctx.arrived,
            include_usage: target.include_usage,
        };
        *body = ctx
            .body
            .filter(body.take(), end_of_stream, &counting, ctx.bill.as_mut());
        Ok(None)
    }

    async fn fail_to_proxy(&self, session: &mut Session, e: &Error, ctx: &mut Ctx) -> FailToProxy {
        let upstream = matches!(e.esource(), ErrorSource::Upstream);
        if upstream {
            if let Some(lease) = &ctx.lease {
                lease.mark_failed();
            }
        }
        let what = e.etype().as_str();
        ctx.refused = ctx.error.is_some();
        let gateway_error = match ctx.error.take() {
            Some(g) => Some(g),
            // The worker could not be reached or broke before it answered.
            None if session.response_written().is_none() && upstream => {
                Some(ApiError::Upstream(format!(
                    "the worker for model '{}' failed: {what}",
                    ctx.model_label()
                )))
            }
            // The client is gone or sent garbage.
            None if session.response_written().is_none()
                && matches!(e.esource(), ErrorSource::Downstream) =>
            {
                None
            }
            None if session.response_written().is_none() => {
                Some(ApiError::Upstream(format!("internal error: {what}")))
            }
            None => {
                // The worker broke after the response began (it crashed mid-stream): an
                // SSE client gets an error event and `[DONE]` instead of a cut stream.
                if upstream && (ctx.body.is_sse() || ctx.early_sse) {
                    let g = ApiError::Upstream(format!(
                        "the worker for model '{}' failed mid-stream: {what}",
                        ctx.model_label()
                    ));
                    stream_wait::end_stream_with(session, ctx, &self.metrics, &g).await;
                }
                None
            }
        };
        let code = match gateway_error {
            Some(g) if ctx.early_sse => {
                // Heartbeats went out: the client has a 200 SSE header already.
                stream_wait::end_stream_with(session, ctx, &self.metrics, &g).await;
                ctx.upstream_status = Some(g.status());
                g.status()
            }
            Some(g) => {
                let _ = self.reject(session, &g).await;
                g.status()
            }
            None => 0,
        };
        FailToProxy {
            error_code: code,
            can_reuse_downstream: false,
        }
    }

    fn suppress_error_log(&self, _session: &Session, _ctx: &Ctx, e: &Error) -> bool {
        // The gateway's own refusals (429/503 from the pool) are answers, not proxy
        // failures; they are counted in `surge_rejections_total`. A client that hangs up is billed and counted, not an error of the gateway's.
        matches!(e.etype(), ErrorType::HTTPStatus(_))
            || matches!(e.esource(), ErrorSource::Downstream)
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut Ctx) {
        // Releases the worker slot.
        ctx.lease = None;
        let Some(route) = ctx.route else { return };
        let status = ctx
            .upstream_status
            .filter(|_| ctx.early_sse)
            .or_else(|| session.response_written().map(|r| r.status.as_u16()))
            .unwrap_or(0);
        let model = ctx.model_label().to_string();
        self.metrics
            .requests
            .with_label_values(&[&model, route.label(), &status.to_string()])
            .inc();
        self.metrics
            .request_seconds
            .with_label_values(&[&model, route.label()])
            .observe(ctx.arrived.elapsed().as_secs_f64());
        let record = self.close_bill(ctx, route, status, e);
        if let Some(mut t) = ctx.trace.take() {
            t.end(status, e.map(|e| e.etype().as_str()), record.as_ref());
        }
        if let Some(r) = record {
            self.record_usage(r);
        }
    }
}
