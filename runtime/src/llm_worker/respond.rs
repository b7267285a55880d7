//! Builds OpenAI responses from the engine's per-sequence events: one JSON body, or an
//! SSE stream of chunks (role first, content deltas, a finish chunk per choice, the usage
//! chunk, `[DONE]`).
//!
//! The usage chunk is always sent on streams: it carries the metering facts the gateway
//! needs, and the gateway forwards it to clients only when they asked for
//! `stream_options.include_usage`.

use std::convert::Infallible;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::stream::{self, Stream, StreamExt};
use serde_json::{json, Value};
use tokio::sync::mpsc::UnboundedReceiver;
use tokio_stream::wrappers::UnboundedReceiverStream;

use crate::server::ApiError;

use super::scheduler::{FinishReason, SeqEvent, SeqUsage, TokenLogprob};
use super::validate::Validated;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    Chat,
    Completion,
}

impl Endpoint {
    pub fn name(self) -> &'static str {
        match self {
            Endpoint::Chat => "chat_completions",
            Endpoint::Completion => "completions",
        }
    }
}

/// What every response of one request shares.
pub struct Reply {
    pub endpoint: Endpoint,
    pub id: String,
    pub model: String,
    pub created: u64,
    pub validated: Validated,
}

impl Reply {
    pub fn new(endpoint: Endpoint, model: &str, validated: Validated) -> Self {
        let prefix = match endpoint {
            Endpoint::Chat => "chatcmpl",
            Endpoint::Completion => "cmpl",
        };
        Reply {
            endpoint,
            id: format!(
                "{prefix}-{:016x}{:016x}",
                rand::random::<u64>(),
                rand::random::<u64>()
            ),
            model: model.to_string(),
            created: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
            validated,
        }
    }
}

/// Adds per-sequence metering into the request's usage object plus surge's execution
/// report (queue time, fair-share execution time).
fn usage_json(prompt_tokens: usize, usages: &[SeqUsage]) -> (Value, Value) {
    let completion: usize = usages.iter().map(|u| u.completion_tokens).sum();
    let usage = json!({
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion,
        "total_tokens": prompt_tokens + completion,
    });
    let queue = usages.iter().map(|u| u.queue_seconds).fold(0.0, f64::max);
    let exec: f64 = usages.iter().map(|u| u.execution_seconds).sum();
    let ttft = usages
        .iter()
        .map(|u| u.time_to_first_token)
        .fold(f64::INFINITY, f64::min);
    let execution = json!({
        "queue_seconds": queue,
        "execution_seconds": exec,
        "time_to_first_token_seconds": if ttft.is_finite() { ttft } else { 0.0 },
        "sequences": usages.len(),
    });
    (usage, execution)
}

fn chat_logprobs(lps: &[TokenLogprob]) -> Value {
    let content: Vec<Value> = lps
        .iter()
        .map(|l| {
            json!({
                "token": l.token,
                "logprob": l.logprob,
                "bytes": l.token.as_bytes(),
                "top_logprobs": l.top.iter().map(|(t, p)| json!({"token": t, "logprob": p, "bytes": t.as_bytes()})).collect::<Vec<_>>(),
            })
        })
        .collect();
    json!({ "content": content })
}

fn completion_logprobs(lps: &[TokenLogprob], text_offset_start: usize) -> Value {
    let mut offset = text_offset_start;
    let mut offsets = Vec::new();
    for l in lps {
        offsets.push(offset);
        offset += l.token.len();
    }
    json!({
        "tokens": lps.iter().map(|l| l.token.clone()).collect::<Vec<_>>(),
        "token_logprobs": lps.iter().map(|l| l.logprob).collect::<Vec<_>>(),
        "top_logprobs": lps.iter().map(|l| l.top.iter().map(|(t, p)| (t.clone(), json!(p))).collect::<serde_json::Map<_, _>>()).collect::<Vec<_>>(),
        "text_offset": offsets,
    })
}

/// Collects every choice and answers with one JSON body.
pub async fn complete(
    reply: Reply,
    receivers: Vec<UnboundedReceiver<SeqEvent>>,
) -> Result<Value, ApiError> {
    let mut choices = Vec::new();
    let mut usages = Vec::new();
    let indexes: Vec<usize> = reply.validated.jobs.iter().map(|j| j.index).collect();
    let results = futures_util::future::join_all(receivers.into_iter().map(collect)).await;
    for (index, r) in indexes.into_iter().zip(results) {
        let (text, lps, reason, usage) = r?;
        let logprobs = match (reply.validated.logprobs, reply.endpoint) {
            (false, _) => Value::Null,
            (true, Endpoint::Chat) => chat_logprobs(&lps),
            (true, Endpoint::Completion) => completion_logprobs(&lps, 0),
        };
        choices.push(match reply.endpoint {
            Endpoint::Chat => json!({
                "index": index,
                "message": {"role": "assistant", "content": text, "refusal": null},
                "logprobs": logprobs,
                "finish_reason": reason.as_str(),
            }),
            Endpoint::Completion => json!({
                "index": index,
                "text": text,
                "logprobs": logprobs,
                "finish_reason": reason.as_str(),
            }),
        });
        usages.push(usage);
    }
    let (usage, execution) = usage_json(reply.validated.prompt_tokens, &usages);
    Ok(json!({
        "id": reply.id,
        "object": match reply.endpoint { Endpoint::Chat => "chat.completion", Endpoint::Completion => "text_completion" },
        "created": reply.created,
        "model": reply.model,
        "system_fingerprint": null,
        "choices": choices,
        "usage": usage,
        "surge_execution": execution,
    }))
}

