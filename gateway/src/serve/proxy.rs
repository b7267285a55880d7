//! The pingora `ProxyHttp` phases of `surge serve`.
//!
//! - `request_filter`: local endpoints (`/health`, `/ready`, `/metrics`, `/v1/models`)
//!   are answered here; for the OpenAI inference routes the request body is read (with
//!   pingora's retry buffering, so it is still forwarded afterwards) to find `model`,
//!   which picks the pool.
//!   A body over pingora's 64 KiB retry buffer is forwarded as a subrequest with the
//!   body preset ([`super::subrequest`]).
//! - `upstream_peer`: a [`Lease`] on a worker slot from the model's pool (waits in the
//!   admission queue during a cold start), and the worker's Unix socket as the peer. A
//!   streaming client that waits longer than `sse_heartbeat` gets its SSE response
//!   header and `: waiting` comments meanwhile, so proxies in between do not cut it.
//! - `response_body_filter`: SSE passes through chunk by chunk; the worker's trailing
//!   usage chunk is dropped unless the client asked for `stream_options.include_usage`.
//! - `fail_to_proxy`: gateway errors in the OpenAI shape; a worker that fails after an
//!   SSE response began (crash mid-stream) ends the stream with an error event and
//!   `data: [DONE]` rather than a cut connection.
//! - `logging`: metrics, and the lease is released.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::upstreams::peer::HttpPeer;
use pingora::{Error, ErrorSource, ErrorType, Result};
use serde_json::Value;

use super::auth::{Admission, Keys};
use super::config::GatewayConfig;
use super::errors::GatewayError;
use super::metrics::GatewayMetrics;
use super::pool::{Lease, Pool, Pools};
use super::registry::Registry;
use super::routing::Route;
use super::sse::{self, find_event_end, usage_event};
use super::subrequest;

/// Non-streaming responses up to this size are parsed for their `usage`.
const MAX_USAGE_SCAN: usize = 1 << 20;

/// The gateway's `ProxyHttp` service.
pub struct Gateway {
    pub registry: Arc<Registry>,
    pub pools: Arc<Pools>,
    pub metrics: Arc<GatewayMetrics>,
    pub cfg: Arc<GatewayConfig>,
    /// Set on SIGTERM/SIGINT: `/ready` turns 503 and new inference requests get 503.
    pub draining: Arc<AtomicBool>,
    /// API keys and their limits (none configured: open).
    pub keys: Arc<Keys>,
}

