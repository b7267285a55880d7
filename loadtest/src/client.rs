//! Sending one planned request with an async HTTP client and recording what a user saw:
//! status, time to first token and inter-token gaps from the SSE chunks, end-to-end
//! latency, tokens, bytes and a truncated error body. Latencies are measured from the
//! *intended* send time, so time the request spent waiting for the client (an overloaded
//! generator) or for the server's accept queue counts against the server, as a user's
//! would.

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use surge_protocol::openai::{
    ChatCompletion, ChatCompletionRequest, ChatMessageIn, CommonParams, StreamOptions,
    TextCompletion, Transcription,
};
use tokio::time::Instant;

use crate::scenario::{Class, ClassBody};
use crate::sse::parse_chunk;
use crate::transcribe::{audio_mime, multipart};
use crate::workload::{filler_prompt, Params, Planned};
use surge_protocol::sse::Decoder;

/// Error bodies are kept up to this many bytes.
const ERROR_BODY_MAX: usize = 512;

/// The endpoint and the shared connection pool.
pub struct Target {
    /// Base URL without a trailing `/` (the API paths are appended).
    pub base: String,
    pub client: reqwest::Client,
    /// Per-request limit from the actual send.
    pub timeout: Duration,
}

impl Target {
    pub fn new(base: &str, timeout: Duration) -> Result<Target, String> {
        let base = base.trim_end_matches('/').to_string();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(format!("target {base:?} is not an http:// or https:// URL"));
        }
        let client = reqwest::Client::builder()
            .tcp_nodelay(true)
            .pool_idle_timeout(Duration::from_secs(30))
            .connect_timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| e.to_string())?;
        Ok(Target {
            base,
            client,
            timeout,
        })
    }
}

/// Everything recorded about one request. Times are seconds from the start of the run;
/// latencies are seconds from `intended`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Record {
    pub id: u64,
    pub class: String,
    pub phase: String,
    pub intended: f64,
    /// When it actually went out (`None`: dropped before sending).
    pub sent: Option<f64>,
    pub done: f64,
    /// HTTP status; 0 when no response came.
    pub status: u16,
    /// `None` on success, else `http_<status>`, `connect`, `timeout`, `io`, `stream_error`,
    /// `stream_incomplete`, `bad_response`, `cancelled` (the run's max_duration) or
    /// `dropped` (too many in flight; never sent).
    pub error: Option<String>,
    pub error_body: Option<String>,
    pub ttft: Option<f64>,
    /// Gaps between consecutive content chunks.
    pub itl: Vec<f64>,
    /// Intended send → the complete answer (`[DONE]` for streams, the last byte
    /// otherwise) or the error.
    pub e2e: f64,
    pub tokens_out: u64,
    pub prompt_tokens: Option<u64>,
    pub audio_seconds: Option<f64>,
    pub bytes_sent: u64,
    pub bytes_received: u64,
    pub streamed: bool,
}

impl Record {
    pub fn ok(&self) -> bool {
        self.error.is_none()
    }

    pub fn was_sent(&self) -> bool {
        self.sent.is_some()
    }

    /// Mean inter-token latency (time per output token after the first).
    pub fn mean_itl(&self) -> Option<f64> {
        (!self.itl.is_empty()).then(|| self.itl.iter().sum::<f64>() / self.itl.len() as f64)
    }

    /// A record for an arrival that was not sent.
    pub fn unsent(p: &Planned, class: &str, phase: &str, now: f64, why: &str) -> Record {
        Record {
            id: p.id,
            class: class.to_string(),
            phase: phase.to_string(),
            intended: p.at,
            done: now,
            error: Some(why.to_string()),
            e2e: now - p.at,
            ..Record::default()
        }
    }
}

