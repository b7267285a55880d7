//! What the gateway does with a worker's response body on its way to the client.
//!
//! - An SSE stream passes through event by event. The first event that carries a token
//!   (content text, or a tool call) gives time to first token; each later one an
//!   inter-token sample — the empty role chunk a worker sends before prefill does not
//!   count, as in vLLM's and TGI's metrics. The usage chunk every worker ends a stream
//!   with is counted and forwarded only when the client asked for it.
//! - A JSON body is kept (up to a limit) to count its `usage`.
//! - A worker's error after the gateway already sent the client an SSE header (it sent
//!   heartbeats while waiting) becomes an error event and `[DONE]`.

use std::time::Instant;

use bytes::Bytes;
use serde::Deserialize;
use surge_protocol::error::ErrorBody;
use surge_protocol::openai::{StreamChunk, SurgeExecution, TranscriptionUsage, Usage};
use surge_protocol::sse;

use super::bill::Bill;
use super::metrics::GatewayMetrics;

/// Non-streaming responses up to this size are parsed for their `usage`.
const MAX_USAGE_SCAN: usize = 1 << 20;

/// How the worker's body is being handled.
pub enum ResponseBody {
    /// No response header from the worker yet.
    Pending,
    /// SSE, passed through event by event.
    Stream {
        decoder: sse::Decoder,
        last_token: Option<Instant>,
    },
    /// An error body to send as one SSE error event (the client has a 200 already).
    ErrorEvent(Vec<u8>),
    /// A JSON body, kept to read its `usage`.
    Json(Vec<u8>),
}

/// Who the body is counted for.
pub struct Counting<'a> {
    pub metrics: &'a GatewayMetrics,
    pub model: &'a str,
    /// When the request arrived (time to first token counts from here).
    pub arrived: Instant,
    pub include_usage: bool,
}

/// The `usage` of a non-streamed response: tokens (chat, completions) or audio
/// seconds (transcriptions).
#[derive(Deserialize)]
#[serde(untagged)]
enum AnyUsage {
    Tokens(Usage),
    Audio(TranscriptionUsage),
}

#[derive(Deserialize)]
struct WithUsage {
    usage: Option<AnyUsage>,
    /// An LLM's [`SurgeExecution`], or a transcription's (another shape, whose figures
    /// come in headers): read loosely, so that neither makes `usage` unreadable.
    #[serde(default)]
    surge_execution: Option<serde_json::Value>,
    #[serde(default)]
    choices: Vec<FinishPeek>,
}

#[derive(Deserialize)]
struct FinishPeek {
    #[serde(default)]
    finish_reason: Option<String>,
}

impl ResponseBody {
    /// Chooses the handling from the worker's response header. `early_sse`: the client
    /// already has an SSE header from the gateway.
    pub fn for_response(content_type: &str, early_sse: bool) -> ResponseBody {
        if content_type.starts_with("text/event-stream") {
            ResponseBody::Stream {
                decoder: sse::Decoder::default(),
                last_token: None,
            }
        } else if early_sse {
            ResponseBody::ErrorEvent(Vec::new())
        } else {
            ResponseBody::Json(Vec::new())
        }
    }

    /// True when the client receives SSE from here on.
    pub fn is_sse(&self) -> bool {
        matches!(
            self,
            ResponseBody::Stream { .. } | ResponseBody::ErrorEvent(_)
        )
    }

    /// Forgets a partial event (the stream is about to end with an error event).
    pub fn drop_partial(&mut self) {
        if let ResponseBody::Stream { decoder, .. } = self {
            decoder.take_pending();
        }
    }