async fn collect(
    mut rx: UnboundedReceiver<SeqEvent>,
) -> Result<(String, Vec<TokenLogprob>, FinishReason, SeqUsage), ApiError> {
    let mut text = String::new();
    let mut lps = Vec::new();
    while let Some(ev) = rx.recv().await {
        match ev {
            SeqEvent::Delta { text: t, logprobs } => {
                text.push_str(&t);
                lps.extend(logprobs);
            }
            SeqEvent::Done { reason, usage } => return Ok((text, lps, reason, usage)),
            SeqEvent::Error(e) => return Err(ApiError::Internal(e)),
        }
    }
    Err(ApiError::Internal(
        "the engine stopped before finishing the request".into(),
    ))
}

/// Streams chunks as the engine produces them.
pub fn stream(reply: Reply, receivers: Vec<UnboundedReceiver<SeqEvent>>) -> Response {
    let indexes: Vec<usize> = reply.validated.jobs.iter().map(|j| j.index).collect();
    let n = receivers.len();
    let merged = stream::select_all(
        receivers
            .into_iter()
            .zip(indexes.clone())
            .map(|(rx, idx)| UnboundedReceiverStream::new(rx).map(move |ev| (idx, ev))),
    );
    let chunk = ChunkBuilder { reply };
    let first: Vec<Value> = match chunk.reply.endpoint {
        Endpoint::Chat => indexes
            .iter()
            .map(|&i| chunk.chunk(json!([{"index": i, "delta": {"role": "assistant", "content": ""}, "logprobs": null, "finish_reason": null}])))
            .collect(),
        Endpoint::Completion => vec![],
    };
    let state = StreamState {
        chunk,
        done: 0,
        n,
        usages: Vec::new(),
        offsets: vec![0; n.max(indexes.iter().max().map(|m| m + 1).unwrap_or(0))],
        failed: false,
    };
    // A trailing `None` marks the end of every sequence's events, so a stream whose
    // engine vanished mid-way ends with an error event rather than a silent `[DONE]`.
    let body = stream::iter(first.into_iter().map(data)).chain(
        merged
            .map(Some)
            .chain(stream::once(async { None }))
            .scan(state, |st, item| {
                let out = match item {
                    Some((idx, ev)) => st.on_event(idx, ev),
                    None if st.done < st.n && !st.failed => st.on_event(
                        0,
                        SeqEvent::Error("the engine stopped before finishing the request".into()),
                    ),
                    None => vec![],
                };
                futures_util::future::ready(Some(out))
            })
            .flat_map(stream::iter),
    );
    let body = with_terminator(body);
    Sse::new(body.map(Ok::<Event, Infallible>))
        .keep_alive(KeepAlive::default())
        .into_response()
}

/// Ends every stream with `data: [DONE]`, as OpenAI does, even after an error event.
fn with_terminator(
    body: impl Stream<Item = Event> + Send + 'static,
) -> impl Stream<Item = Event> + Send + 'static {
    body.chain(stream::once(async { Event::default().data("[DONE]") }))
}

fn data(v: Value) -> Event {
    Event::default().data(v.to_string())
}

struct ChunkBuilder {
    reply: Reply,
}

impl ChunkBuilder {
    fn chunk(&self, choices: Value) -> Value {
        json!({
            "id": self.reply.id,
            "object": match self.reply.endpoint { Endpoint::Chat => "chat.completion.chunk", Endpoint::Completion => "text_completion" },
            "created": self.reply.created,
            "model": self.reply.model,
            "system_fingerprint": null,
            "choices": choices,
        })
    }
}

struct StreamState {
    chunk: ChunkBuilder,
    done: usize,
    n: usize,
    usages: Vec<SeqUsage>,
    offsets: Vec<usize>,
    failed: bool,
}

impl StreamState {
    fn on_event(&mut self, idx: usize, ev: SeqEvent) -> Vec<Event> {
        if self.failed {
            return vec![];
        }
        let endpoint = self.chunk.reply.endpoint;
        let want_lp = self.chunk.reply.validated.logprobs;
        match ev {
            SeqEvent::Delta { text, logprobs } => {
                if text.is_empty() && (logprobs.is_empty() || !want_lp) {
                    return vec![];
                }
                let choice = match endpoint {
                    Endpoint::Chat => json!({
                        "index": idx,
                        "delta": {"content": text},
                        "logprobs": if want_lp { chat_logprobs(&logprobs) } else { Value::Null },
                        "finish_reason": null,
                    }),
                    Endpoint::Completion => {
                        let lp = if want_lp {
                            completion_logprobs(&logprobs, self.offsets[idx])
                        } else {
                            Value::Null
                        };
                        self.offsets[idx] += text.len();
                        json!({"index": idx, "text": text, "logprobs": lp, "finish_reason": null})
                    }
                };
                vec![data(self.chunk.chunk(json!([choice])))]
            }
            SeqEvent::Done { reason, usage } => {
                self.done += 1;
                self.usages.push(usage);
                let choice = match endpoint {
                    Endpoint::Chat => {
                        json!({"index": idx, "delta": {}, "logprobs": null, "finish_reason": reason.as_str()})
                    }
                    Endpoint::Completion => {
                        json!({"index": idx, "text": "", "logprobs": null, "finish_reason": reason.as_str()})
                    }
                };
                let mut out = vec![data(self.chunk.chunk(json!([choice])))];
                if self.done == self.n {
                    let (usage, execution) =
                        usage_json(self.chunk.reply.validated.prompt_tokens, &self.usages);
                    let mut last = self.chunk.chunk(json!([]));
                    last["usage"] = usage;
                    last["surge_execution"] = execution;
                    out.push(data(last));
                }
                out
            }
            SeqEvent::Error(e) => {
                self.failed = true;
                // OpenAI sends stream errors as a plain data line holding the error body.
                vec![data(ApiError::Internal(e).body())]
            }
        }
    }
}