/// The body to send: (path, content type, bytes).
fn build(class: &Class, p: &Planned) -> (&'static str, String, Vec<u8>) {
    match (&class.body, p.params) {
        (
            ClassBody::Chat {
                stream,
                prompt,
                system,
                temperature,
                ignore_eos,
                ..
            },
            Params::Chat {
                prompt_tokens,
                max_tokens,
            },
        ) => {
            let user = match prompt {
                Some(text) => format!("[{}] {text}", p.id),
                None => filler_prompt(p.id, prompt_tokens),
            };
            let mut messages = Vec::new();
            if let Some(s) = system {
                messages.push(ChatMessageIn::text("system", s.as_str()));
            }
            messages.push(ChatMessageIn::text("user", user));
            let body = ChatCompletionRequest {
                model: Some(class.model.clone()),
                messages: Some(messages),
                common: CommonParams {
                    max_tokens: Some(max_tokens.into()),
                    temperature: Some(*temperature as f32),
                    stream: *stream,
                    // Streams end with usage, so tokens are the server's count.
                    stream_options: stream.then_some(StreamOptions {
                        include_usage: true,
                    }),
                    ignore_eos: *ignore_eos,
                    ..CommonParams::default()
                },
                ..ChatCompletionRequest::default()
            };
            (
                "/v1/chat/completions",
                "application/json".into(),
                serde_json::to_vec(&body).expect("a request serialises"),
            )
        }
        (
            ClassBody::Transcription {
                files,
                response_format,
            },
            Params::Transcription { file },
        ) => {
            let (name, bytes) = &files[file];
            let mime = audio_mime(std::path::Path::new(name));
            let (ct, body) = multipart(
                &[
                    ("model", class.model.as_str()),
                    ("response_format", response_format.as_str()),
                ],
                name,
                mime,
                bytes,
            );
            ("/v1/audio/transcriptions", ct, body)
        }
        // The planner draws parameters from the class, so kinds always match.
        _ => unreachable!("parameters of another class kind"),
    }
}

/// Sends `p` at its intended time relative to `start` (the caller sleeps until then) and
/// records the exchange. Gives up at the per-request timeout or at `hard_deadline`
/// (the run's max_duration), whichever is first.
pub async fn send(
    target: Arc<Target>,
    class: &Class,
    phase: &str,
    p: Planned,
    start: Instant,
    hard_deadline: Instant,
) -> Record {
    let (path, content_type, body) = build(class, &p);
    let since = |t: Instant| t.saturating_duration_since(start).as_secs_f64();
    let sent_at = Instant::now();
    let mut rec = Record {
        id: p.id,
        class: class.name.clone(),
        phase: phase.to_string(),
        intended: p.at,
        sent: Some(since(sent_at)),
        bytes_sent: body.len() as u64,
        ..Record::default()
    };
    let limit = (sent_at + target.timeout).min(hard_deadline);
    let cancelled = limit == hard_deadline && hard_deadline < sent_at + target.timeout;
    let intended = start + Duration::from_secs_f64(p.at);
    let result = tokio::time::timeout_at(
        limit,
        exchange(&target, class, path, content_type, body, intended, &mut rec),
    )
    .await;
    let mut now = Instant::now();
    match result {
        Ok(Ok(finished)) => now = finished,
        Ok(Err((kind, detail))) => {
            rec.error = Some(kind);
            rec.error_body = Some(truncate(&detail));
        }
        Err(_) => {
            rec.error = Some(if cancelled { "cancelled" } else { "timeout" }.into());
            rec.error_body = Some(format!(
                "no complete answer after {:.1} s",
                now.duration_since(sent_at).as_secs_f64()
            ));
        }
    }
    rec.done = since(now);
    rec.e2e = now.saturating_duration_since(intended).as_secs_f64();
    rec
}

type Failure = (String, String);

async fn exchange(
    target: &Target,
    class: &Class,
    path: &str,
    content_type: String,
    body: Vec<u8>,
    intended: Instant,
    rec: &mut Record,
) -> Result<Instant, Failure> {
    let mut req = target
        .client
        .post(format!("{}{path}", target.base))
        .header("content-type", content_type)
        .body(body);
    if let Some(k) = &class.api_key {
        req = req.bearer_auth(k);
    }
    let mut resp = req.send().await.map_err(transport)?;
    rec.status = resp.status().as_u16();
    let is_sse = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/event-stream"));
    if !resp.status().is_success() {
        let bytes = resp.bytes().await.unwrap_or_default();
        rec.bytes_received = bytes.len() as u64;
        return Err((
            format!("http_{}", rec.status),
            String::from_utf8_lossy(&bytes).into_owned(),
        ));
    }
    if !is_sse {
        let bytes = resp.bytes().await.map_err(transport)?;
        rec.bytes_received = bytes.len() as u64;
        return read_json(&bytes, rec).map(|()| Instant::now());
    }
    rec.streamed = true;
    let mut decoder = Decoder::default();
    let mut last: Option<Instant> = None;
    let mut counted = 0u64;
    let mut usage_tokens = None;
    let mut done = false;
    let mut stream_error = None;
    loop {
        let piece = resp.chunk().await.map_err(transport)?;
        let now = Instant::now();
        let events = match &piece {
            Some(bytes) => {
                rec.bytes_received += bytes.len() as u64;
                decoder.push(bytes)
            }
            None => decoder.finish().into_iter().collect(),
        };
        for data in events.into_iter().filter_map(|e| e.data) {
            let c = parse_chunk(&data).map_err(|e| ("bad_response".to_string(), e))?;
            if let Some(e) = c.error {
                stream_error = Some(e);
            }
            if let Some(u) = c.usage {
                rec.prompt_tokens = Some(u.prompt_tokens);
                usage_tokens = Some(u.completion_tokens);
            }
            if c.token {
                counted += 1;
                match last {
                    None => rec.ttft = Some(now.saturating_duration_since(intended).as_secs_f64()),
                    Some(prev) => rec.itl.push(now.duration_since(prev).as_secs_f64()),
                }
                last = Some(now);
            }
            done |= c.done;
        }
        if piece.is_none() || done {
            break;
        }
    }
    let finished = Instant::now();
    if done {
        // Read to the end of the body (the chunked terminator usually follows [DONE] in
        // its own read): dropping the response earlier would close the connection in the
        // server's face and rule out keep-alive. Bounded, for servers that linger.
        let drain = async { while let Ok(Some(_)) = resp.chunk().await {} };
        let _ = tokio::time::timeout(Duration::from_secs(1), drain).await;
    }
    rec.tokens_out = usage_tokens.unwrap_or(counted);
    if let Some(e) = stream_error {
        return Err(("stream_error".into(), e));
    }
    if !done {
        return Err((
            "stream_incomplete".into(),
            "the stream ended without [DONE]".into(),
        ));
    }
    Ok(finished)
}