    /// Filters one piece of the body; returns what to send to the client. `bill` takes
    /// the metering of what is sent.
    pub fn filter(
        &mut self,
        chunk: Option<Bytes>,
        end: bool,
        c: &Counting,
        mut bill: Option<&mut Bill>,
    ) -> Option<Bytes> {
        match self {
            ResponseBody::Pending => chunk,
            ResponseBody::ErrorEvent(body) => {
                body.extend_from_slice(chunk.as_deref().unwrap_or_default());
                end.then(|| sse::error_event(&ErrorBody::from_bytes_lossy(body)))
            }
            ResponseBody::Json(body) => {
                if let Some(b) = &chunk {
                    if body.len() + b.len() <= MAX_USAGE_SCAN {
                        body.extend_from_slice(b);
                    }
                }
                if end {
                    if let Ok(w) = serde_json::from_slice::<WithUsage>(body) {
                        if let Some(u) = &w.usage {
                            count_usage(c, u);
                        }
                        if let (Some(AnyUsage::Tokens(u)), Some(b)) = (&w.usage, bill) {
                            let e = w
                                .surge_execution
                                .and_then(|e| serde_json::from_value::<SurgeExecution>(e).ok());
                            b.usage(u, e.as_ref());
                            b.finish_reason = w.choices.into_iter().find_map(|c| c.finish_reason);
                        }
                    }
                }
                chunk
            }
            ResponseBody::Stream {
                decoder,
                last_token,
            } => {
                let now = Instant::now();
                let mut out = Vec::new();
                for event in decoder.push(chunk.as_deref().unwrap_or_default()) {
                    let chunk = event
                        .data
                        .as_deref()
                        .and_then(|d| serde_json::from_str::<StreamChunk>(d).ok());
                    if let Some(chunk) = &chunk {
                        if chunk.has_token() {
                            observe_token(c, last_token, now);
                        }
                        if let Some(b) = bill.as_deref_mut() {
                            meter(b, chunk);
                        }
                        if let Some(u) = chunk.usage().filter(|_| chunk.is_usage()) {
                            count_usage(c, &AnyUsage::Tokens(*u));
                            if !c.include_usage {
                                continue;
                            }
                        }
                    }
                    out.extend_from_slice(&event.raw);
                }
                if end {
                    out.extend(decoder.take_pending());
                }
                (!out.is_empty()).then(|| Bytes::from(out))
            }
        }
    }
}

/// Bills a chunk that is on its way to the client: its running meter, the first
/// finish reason, and the final usage.
fn meter(bill: &mut Bill, chunk: &StreamChunk) {
    if let Some(m) = chunk.surge_meter() {
        bill.meter(m);
    }
    if bill.finish_reason.is_none() {
        bill.finish_reason = chunk.finish_reason().map(|r| r.as_str().to_string());
    }
    if let Some(u) = chunk.usage().filter(|_| chunk.is_usage()) {
        bill.usage(u, chunk.surge_execution());
    }
}

fn observe_token(c: &Counting, last: &mut Option<Instant>, now: Instant) {
    match *last {
        None => c
            .metrics
            .ttft_seconds
            .with_label_values(&[c.model])
            .observe(now.duration_since(c.arrived).as_secs_f64()),
        Some(prev) => c
            .metrics
            .inter_token_seconds
            .with_label_values(&[c.model])
            .observe(now.duration_since(prev).as_secs_f64()),
    }
    *last = Some(now);
}

