//! Builds OpenAI responses from the engine's per-sequence events: one JSON body, or an
//! SSE stream of chunks (role first, content deltas, a finish chunk per choice, the usage
//! chunk, `[DONE]`), as the types of [`surge_protocol::openai`].
//!
//! The usage chunk is always sent on streams: it carries the metering facts the gateway
//! needs, and the gateway forwards it to clients only when they asked for
//! `stream_options.include_usage`.

use std::convert::Infallible;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures_util::stream::{self, Stream, StreamExt};
use serde::Serialize;
use surge_protocol::openai::{
    self, AssistantMessage, ChatChoice, ChatChunkChoice, ChatCompletion, ChatCompletionChunk,
    ChatDelta, ChatLogprobs, ChatTokenLogprob, Completion, CompletionLogprobs, FunctionCallDelta,
    PromptTokensDetails, SurgeExecution, SurgeMeter, TextChoice, TextCompletion,
    TextCompletionChunk, ToolCallDelta, TopLogprob, Usage,
};
use tokio::sync::mpsc::UnboundedReceiver;
use tokio_stream::wrappers::UnboundedReceiverStream;

use crate::server::ApiError;

use super::scheduler::{FinishReason, Progress, SeqEvent, SeqUsage, TokenLogprob};
use super::tool_calls::{self, CallParser, Piece};
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
    /// The request's trace span (`Span::none()` when traces are off); it ends with the
    /// reply.
    pub span: tracing::Span,
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
            span: tracing::Span::none(),
        }
    }
}

/// Adds per-sequence metering into the request's usage object plus surge's execution
/// report (queue time, fair-share execution time).
fn metering(prompt_tokens: usize, usages: &[SeqUsage]) -> (Usage, SurgeExecution) {
    let completion: usize = usages.iter().map(|u| u.completion_tokens).sum();
    let queue = usages.iter().map(|u| u.queue_seconds).fold(0.0, f64::max);
    let exec: f64 = usages.iter().map(|u| u.execution_seconds).sum();
    let ttft = usages
        .iter()
        .map(|u| u.time_to_first_token)
        .fold(f64::INFINITY, f64::min);
    let execution = SurgeExecution {
        queue_seconds: queue,
        execution_seconds: exec,
        time_to_first_token_seconds: if ttft.is_finite() { ttft } else { 0.0 },
        sequences: usages.len() as u64,
    };
    let mut usage = Usage::new(prompt_tokens as u64, completion as u64);
    usage.prompt_tokens_details = Some(PromptTokensDetails {
        cached_tokens: usages.iter().map(|u| u.cached_tokens as u64).sum(),
    });
    (usage, execution)
}

fn finish_reason(r: FinishReason) -> openai::FinishReason {
    match r {
        FinishReason::Stop => openai::FinishReason::Stop,
        FinishReason::Length => openai::FinishReason::Length,
    }
}

// Log-probabilities are f32 in the engine and f64 on the wire, widened as `json!` did, so
// the digits written are the same as before the typed responses.

fn chat_logprobs(lps: &[TokenLogprob]) -> ChatLogprobs {
    ChatLogprobs {
        content: lps
            .iter()
            .map(|l| {
                let top = l
                    .top
                    .iter()
                    .map(|(t, p)| TopLogprob::new(t, *p as f64))
                    .collect();
                ChatTokenLogprob::new(&l.token, l.logprob as f64, top)
            })
            .collect(),
    }
}

fn completion_logprobs(lps: &[TokenLogprob], text_offset_start: usize) -> CompletionLogprobs {
    let mut offset = text_offset_start;
    let mut offsets = Vec::new();
    for l in lps {
        offsets.push(offset as u64);
        offset += l.token.len();
    }
    CompletionLogprobs {
        tokens: lps.iter().map(|l| l.token.clone()).collect(),
        token_logprobs: lps.iter().map(|l| Some(l.logprob as f64)).collect(),
        top_logprobs: lps
            .iter()
            .map(|l| {
                l.top
                    .iter()
                    .map(|(t, p)| (t.clone(), Some(*p as f64)))
                    .collect()
            })
            .collect(),
        text_offset: offsets,
    }
}