/// Per-request state.
pub struct Ctx {
    pub(super) start: Instant,
    /// Metrics label of the route (`None` for local endpoints, which are not counted).
    pub(super) route: Option<Route>,
    /// Canonical model name once resolved.
    pub(super) model: Option<String>,
    pub(super) pool: Option<Arc<Pool>>,
    pub(super) lease: Option<Lease>,
    /// The error the gateway answers with (from `upstream_peer`).
    pub(super) error: Option<GatewayError>,
    /// Connect attempts to workers (one retry on another worker).
    pub(super) attempts: u32,
    pub(super) include_usage: bool,
    /// The client asked for `stream: true`.
    pub(super) stream: bool,
    /// A body too large for pingora's retry buffer, to forward as a subrequest.
    pub(super) preset_body: Option<Bytes>,
    /// The gateway already sent the SSE response header (heartbeats while waiting for a
    /// worker); the worker's header is then not forwarded, and errors become SSE events.
    pub(super) early_sse: bool,
    /// The worker answered with an error after `early_sse`: its body becomes an event.
    pub(super) error_event: bool,
    /// The status the worker answered with (the client may have had an early 200).
    pub(super) upstream_status: Option<u16>,
    /// The API key's `x-ratelimit-*` headers, added to the worker's response.
    pub(super) ratelimit_headers: Vec<(&'static str, String)>,
    /// The response is an SSE stream.
    pub(super) sse: bool,
    /// SSE bytes not yet ending in a complete event.
    pub(super) pending: Vec<u8>,
    /// A non-streaming JSON response, kept (up to a limit) to read its `usage`.
    pub(super) body: Vec<u8>,
    pub(super) first_chunk: Option<Instant>,
    pub(super) last_chunk: Option<Instant>,
    /// The API key's rate/concurrency admission; dropped (slot freed) with the request.
    pub(super) admission: Option<Admission>,
}

impl Ctx {
    fn model_label(&self) -> &str {
        self.model.as_deref().unwrap_or("-")
    }
}

/// The request's `Authorization` header value.
pub(super) fn authorization(session: &Session) -> Option<&str> {
    session
        .req_header()
        .headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
}

/// Writes a complete JSON response.
pub(super) async fn write_json(
    session: &mut Session,
    status: u16,
    body: Vec<u8>,
    retry_after: Option<u64>,
    content_type: &str,
) -> Result<()> {
    write_response(session, status, body, retry_after, content_type, &[]).await
}

/// [`write_json`] with extra headers (the `x-ratelimit-*` family).
async fn write_response(
    session: &mut Session,
    status: u16,
    body: Vec<u8>,
    retry_after: Option<u64>,
    content_type: &str,
    extra: &[(&'static str, String)],
) -> Result<()> {
    let mut h = ResponseHeader::build(status, Some(4 + extra.len()))?;
    h.insert_header("Content-Type", content_type)?;
    h.insert_header("Content-Length", body.len().to_string())?;
    if let Some(s) = retry_after {
        h.insert_header("Retry-After", s.to_string())?;
    }
    for (name, value) in extra {
        h.insert_header(*name, value.as_str())?;
    }
    session.write_response_header(Box::new(h), false).await?;
    session
        .write_response_body(Some(Bytes::from(body)), true)
        .await
}

impl Gateway {
    /// Answers with a gateway error (OpenAI body, status, `Retry-After`) and counts it.
    pub(super) async fn reject(&self, session: &mut Session, e: &GatewayError) -> Result<()> {
        self.metrics
            .rejections
            .with_label_values(&[e.reason()])
            .inc();
        write_json(
            session,
            e.status(),
            e.body(),
            e.retry_after(),
            "application/json",
        )
        .await
    }

    /// Reads `usage` from a worker response (the SSE usage chunk or a JSON body) into
    /// the token / audio metrics.
    fn count_usage(&self, model: &str, v: &Value) {
        let Some(u) = v.get("usage") else { return };
        for (field, kind) in [
            ("prompt_tokens", "prompt"),
            ("completion_tokens", "completion"),
        ] {
            if let Some(n) = u.get(field).and_then(Value::as_u64) {
                self.metrics
                    .tokens
                    .with_label_values(&[model, kind])
                    .inc_by(n);
            }
        }
        if let Some(s) = u.get("seconds").and_then(Value::as_f64) {
            self.metrics
                .audio_seconds
                .with_label_values(&[model])
                .inc_by(s);
        }
    }
}

#[async_trait]
impl ProxyHttp for Gateway {
    type CTX = Ctx;

    fn new_ctx(&self) -> Ctx {
        Ctx {
            start: Instant::now(),
            route: None,
            model: None,
            pool: None,
            lease: None,
            error: None,
            attempts: 0,
            include_usage: false,
            stream: false,
            preset_body: None,
            early_sse: false,
            error_event: false,
            upstream_status: None,
            ratelimit_headers: Vec::new(),
            sse: false,
            pending: Vec::new(),
            body: Vec::new(),
            first_chunk: None,
            last_chunk: None,
            admission: None,
        }
    }

    fn allow_spawning_subrequest(&self, _session: &Session, _ctx: &Ctx) -> bool {
        true
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut Ctx) -> Result<bool> {
        if let Some(r) = subrequest::routed(session) {
            // Routed (and admitted) by the main request, which read the body.
            ctx.route = Some(r.route);
            ctx.model = Some(r.model.clone());
            ctx.pool = self.pools.get(&r.model);
            ctx.include_usage = r.include_usage;
            ctx.stream = r.stream;
            ctx.ratelimit_headers = r.ratelimit_headers.clone();
            return Ok(false);
        }
        let path = session.req_header().uri.path().to_string();
        let method = session.req_header().method.clone();
        if let Some(route) = Route::from_path(&path) {
            ctx.route = Some(route);
            if method != http::Method::POST {
                let e = GatewayError::RouteNotFound {
                    method: method.to_string(),
                    path,
                };
                self.reject(session, &e).await?;
                return Ok(true);
            }
            if self.draining.load(Ordering::Relaxed) {
                session.set_keepalive(None);
                self.reject(session, &GatewayError::ShuttingDown).await?;
                return Ok(true);
            }
            let auth = authorization(session);
            match self.keys.admit(auth) {
                Ok(a) => {
                    ctx.ratelimit_headers = a.headers.clone();
                    ctx.admission = Some(a);
                }
                Err(refusal) => {
                    session.set_keepalive(None);
                    let e = &refusal.error;
                    self.metrics
                        .rejections
                        .with_label_values(&[e.reason()])
                        .inc();
                    write_response(
                        session,
                        e.status(),
                        e.body(),
                        e.retry_after(),
                        "application/json",
                        &refusal.headers,
                    )
                    .await?;
                    return Ok(true);
                }
            }
            let routed = match self.route_request(session, route, ctx).await {
                Ok(()) => match ctx.preset_body.take() {
                    Some(body) => self.forward_preset(session, ctx, body).await.map(|_| true),
                    None => Ok(false),
                },
                Err(e) => Err(e),
            };
            return match routed {
                Ok(done) => Ok(done),
                Err(e) => {
                    // The body may be unread: do not reuse the connection.
                    session.set_keepalive(None);
                    self.reject(session, &e).await?;
                    Ok(true)
                }
            };
        }
        if path.starts_with("/v1/") {
            // Model listings need a key too when keys are configured (as OpenAI's do);
            // /health, /ready and /metrics stay open to probes and scrapers.
            let auth = authorization(session);
            if let Err(e) = self.keys.authenticate(auth) {
                self.reject(session, &e).await?;
                return Ok(true);
            }
        }
        if let Some(r) = self.local(session, &path).await {
            r?;
            return Ok(true);
        }
        let e = GatewayError::RouteNotFound {
            method: method.to_string(),
            path,
        };
        self.reject(session, &e).await?;
        Ok(true)
    }

    async fn upstream_peer(&self, session: &mut Session, ctx: &mut Ctx) -> Result<Box<HttpPeer>> {
        ctx.attempts += 1;
        // A retry after a failed connect: give the broken worker's slot back first.
        ctx.lease = None;
        let Some(pool) = ctx.pool.clone() else {
            return Err(Error::explain(
                ErrorType::InternalError,
                "no pool for request",
            ));
        };
        let acquired = if ctx.stream {
            self.acquire_with_heartbeats(session, ctx, &pool).await?
        } else {
            pool.acquire().await
        };
        match acquired {
            Ok(lease) => {
                let path = lease.socket().to_string_lossy().into_owned();
                ctx.lease = Some(lease);
                let mut peer = HttpPeer::new_uds(&path, false, String::new())?;
                peer.options.connection_timeout = Some(Duration::from_secs(5));
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
        _ctx: &mut Ctx,
    ) -> Result<()> {
        // The gateway answered `Expect: 100-continue` itself and already holds the body.
        upstream.remove_header("expect");
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
        ctx.sse = ctype.starts_with("text/event-stream");
        ctx.upstream_status = Some(upstream.status.as_u16());
        if ctx.early_sse && !ctx.sse {
            // The client has a 200 SSE header already: the worker's error is sent as an
            // event (`response_body_filter`).
            ctx.sse = true;
            ctx.error_event = true;
        }
        for (name, value) in &ctx.ratelimit_headers {
            upstream.insert_header(*name, value.as_str())?;
        }
        if ctx.sse && !ctx.include_usage {
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
        let now = Instant::now();
        let model = ctx.model.clone().unwrap_or_default();
        if ctx.error_event {
            if let Some(b) = body.take() {
                ctx.body.extend_from_slice(&b);
            }
            if end_of_stream {
                *body = Some(sse::error_event(&std::mem::take(&mut ctx.body)));
            }
            return Ok(None);
        }
        if body.as_ref().is_some_and(|b| !b.is_empty()) && ctx.sse {
            if ctx.first_chunk.is_none() {
                ctx.first_chunk = Some(now);
                self.metrics
                    .ttft_seconds
                    .with_label_values(&[&model])
                    .observe(now.duration_since(ctx.start).as_secs_f64());
            } else if let Some(last) = ctx.last_chunk {
                self.metrics
                    .inter_token_seconds
                    .with_label_values(&[&model])
                    .observe(now.duration_since(last).as_secs_f64());
            }
            ctx.last_chunk = Some(now);
        }
        if ctx.sse {
            let chunk = body.take().unwrap_or_default();
            ctx.pending.extend_from_slice(&chunk);
            let mut out = Vec::with_capacity(ctx.pending.len());
            let mut consumed = 0;
            while let Some(end) = find_event_end(&ctx.pending[consumed..]) {
                let event = &ctx.pending[consumed..consumed + end];
                consumed += end;
                if let Some(usage) = usage_event(event) {
                    self.count_usage(&model, &usage);
                    if !ctx.include_usage {
                        continue;
                    }
                }
                out.extend_from_slice(event);
            }
            ctx.pending.drain(..consumed);
            if end_of_stream {
                out.append(&mut ctx.pending);
            }
            *body = (!out.is_empty()).then(|| Bytes::from(out));
        } else if let Some(b) = body.as_ref() {
            if ctx.body.len() + b.len() <= MAX_USAGE_SCAN {
                ctx.body.extend_from_slice(b);
            }
            if end_of_stream {
                if let Ok(v) = serde_json::from_slice::<Value>(&ctx.body) {
                    self.count_usage(&model, &v);
                }
            }
        }
        Ok(None)
    }

    async fn fail_to_proxy(&self, session: &mut Session, e: &Error, ctx: &mut Ctx) -> FailToProxy {
        let gateway_error = match ctx.error.take() {
            Some(g) => Some(g),
            None if session.response_written().is_none() => {
                // The worker could not be reached or broke before it answered.
                if matches!(e.esource(), ErrorSource::Upstream) {
                    if let Some(lease) = &ctx.lease {
                        lease.mark_failed();
                    }
                    Some(GatewayError::Upstream(format!(
                        "the worker for model '{}' failed: {}",
                        ctx.model_label(),
                        e.etype().as_str()
                    )))
                } else if matches!(e.esource(), ErrorSource::Downstream) {
                    None // the client is gone or sent garbage
                } else {
                    Some(GatewayError::Upstream(format!(
                        "internal error: {}",
                        e.etype().as_str()
                    )))
                }
            }
            None => {
                // The worker broke after the response began (it crashed mid-stream): an
                // SSE client gets an error event and `[DONE]` instead of a cut stream.
                if matches!(e.esource(), ErrorSource::Upstream) {
                    if let Some(lease) = &ctx.lease {
                        lease.mark_failed();
                    }
                    if ctx.sse {
                        let g = GatewayError::Upstream(format!(
                            "the worker for model '{}' failed mid-stream: {}",
                            ctx.model_label(),
                            e.etype().as_str()
                        ));
                        self.end_stream_with(session, ctx, &g).await;
                    }
                }
                None
            }
        };
        let code = match gateway_error {
            Some(g) if ctx.early_sse => {
                // Heartbeats went out: the client has a 200 SSE header already.
                self.end_stream_with(session, ctx, &g).await;
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
        // failures; they are counted in `surge_rejections_total`.
        matches!(e.etype(), ErrorType::HTTPStatus(_))
    }

    async fn logging(&self, session: &mut Session, _e: Option<&Error>, ctx: &mut Ctx) {
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
            .observe(ctx.start.elapsed().as_secs_f64());
    }
}
