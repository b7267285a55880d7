//! The LLM worker's spans: one per request, a child of the gateway's upstream span (W3C
//! `traceparent`), with OpenTelemetry GenAI attributes; under it, for each sequence,
//! `queue` (arrival → admitted by the engine), `prefill` (admitted → first token) and
//! `decode` (first token → finished), recorded from the engine's instants when the
//! sequence ends. Nothing is created when traces are off.

use axum::http::HeaderMap;
use opentelemetry::KeyValue;
use tracing::field::Empty;
use tracing::Span;

use super::respond::Endpoint;
use super::scheduler::SeqUsage;
use super::validate::Validated;
use crate::server::trace;

/// The request's span, its parent taken from `headers`.
pub fn request_span(headers: &HeaderMap, endpoint: Endpoint, model: &str) -> Span {
    if !trace::enabled() {
        return Span::none();
    }
    let op = match endpoint {
        Endpoint::Chat => "chat",
        Endpoint::Completion => "text_completion",
    };
    let span = tracing::info_span!(
        "worker request",
        otel.name = %format!("{op} {model}"),
        otel.kind = "server",
        gen_ai.operation.name = op,
        gen_ai.request.model = model,
        gen_ai.request.max_tokens = Empty,
        gen_ai.request.temperature = Empty,
        gen_ai.usage.input_tokens = Empty,
        gen_ai.usage.output_tokens = Empty,
        gen_ai.response.finish_reasons = Empty,
        surge.sequences = Empty,
        enduser.id = Empty,
        error.type = Empty,
        trace_id = Empty,
    );
    trace::set_parent(&span, headers);
    span.record("trace_id", trace::trace_id(&span));
    span
}

/// What validation learnt: the request's parameters and prompt size.
pub fn validated(span: &Span, v: &Validated) {
    if let Some(job) = v.jobs.first() {
        span.record("gen_ai.request.max_tokens", job.max_new_tokens as u64);
        span.record(
            "gen_ai.request.temperature",
            f64::from(job.sampling.temperature),
        );
    }
    span.record("gen_ai.usage.input_tokens", v.prompt_tokens as u64);
    span.record("surge.sequences", v.jobs.len() as u64);
    // OpenAI's `user`: recorded, as OpenAI does, to tell end users apart in traces.
    if let Some(user) = &v.user {
        span.record("enduser.id", user.as_str());
    }
}

/// A sequence ended: its engine phases as child spans.
pub fn sequence(span: &Span, usage: &SeqUsage) {
    let Some(t) = usage.times else { return };
    let first = t.first_token.unwrap_or(t.finished);
    let batch = KeyValue::new("surge.batch_size_at_admission", t.batch_at_admission as i64);
    trace::child(span, "queue", t.arrived, t.admitted, vec![batch]);
    let tokens = KeyValue::new("gen_ai.usage.input_tokens", usage.prompt_tokens as i64);
    trace::child(span, "prefill", t.admitted, first, vec![tokens]);
    let out = KeyValue::new("gen_ai.usage.output_tokens", usage.completion_tokens as i64);
    trace::child(span, "decode", first, t.finished, vec![out]);
}

/// The request ended: output tokens and finish reasons.
pub fn finished(span: &Span, completion_tokens: u64, finish_reasons: &[&str]) {
    span.record("gen_ai.usage.output_tokens", completion_tokens);
    span.record(
        "gen_ai.response.finish_reasons",
        format!("{finish_reasons:?}"),
    );
}