/// Collects every choice and answers with one JSON body.
pub async fn complete(
    reply: Reply,
    receivers: Vec<UnboundedReceiver<SeqEvent>>,
) -> Result<Response, ApiError> {
    let mut chat_choices = Vec::new();
    let mut text_choices = Vec::new();
    let mut usages = Vec::new();
    let mut reasons = Vec::new();
    let indexes: Vec<usize> = reply.validated.jobs.iter().map(|j| j.index).collect();
    let results = futures_util::future::join_all(receivers.into_iter().map(collect)).await;
    let want_lp = reply.validated.logprobs;
    for (index, r) in indexes.into_iter().zip(results) {
        let (text, lps, reason, usage) = r?;
        let index = index as u32;
        let mut reason = finish_reason(reason);
        // With tools, the text is read for calls; a call cut short by the token limit
        // still says `length`.
        let split = (reply.validated.tool_names.as_ref()).map(|n| tool_calls::split(n, &text));
        if split.as_ref().is_some_and(|(_, calls)| !calls.is_empty())
            && reason == openai::FinishReason::Stop
        {
            reason = openai::FinishReason::ToolCalls;
        }
        reasons.push(reason.as_str());
        let finish_reason = Some(reason);
        match reply.endpoint {
            Endpoint::Chat => {
                let mut message = AssistantMessage::text(text);
                if let Some((content, calls)) = split {
                    message.content = content;
                    message.tool_calls = (!calls.is_empty()).then_some(calls);
                }
                chat_choices.push(ChatChoice {
                    index,
                    message,
                    logprobs: want_lp.then(|| chat_logprobs(&lps)),
                    finish_reason,
                })
            }
            Endpoint::Completion => text_choices.push(TextChoice {
                index,
                text,
                logprobs: want_lp.then(|| completion_logprobs(&lps, 0)),
                finish_reason,
            }),
        }
        super::trace::sequence(&reply.span, &usage);
        usages.push(usage);
    }
    let (usage, execution) = metering(reply.validated.prompt_tokens, &usages);
    super::trace::finished(&reply.span, usage.completion_tokens, &reasons);
    fn answer<C: Serialize>(mut body: Completion<C>, u: Usage, e: SurgeExecution) -> Response {
        body.usage = Some(u);
        body.surge_execution = Some(e);
        Json(body).into_response()
    }
    let (id, created, model) = (reply.id, reply.created, reply.model);
    Ok(match reply.endpoint {
        Endpoint::Chat => answer(
            ChatCompletion::new(ChatCompletion::OBJECT, id, created, model, chat_choices),
            usage,
            execution,
        ),
        Endpoint::Completion => answer(
            TextCompletion::new(TextCompletion::OBJECT, id, created, model, text_choices),
            usage,
            execution,
        ),
    })
}

