//! The gateway's spans of one request (when traces are on, see `crate::telemetry`):
//!
//! ```text
//! gateway request  (server; parent: the client's traceparent, if any)
//! ├── auth          the API key, its rate and concurrency limits
//! ├── queue         waiting for a worker slot (admission queue)
//! │   └── cold start   the part of the wait spent on the serving worker's spawn → ready
//! └── upstream      (client) the worker's answer, to its last byte
//!     └── worker request … (the worker's spans, joined by the traceparent sent to it)
//! ```
//!
//! Attributes follow OpenTelemetry's GenAI conventions (`gen_ai.operation.name`,
//! `gen_ai.request.model`, `gen_ai.request.max_tokens`, `gen_ai.request.temperature`,
//! `gen_ai.response.finish_reasons`, `gen_ai.usage.input_tokens`,
//! `gen_ai.usage.output_tokens`, `server.address`, `error.type`) plus surge's own
//! (`surge.request_id`, `surge.tenant`, `surge.worker.id`, `surge.cold_start_seconds`).

use std::time::Instant;

use pingora::http::RequestHeader;
use surge_runtime::server::trace;
use tracing::field::Empty;
use tracing::Span;

use super::pool::Lease;
use super::routing::{Route, Target};
use crate::metering::UsageRecord;

/// A request's spans.
pub struct RequestTrace {
    root: Span,
    upstream: Option<Span>,
}

impl RequestTrace {
    /// The request's span (`None` when traces are off).
    pub fn start(req: &RequestHeader, route: Route, request_id: &str) -> Option<RequestTrace> {
        if !trace::enabled() {
            return None;
        }
        let op = operation(route);
        let root = tracing::info_span!(
            "gateway request",
            otel.name = op,
            otel.kind = "server",
            gen_ai.operation.name = op,
            gen_ai.request.model = Empty,
            gen_ai.request.max_tokens = Empty,
            gen_ai.request.temperature = Empty,
            gen_ai.response.finish_reasons = Empty,
            gen_ai.usage.input_tokens = Empty,
            gen_ai.usage.output_tokens = Empty,
            http.response.status_code = Empty,
            error.type = Empty,
            surge.request_id = request_id,
            surge.tenant = Empty,
            surge.cold_start_seconds = Empty,
            trace_id = Empty,
        );
        trace::set_parent(&root, &req.headers);
        root.record("trace_id", trace::trace_id(&root));
        Some(RequestTrace {
            root,
            upstream: None,
        })
    }

    /// A child span of the request; it ends when dropped.
    pub fn child(&self, name: &'static str) -> Span {
        tracing::info_span!(parent: &self.root, "phase", otel.name = name)
    }

    pub fn tenant(&self, tenant: &str) {
        self.root.record("surge.tenant", tenant);
    }

    /// The request was routed: its model and parameters.
    pub fn routed(&self, t: &Target) {
        let op = operation(t.route);
        // The span has started (its context went into the trace id): rename it
        // through OpenTelemetry, as `otel.name` is only read before the start.
        use opentelemetry::trace::TraceContextExt;
        use tracing_opentelemetry::OpenTelemetrySpanExt;
        let name = format!("{op} {}", t.model);
        self.root.context().span().update_name(name);
        self.root.record("gen_ai.request.model", t.model.as_str());
        if let Some(m) = t.worst_case.max_tokens {
            self.root.record("gen_ai.request.max_tokens", m);
        }
        if let Some(temp) = t.temperature {
            self.root.record("gen_ai.request.temperature", temp);
        }
    }

    /// The wait for a slot (`queue`, from `since`) ended with `lease` at `now`: the
    /// cold start it waited for, as a child of `queue`.
    pub fn waited(&self, queue: &Span, lease: &Lease, since: Instant, now: Instant) {
        let cold = lease.cold_start_waited(since, now);
        if !cold.is_zero() {
            self.root
                .record("surge.cold_start_seconds", cold.as_secs_f64());
            trace::child(queue, "cold start", now - cold, now, vec![]);
        }
    }

    /// The request goes to `lease`'s worker: the upstream span, and the headers that
    /// carry it there.
    pub fn upstream(&mut self, lease: &Lease) -> Vec<(String, String)> {
        let span = tracing::info_span!(
            parent: &self.root,
            "upstream",
            otel.name = "upstream",
            otel.kind = "client",
            server.address = %lease.endpoint(),
            surge.worker.id = lease.worker_id(),
        );
        let headers = trace::inject(&span);
        self.upstream = Some(span);
        headers
    }

    /// The request ended with `status`, billed as `record` (when metering is on).
    pub fn end(&mut self, status: u16, error: Option<&str>, record: Option<&UsageRecord>) {
        self.upstream = None;
        let root = &self.root;
        root.record("http.response.status_code", status);
        if let Some(e) = error {
            root.record("error.type", e);
        } else if status >= 400 || status == 0 {
            root.record("error.type", status.to_string().as_str());
        }
        if let Some(r) = record {
            root.record("gen_ai.usage.input_tokens", r.prompt_tokens);
            root.record("gen_ai.usage.output_tokens", r.completion_tokens);
            if let Some(f) = &r.finish_reason {
                root.record(
                    "gen_ai.response.finish_reasons",
                    format!("[{f:?}]").as_str(),
                );
            }
        }
        if status >= 500 {
            tracing::warn!(trace_id = %trace::trace_id(root), status, "request failed");
        }
    }
}

fn operation(route: Route) -> &'static str {
    match route {
        Route::Chat => "chat",
        Route::Completions => "text_completion",
        Route::Transcriptions => "transcription",
        Route::Translations => "translation",
    }
}
