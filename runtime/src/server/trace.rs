//! Trace context across the gateway ⇄ worker hop, and spans with times recorded after
//! the fact.
//!
//! The gateway sends W3C `traceparent` to the worker (and accepts one from its client);
//! [`extract`] and [`inject`] read and write it on an `http::HeaderMap`, the header type
//! of both axum (worker) and pingora (gateway). Engine phases (queue, prefill, decode)
//! happen on the engine thread, interleaved with other requests' steps, so they are not
//! spans anyone enters: [`child`] records one afterwards, from the instants the engine
//! kept, under the request's span.
//!
//! All of it is a no-op unless the process installed an exporter ([`enabled`]): a
//! worker or gateway without `OTEL_EXPORTER_OTLP_ENDPOINT` creates no spans at all.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Instant, SystemTime};

use axum::http::HeaderMap;
use opentelemetry::propagation::{Extractor, Injector};
use opentelemetry::trace::{Span as _, TraceContextExt, Tracer};
use opentelemetry::{Context, KeyValue};
use tracing_opentelemetry::OpenTelemetrySpanExt;

static ENABLED: AtomicBool = AtomicBool::new(false);

/// Whether spans are exported (set once at start-up, with the exporter).
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

pub fn set_enabled(on: bool) {
    ENABLED.store(on, Ordering::Relaxed);
}

struct Headers<'a>(&'a HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }
    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

struct Pairs(Vec<(String, String)>);

impl Injector for Pairs {
    fn set(&mut self, key: &str, value: String) {
        self.0.push((key.to_string(), value));
    }
}

/// The trace context a request's headers carry (`traceparent`, `tracestate`).
pub fn extract(headers: &HeaderMap) -> Context {
    opentelemetry::global::get_text_map_propagator(|p| p.extract(&Headers(headers)))
}

/// The headers that carry `span`'s context to the next hop.
pub fn inject(span: &tracing::Span) -> Vec<(String, String)> {
    let cx = span.context();
    let mut pairs = Pairs(Vec::new());
    opentelemetry::global::get_text_map_propagator(|p| p.inject_context(&cx, &mut pairs));
    pairs.0
}

/// Makes `headers`' trace context the parent of `span`.
pub fn set_parent(span: &tracing::Span, headers: &HeaderMap) {
    let _ = span.set_parent(extract(headers));
}

/// The trace id of `span`, hex (for log lines); empty when it has none.
pub fn trace_id(span: &tracing::Span) -> String {
    let cx = span.context();
    let sc = cx.span().span_context().clone();
    if sc.is_valid() {
        sc.trace_id().to_string()
    } else {
        String::new()
    }
}

/// The wall-clock time of `t`.
pub fn wall(t: Instant) -> SystemTime {
    let now = Instant::now();
    SystemTime::now() - now.saturating_duration_since(t)
}

/// Records a finished span `name` from `start` to `end` under `parent` (not exported when
/// the parent is not sampled).
pub fn child(
    parent: &tracing::Span,
    name: &'static str,
    start: Instant,
    end: Instant,
    attributes: Vec<KeyValue>,
) {
    if !enabled() {
        return;
    }
    let cx = parent.context();
    if !cx.span().span_context().is_sampled() {
        return;
    }
    let tracer = opentelemetry::global::tracer("surge");
    let mut span = tracer
        .span_builder(name)
        .with_start_time(wall(start))
        .with_attributes(attributes)
        .start_with_context(&tracer, &cx);
    span.end_with_timestamp(wall(end.max(start)));
}