async fn collect(
    mut rx: UnboundedReceiver<SeqEvent>,
) -> Result<(String, Vec<TokenLogprob>, FinishReason, SeqUsage), ApiError> {
    let mut text = String::new();
    let mut lps = Vec::new();
    while let Some(ev) = rx.recv().await {
        match ev {
            SeqEvent::Delta {
                text: t, logprobs, ..
            } => {
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
    let names = reply.validated.tool_names.clone();
    let chunk = ChunkBuilder { reply };
    let slots = n.max(indexes.iter().max().map(|m| m + 1).unwrap_or(0));
    let state = StreamState {
        chunk,
        done: 0,
        n,
        usages: Vec::new(),
        offsets: vec![0; slots],
        reasons: Vec::new(),
        progress: vec![Progress::default(); slots],
        calls: (0..slots)
            .map(|_| names.clone().map(CallParser::streaming))
            .collect(),
        failed: false,
    };
    // Chat streams open each choice with the assistant's role and empty content; the
    // first opening chunk carries the prompt's size, so a client that hangs up before
    // the first token is still billed its prompt.
    let first: Vec<Event> = match state.chunk.reply.endpoint {
        Endpoint::Chat => indexes
            .iter()
            .enumerate()
            .map(|(k, &i)| {
                let mut c = state
                    .chunk
                    .chat_chunk(vec![ChatChunkChoice::opening(i as u32)]);
                c.surge_meter = (k == 0).then(|| state.meter());
                data(&c)
            })
            .collect(),
        Endpoint::Completion => vec![],
    };
    // A trailing `None` marks the end of every sequence's events, so a stream whose
    // engine vanished mid-way ends with an error event rather than a silent `[DONE]`.
    let body = stream::iter(first).chain(
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

/// One SSE event holding `v` as JSON.
fn data(v: &impl Serialize) -> Event {
    // These types always serialise: string keys, and non-finite floats become null.
    Event::default().data(serde_json::to_string(v).expect("a response type serialises"))
}

struct ChunkBuilder {
    reply: Reply,
}

impl ChunkBuilder {
    fn chat(&self, choices: Vec<ChatChunkChoice>) -> Event {
        data(&self.chat_chunk(choices))
    }

    /// An envelope of type `object` for this reply.
    fn envelope<C>(&self, object: &str, choices: Vec<C>) -> Completion<C> {
        let r = &self.reply;
        Completion::new(object, r.id.clone(), r.created, r.model.clone(), choices)
    }

    fn chat_chunk(&self, choices: Vec<ChatChunkChoice>) -> ChatCompletionChunk {
        self.envelope(ChatCompletionChunk::OBJECT, choices)
    }

    fn text_chunk(&self, choices: Vec<TextChoice>) -> TextCompletionChunk {
        self.envelope(TextCompletionChunk::OBJECT, choices)
    }

    fn text(&self, choices: Vec<TextChoice>) -> Event {
        data(&self.text_chunk(choices))
    }

    /// The chunk that ends a stream: no choices, usage and execution set.
    fn usage(&self, usage: Usage, execution: SurgeExecution) -> Event {
        match self.reply.endpoint {
            Endpoint::Chat => {
                let mut c = self.chat_chunk(vec![]);
                c.usage = Some(usage);
                c.surge_execution = Some(execution);
                data(&c)
            }
            Endpoint::Completion => {
                let mut c = self.text_chunk(vec![]);
                c.usage = Some(usage);
                c.surge_execution = Some(execution);
                data(&c)
            }
        }
    }
}

struct StreamState {
    chunk: ChunkBuilder,
    done: usize,
    n: usize,
    usages: Vec<SeqUsage>,
    offsets: Vec<usize>,
    /// Finish reasons so far (for the trace).
    reasons: Vec<&'static str>,
    /// Each sequence's use so far, by choice index.
    progress: Vec<Progress>,
    /// Each choice's tool-call reader, when the request has tools.
    calls: Vec<Option<CallParser>>,
    failed: bool,
}

impl StreamState {
    /// The request's use so far, summed over its sequences.
    fn meter(&self) -> SurgeMeter {
        SurgeMeter {
            prompt_tokens: self.chunk.reply.validated.prompt_tokens as u64,
            completion_tokens: self
                .progress
                .iter()
                .map(|p| p.completion_tokens as u64)
                .sum(),
            execution_seconds: self.progress.iter().map(|p| p.execution_seconds).sum(),
        }
    }

    /// Chat chunks for what a choice's tool-call reader found: content deltas, and for
    /// each call one chunk with its id, type and name (arguments empty), then chunks
    /// with its arguments, as OpenAI streams them. `calls`: the reader's count after
    /// `pieces` (a call counts from its start). Log-probabilities ride on the first
    /// chunk (an empty one when there is none).
    fn pieces(
        &self,
        index: u32,
        pieces: Vec<Piece>,
        calls: usize,
        mut logprobs: Option<ChatLogprobs>,
    ) -> Vec<Event> {
        let mut deltas = Vec::new();
        let starts = |p: &&Piece| matches!(p, Piece::Call(_) | Piece::CallStart { .. });
        // The index the next call gets.
        let mut k = calls - pieces.iter().filter(starts).count();
        let tool_delta = |d: ToolCallDelta| ChatDelta {
            tool_calls: Some(vec![d]),
            ..ChatDelta::default()
        };
        // A call's first delta (id, type, name, empty arguments) and its arguments.
        let opening = |k: usize, id: String, name: String| {
            tool_delta(ToolCallDelta {
                index: k as u32,
                id: Some(id),
                kind: Some("function".into()),
                function: Some(FunctionCallDelta {
                    name: Some(name),
                    arguments: Some(String::new()),
                }),
            })
        };
        let arguments = |k: usize, arguments: String| {
            tool_delta(ToolCallDelta {
                index: k as u32,
                function: Some(FunctionCallDelta {
                    name: None,
                    arguments: Some(arguments),
                }),
                ..ToolCallDelta::default()
            })
        };
        for piece in pieces {
            match piece {
                Piece::Content(text) => deltas.push(ChatDelta {
                    content: Some(text),
                    ..ChatDelta::default()
                }),
                Piece::CallStart { id, name } => {
                    deltas.push(opening(k, id, name));
                    k += 1;
                }
                Piece::Args(a) => deltas.push(arguments(k.saturating_sub(1), a)),
                Piece::Call(call) => {
                    deltas.push(opening(k, call.id, call.function.name));
                    deltas.push(arguments(k, call.function.arguments));
                    k += 1;
                }
            }
        }
        if deltas.is_empty() && logprobs.is_some() {
            deltas.push(ChatDelta {
                content: Some(String::new()),
                ..ChatDelta::default()
            });
        }
        deltas
            .into_iter()
            .map(|delta| {
                let mut c = self.chunk.chat_chunk(vec![ChatChunkChoice {
                    index,
                    delta,
                    logprobs: logprobs.take(),
                    finish_reason: None,
                }]);
                c.surge_meter = Some(self.meter());
                data(&c)
            })
            .collect()
    }

    fn on_event(&mut self, idx: usize, ev: SeqEvent) -> Vec<Event> {
        if self.failed {
            return vec![];
        }
        let endpoint = self.chunk.reply.endpoint;
        let want_lp = self.chunk.reply.validated.logprobs;
        let index = idx as u32;
        match ev {
            SeqEvent::Delta {
                text,
                logprobs,
                so_far,
            } => {
                self.progress[idx] = so_far;
                if text.is_empty() && (logprobs.is_empty() || !want_lp) {
                    return vec![];
                }
                let meter = Some(self.meter());
                if let Some(parser) = self.calls[idx].as_mut() {
                    let pieces = parser.push(&text);
                    let calls = parser.calls();
                    let lps = want_lp.then(|| chat_logprobs(&logprobs));
                    return self.pieces(index, pieces, calls, lps);
                }
                let event = match endpoint {
                    Endpoint::Chat => {
                        let mut c = self.chunk.chat_chunk(vec![ChatChunkChoice {
                            index,
                            delta: ChatDelta {
                                content: Some(text),
                                ..ChatDelta::default()
                            },
                            logprobs: want_lp.then(|| chat_logprobs(&logprobs)),
                            finish_reason: None,
                        }]);
                        c.surge_meter = meter;
                        data(&c)
                    }
                    Endpoint::Completion => {
                        let lp = want_lp.then(|| completion_logprobs(&logprobs, self.offsets[idx]));
                        self.offsets[idx] += text.len();
                        let mut c = self.chunk.text_chunk(vec![TextChoice {
                            index,
                            text,
                            logprobs: lp,
                            finish_reason: None,
                        }]);
                        c.surge_meter = meter;
                        data(&c)
                    }
                };
                vec![event]
            }
            SeqEvent::Done { reason, usage } => {
                self.done += 1;
                super::trace::sequence(&self.chunk.reply.span, &usage);
                let mut out = vec![];
                let mut reason = finish_reason(reason);
                if let Some(parser) = self.calls[idx].as_mut() {
                    let pieces = parser.finish();
                    let calls = parser.calls();
                    if calls > 0 && reason == openai::FinishReason::Stop {
                        reason = openai::FinishReason::ToolCalls;
                    }
                    out = self.pieces(index, pieces, calls, None);
                }
                self.reasons.push(reason.as_str());
                self.usages.push(usage);
                let reason = Some(reason);
                let finish = match endpoint {
                    Endpoint::Chat => self.chunk.chat(vec![ChatChunkChoice {
                        index,
                        delta: ChatDelta::default(),
                        logprobs: None,
                        finish_reason: reason,
                    }]),
                    Endpoint::Completion => self.chunk.text(vec![TextChoice {
                        index,
                        text: String::new(),
                        logprobs: None,
                        finish_reason: reason,
                    }]),
                };
                out.push(finish);
                if self.done == self.n {
                    let (usage, execution) =
                        metering(self.chunk.reply.validated.prompt_tokens, &self.usages);
                    super::trace::finished(
                        &self.chunk.reply.span,
                        usage.completion_tokens,
                        &self.reasons,
                    );
                    out.push(self.chunk.usage(usage, execution));
                }
                out
            }
            SeqEvent::Error(e) => {
                self.failed = true;
                // OpenAI sends stream errors as a plain data line holding the error body.
                vec![Event::default().data(ApiError::Internal(e).body().to_string())]
            }
        }
    }
}

#[cfg(test)]
#[path = "respond_tests.rs"]
mod tests;