/// Adds a response's `usage` to the token / audio counters.
fn count_usage(c: &Counting, usage: &AnyUsage) {
    let m = c.metrics;
    match usage {
        AnyUsage::Tokens(u) => {
            for (n, kind) in [
                (u.prompt_tokens, "prompt"),
                (u.completion_tokens, "completion"),
            ] {
                m.tokens.with_label_values(&[c.model, kind]).inc_by(n);
            }
        }
        AnyUsage::Audio(u) => {
            if let Some(s) = u.seconds() {
                m.audio_seconds
                    .with_label_values(&[c.model])
                    .inc_by(s as f64);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counting(m: &GatewayMetrics, include_usage: bool) -> Counting<'_> {
        Counting {
            metrics: m,
            model: "m",
            arrived: Instant::now(),
            include_usage,
        }
    }

    fn ttft_count(m: &GatewayMetrics) -> u64 {
        m.ttft_seconds.with_label_values(&["m"]).get_sample_count()
    }

    /// The role chunk a worker sends before prefill is not the first token.
    #[test]
    fn time_to_first_token_waits_for_content() {
        let m = GatewayMetrics::new().unwrap();
        let c = counting(&m, false);
        let mut body = ResponseBody::for_response("text/event-stream", false);
        let role = br#"data: {"choices":[{"index":0,"delta":{"role":"assistant","content":""}}]}

"#;
        assert!(body
            .filter(Some(Bytes::from_static(role)), false, &c, None)
            .is_some());
        assert_eq!(ttft_count(&m), 0, "the role chunk is not a token");
        let tok = br#"data: {"choices":[{"index":0,"delta":{"content":"Hi"}}]}

"#;
        body.filter(Some(Bytes::from_static(tok)), false, &c, None);
        assert_eq!(ttft_count(&m), 1);
        let inter = || {
            m.inter_token_seconds
                .with_label_values(&["m"])
                .get_sample_count()
        };
        assert_eq!(inter(), 0);
        body.filter(Some(Bytes::from_static(tok)), false, &c, None);
        assert_eq!((ttft_count(&m), inter()), (1, 1));
        // Text completions stream `text`.
        let mut body = ResponseBody::for_response("text/event-stream", false);
        body.filter(
            Some(Bytes::from_static(
                b"data: {\"choices\":[{\"text\":\" Paris\"}]}\n\n",
            )),
            false,
            &c,
            None,
        );
        assert_eq!(ttft_count(&m), 2);
    }

    #[test]
    fn usage_chunk_is_counted_and_forwarded_only_on_request() {
        let usage = b"data: {\"id\":\"x\",\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":5}}\n\ndata: [DONE]\n\n";
        for include in [false, true] {
            let m = GatewayMetrics::new().unwrap();
            let c = counting(&m, include);
            let mut body = ResponseBody::for_response("text/event-stream", false);
            // Split mid-event: events are whole when forwarded.
            let a = body.filter(Some(Bytes::from_static(&usage[..20])), false, &c, None);
            assert!(a.is_none());
            let out = body
                .filter(Some(Bytes::from_static(&usage[20..])), true, &c, None)
                .unwrap();
            assert_eq!(out.starts_with(b"data: {\"id\""), include);
            assert!(out.ends_with(b"data: [DONE]\n\n"));
            let tokens = m.tokens.with_label_values(&["m", "completion"]).get();
            assert_eq!(tokens, 5);
        }
    }

    /// A transcription's `surge_execution` is not an LLM's: its usage is still counted.
    #[test]
    fn a_transcription_usage_is_counted() {
        let m = GatewayMetrics::new().unwrap();
        let c = counting(&m, false);
        let mut body = ResponseBody::for_response("application/json", false);
        let json = br#"{"text":"hi","usage":{"type":"duration","seconds":3},
            "surge_execution":{"queue_seconds":0.1,"execution_seconds":0.5,
                               "audio_seconds":2.5,"decode_seconds":0.01}}"#;
        body.filter(Some(Bytes::from_static(json)), true, &c, None);
        assert_eq!(m.audio_seconds.with_label_values(&["m"]).get(), 3.0);
    }

    #[test]
    fn an_error_after_early_sse_becomes_an_event() {
        let m = GatewayMetrics::new().unwrap();
        let c = counting(&m, false);
        let mut body = ResponseBody::for_response("application/json", true);
        assert!(body.is_sse());
        let e = br#"{"error":{"message":"bad","type":"invalid_request_error","param":null,"code":null}}"#;
        assert!(body
            .filter(Some(Bytes::from_static(e)), false, &c, None)
            .is_none());
        let out = body.filter(None, true, &c, None).unwrap();
        assert_eq!(
            sse::data_payloads(&out),
            [std::str::from_utf8(e).unwrap(), "[DONE]"]
        );
    }
}