/// A non-streamed answer, read as surge's own response types.
#[derive(Deserialize)]
#[serde(untagged)]
enum Answer {
    Chat(ChatCompletion),
    Text(TextCompletion),
    Transcription(Transcription),
}

/// A non-streamed answer: usage for completions, audio seconds for transcriptions.
fn read_json(bytes: &[u8], rec: &mut Record) -> Result<(), Failure> {
    let bad = |why: String| {
        (
            "bad_response".to_string(),
            format!("{why}: {}", String::from_utf8_lossy(bytes)),
        )
    };
    let v: Value = serde_json::from_slice(bytes).map_err(|e| bad(e.to_string()))?;
    let usage = match serde_json::from_value::<Answer>(v) {
        Ok(Answer::Chat(c)) => c.usage,
        Ok(Answer::Text(c)) => c.usage,
        Ok(Answer::Transcription(t)) => {
            rec.audio_seconds = t.usage.and_then(|u| u.seconds()).map(|s| s as f64);
            return Ok(());
        }
        Err(_) => return Err(bad("not a completion or transcription".into())),
    };
    rec.prompt_tokens = usage.map(|u| u.prompt_tokens);
    rec.tokens_out = usage.map_or(0, |u| u.completion_tokens);
    Ok(())
}

fn transport(e: reqwest::Error) -> Failure {
    let kind = if e.is_connect() {
        "connect"
    } else if e.is_timeout() {
        "timeout"
    } else {
        "io"
    };
    // The source chain names the real cause ("connection refused"); Display alone does not.
    let mut msg = e.to_string();
    let mut src = std::error::Error::source(&e);
    while let Some(s) = src {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        src = s.source();
    }
    (kind.to_string(), msg)
}

fn truncate(s: &str) -> String {
    if s.len() <= ERROR_BODY_MAX {
        return s.to_string();
    }
    let mut end = ERROR_BODY_MAX;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dist::LengthDist;
    use crate::scenario::Slo;

    #[test]
    fn chat_body_asks_for_usage_when_streaming() {
        let class = Class {
            name: "c".into(),
            weight: 1.0,
            model: "smollm2".into(),
            api_key: None,
            slo: Slo::default(),
            body: ClassBody::Chat {
                stream: true,
                prompt_tokens: LengthDist::fixed(20),
                prompt: None,
                system: Some("be brief".into()),
                max_tokens: LengthDist::fixed(5),
                temperature: 0.0,
                ignore_eos: true,
            },
        };
        let p = Planned {
            id: 4,
            at: 0.0,
            phase: 0,
            class: 0,
            params: Params::Chat {
                prompt_tokens: 20,
                max_tokens: 5,
            },
        };
        let (path, ct, body) = build(&class, &p);
        assert_eq!(
            (path, ct.as_str()),
            ("/v1/chat/completions", "application/json")
        );
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["max_tokens"], 5);
        assert_eq!(v["stream_options"]["include_usage"], true);
        assert_eq!(v["ignore_eos"], true);
        assert_eq!(v["messages"][0]["role"], "system");
        assert!(v["messages"][1]["content"]
            .as_str()
            .unwrap()
            .starts_with("Request 4."));
        assert_eq!(truncate(&"é".repeat(400)).chars().count(), 257);
    }
}
