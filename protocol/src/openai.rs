//! OpenAI's API shapes as surge speaks them: the requests of `/v1/chat/completions` and
//! `/v1/completions`, their responses and stream chunks, usage, the transcription
//! responses of `/v1/audio/transcriptions`, and the model list.
//!
//! The worker serialises these and nothing else, so what they say is what goes on the
//! wire: a field without `skip_serializing_if` is always present (as `null` when `None`),
//! one with it appears only when set. surge adds `surge_execution` (how the request ran)
//! beside OpenAI's `usage`.
//!
//! Reading is lenient, for clients of other OpenAI-compatible servers (the load tester
//! measures llama.cpp and others too): unknown fields are ignored and the fields a client
//! does not need (`id`, `created`, `index`, …) default when missing. What identifies a
//! shape stays required: `choices` of a completion or chunk, `delta` of a chat chunk's
//! choice, `message` of a chat choice, `text` of a text choice and of a transcription.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Deserializer, Serialize};

// ---------------------------------------------------------------------------------------
// Requests
// ---------------------------------------------------------------------------------------
//
// Unknown fields are ignored (clients send many surge does not use); known fields are
// checked by the worker's validator, where errors get a `param`. They serialise too (a
// client building a request), leaving out what is unset.

/// `POST /v1/chat/completions`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ChatCompletionRequest {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub messages: Option<Vec<ChatMessageIn>>,
    #[serde(flatten)]
    pub common: CommonParams,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub logprobs: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub top_logprobs: Option<u32>,
}

/// `POST /v1/completions` (legacy completions).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct CompletionRequest {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prompt: Option<PromptIn>,
    #[serde(flatten)]
    pub common: CommonParams,
    /// Legacy completions: number of top log-probabilities (0..=5).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub logprobs: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub echo: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub suffix: Option<String>,
}

/// Parameters shared by both completion endpoints.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct CommonParams {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_completion_tokens: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub top_k: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seed: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stop: Option<StopIn>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub presence_penalty: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub frequency_penalty: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub logit_bias: Option<HashMap<String, f32>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub n: Option<i64>,
    #[serde(default)]
    pub stream: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stream_options: Option<StreamOptions>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Keep generating past end-of-turn (vLLM and llama.cpp extension, for benchmarks).
    #[serde(default, skip_serializing_if = "is_false")]
    pub ignore_eos: bool,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct StreamOptions {
    #[serde(default)]
    pub include_usage: bool,
}

/// One message of a chat request.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ChatMessageIn {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content: Option<ContentIn>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

impl ChatMessageIn {
    /// A message with text content.
    pub fn text(role: impl Into<String>, content: impl Into<String>) -> Self {
        ChatMessageIn {
            role: Some(role.into()),
            content: Some(ContentIn::Text(content.into())),
            name: None,
        }
    }
}

/// Message content: a string, or an array of parts (the worker accepts text parts).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ContentIn {
    Text(String),
    Parts(Vec<ContentPart>),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ContentPart {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
}

/// `stop`: one sequence or several.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
pub enum StopIn {
    One(String),
    Many(Vec<String>),
}

/// `prompt` of legacy completions: text, texts, token ids, or lists of token ids.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
pub enum PromptIn {
    Text(String),
    Texts(Vec<String>),
    Tokens(Vec<u32>),
    TokenLists(Vec<Vec<u32>>),
}

fn is_false(b: &bool) -> bool {
    !*b
}

// ---------------------------------------------------------------------------------------
// Shared response parts
// ---------------------------------------------------------------------------------------

/// Why a choice ended. Reading, a reason surge does not know becomes `Other`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    Stop,
    Length,
    ToolCalls,
    ContentFilter,
    #[serde(other)]
    Other,
}

impl FinishReason {
    pub fn as_str(self) -> &'static str {
        match self {
            FinishReason::Stop => "stop",
            FinishReason::Length => "length",
            FinishReason::ToolCalls => "tool_calls",
            FinishReason::ContentFilter => "content_filter",
            FinishReason::Other => "other",
        }
    }
}

/// The author of a message.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    System,
    Developer,
    User,
    /// What a reader assumes of a response message that names no role.
    #[default]
    Assistant,
    Tool,
}

/// Token usage of a completion: OpenAI's three counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    #[serde(default)]
    pub total_tokens: u64,
}

impl Usage {
    pub fn new(prompt_tokens: u64, completion_tokens: u64) -> Self {
        Usage {
            prompt_tokens,
            completion_tokens,
            total_tokens: prompt_tokens + completion_tokens,
        }
    }
}

/// How an LLM request ran on the worker (`surge_execution`), beside `usage`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct SurgeExecution {
    /// Longest wait of the request's sequences between arrival and admission.
    pub queue_seconds: f64,
    /// The sequences' fair shares of the engine steps they took part in, summed.
    pub execution_seconds: f64,
    /// Arrival → first token of the earliest sequence (0 when none produced one).
    pub time_to_first_token_seconds: f64,
    /// Sequences generated (choices × prompts).
    pub sequences: u64,
}

/// A log-probability of a token, or `-inf`: JSON has no infinity, so `-inf` is written
/// as `null` and read back from it.
fn logprob_or_null<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NEG_INFINITY))
}

/// One of the most likely tokens at a position (chat logprobs).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TopLogprob {
    pub token: String,
    #[serde(deserialize_with = "logprob_or_null")]
    pub logprob: f64,
    /// UTF-8 bytes of the token.
    #[serde(default)]
    pub bytes: Option<Vec<u8>>,
}

/// A generated token's log-probability and its alternatives (chat logprobs).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatTokenLogprob {
    pub token: String,
    #[serde(deserialize_with = "logprob_or_null")]
    pub logprob: f64,
    #[serde(default)]
    pub bytes: Option<Vec<u8>>,
    #[serde(default)]
    pub top_logprobs: Vec<TopLogprob>,
}

impl ChatTokenLogprob {
    /// `token` with its bytes filled in.
    pub fn new(token: &str, logprob: f64, top: Vec<TopLogprob>) -> Self {
        ChatTokenLogprob {
            token: token.to_string(),
            logprob,
            bytes: Some(token.as_bytes().to_vec()),
            top_logprobs: top,
        }
    }
}

impl TopLogprob {
    /// `token` with its bytes filled in.
    pub fn new(token: &str, logprob: f64) -> Self {
        TopLogprob {
            token: token.to_string(),
            logprob,
            bytes: Some(token.as_bytes().to_vec()),
        }
    }
}

/// `logprobs` of a chat choice: one entry per generated token.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ChatLogprobs {
    #[serde(default, deserialize_with = "null_as_default")]
    pub content: Vec<ChatTokenLogprob>,
}

/// `logprobs` of a legacy completion choice: parallel arrays, one entry per token.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CompletionLogprobs {
    #[serde(default)]
    pub tokens: Vec<String>,
    #[serde(default)]
    pub token_logprobs: Vec<Option<f64>>,
    /// Per token: the most likely alternatives, token → log-probability.
    #[serde(default)]
    pub top_logprobs: Vec<BTreeMap<String, Option<f64>>>,
    /// Byte offset of each token in the choice's text.
    #[serde(default)]
    pub text_offset: Vec<u64>,
}

fn null_as_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// A function call the model made (room for tool calling; the worker makes none yet).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolCall {
    pub id: String,
    /// `function`.
    #[serde(rename = "type")]
    pub kind: String,
    pub function: FunctionCall,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FunctionCall {
    pub name: String,
    /// The arguments as a JSON text.
    pub arguments: String,
}

/// A piece of a tool call in a stream: the first piece of a call carries its id, type
/// and name, later pieces more of the arguments.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ToolCallDelta {
    #[serde(default)]
    pub index: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub function: Option<FunctionCallDelta>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FunctionCallDelta {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arguments: Option<String>,
}

// ---------------------------------------------------------------------------------------
// Chat completions
// ---------------------------------------------------------------------------------------

/// A `chat.completion`: the answer to a non-streamed chat request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatCompletion {
    #[serde(default)]
    pub id: String,
    /// `chat.completion`.
    #[serde(default)]
    pub object: String,
    #[serde(default)]
    pub created: u64,
    #[serde(default)]
    pub model: String,
    /// Always `null` from surge.
    #[serde(default)]
    pub system_fingerprint: Option<String>,
    pub choices: Vec<ChatChoice>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub surge_execution: Option<SurgeExecution>,
}

impl ChatCompletion {
    pub const OBJECT: &'static str = "chat.completion";
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatChoice {
    #[serde(default)]
    pub index: u32,
    pub message: AssistantMessage,
    /// Present (as `null`) when not asked for.
    #[serde(default)]
    pub logprobs: Option<ChatLogprobs>,
    #[serde(default)]
    pub finish_reason: Option<FinishReason>,
}

/// The message of a chat choice.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AssistantMessage {
    #[serde(default)]
    pub role: Role,
    /// The text; `null` only beside tool calls.
    #[serde(default)]
    pub content: Option<String>,
    /// Always `null` from surge.
    #[serde(default)]
    pub refusal: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<ToolCall>>,
}

impl AssistantMessage {
    /// An assistant message holding `text`.
    pub fn text(text: impl Into<String>) -> Self {
        AssistantMessage {
            role: Role::Assistant,
            content: Some(text.into()),
            refusal: None,
            tool_calls: None,
        }
    }
}

/// A `chat.completion.chunk`: one event of a streamed chat completion.
///
/// A surge stream sends, per choice, a role-only chunk (`{"role":"assistant","content":""}`),
/// content chunks, a finish chunk (empty delta, `finish_reason` set); then one usage chunk
/// (`choices` empty, `usage` and `surge_execution` set), then `[DONE]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatCompletionChunk {
    #[serde(default)]
    pub id: String,
    /// `chat.completion.chunk`.
    #[serde(default)]
    pub object: String,
    #[serde(default)]
    pub created: u64,
    #[serde(default)]
    pub model: String,
    /// Always `null` from surge.
    #[serde(default)]
    pub system_fingerprint: Option<String>,
    pub choices: Vec<ChatChunkChoice>,
    /// Only on the usage chunk.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
    /// Only on the usage chunk.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub surge_execution: Option<SurgeExecution>,
}

impl ChatCompletionChunk {
    pub const OBJECT: &'static str = "chat.completion.chunk";

    /// Whether this chunk carries generated output: any choice's delta has non-empty
    /// content or a tool call. False for the role-only first chunk, finish chunks and the
    /// usage chunk.
    pub fn has_token(&self) -> bool {
        self.choices.iter().any(|c| c.delta.has_token())
    }

    /// Whether this is the usage chunk that ends a stream: no choices, usage set.
    pub fn is_usage(&self) -> bool {
        self.choices.is_empty() && self.usage.is_some()
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatChunkChoice {
    #[serde(default)]
    pub index: u32,
    pub delta: ChatDelta,
    /// Present (as `null`) when not asked for.
    #[serde(default)]
    pub logprobs: Option<ChatLogprobs>,
    /// `null` until the choice's last chunk.
    #[serde(default)]
    pub finish_reason: Option<FinishReason>,
}

/// What a chat chunk adds to its choice's message; unset fields are left out.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ChatDelta {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<Role>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<ToolCallDelta>>,
}

impl ChatDelta {
    /// Non-empty content or a tool call.
    pub fn has_token(&self) -> bool {
        self.content.as_deref().is_some_and(|c| !c.is_empty())
            || self.tool_calls.as_ref().is_some_and(|t| !t.is_empty())
    }
}

// ---------------------------------------------------------------------------------------
// Legacy completions
// ---------------------------------------------------------------------------------------

/// A `text_completion`: the answer to a non-streamed completion request, and each event
/// of a streamed one (OpenAI uses one object for both).
///
/// A surge stream sends content chunks, a finish chunk per choice (`text` empty,
/// `finish_reason` set), one usage chunk (`choices` empty), then `[DONE]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TextCompletion {
    #[serde(default)]
    pub id: String,
    /// `text_completion`.
    #[serde(default)]
    pub object: String,
    #[serde(default)]
    pub created: u64,
    #[serde(default)]
    pub model: String,
    /// Always `null` from surge.
    #[serde(default)]
    pub system_fingerprint: Option<String>,
    pub choices: Vec<TextChoice>,
    /// Always on a response; only on the usage chunk of a stream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub surge_execution: Option<SurgeExecution>,
}

/// A streamed legacy completion's event: the same object as the response.
pub type TextCompletionChunk = TextCompletion;

impl TextCompletion {
    pub const OBJECT: &'static str = "text_completion";

    /// Whether this chunk carries generated text (any choice's `text` non-empty).
    pub fn has_token(&self) -> bool {
        self.choices.iter().any(|c| !c.text.is_empty())
    }

    /// Whether this is the usage chunk that ends a stream: no choices, usage set.
    pub fn is_usage(&self) -> bool {
        self.choices.is_empty() && self.usage.is_some()
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TextChoice {
    #[serde(default)]
    pub index: u32,
    pub text: String,
    /// Present (as `null`) when not asked for.
    #[serde(default)]
    pub logprobs: Option<CompletionLogprobs>,
    /// `null` on a stream's content chunks.
    #[serde(default)]
    pub finish_reason: Option<FinishReason>,
}

// ---------------------------------------------------------------------------------------
// Either stream
// ---------------------------------------------------------------------------------------

/// One chunk of either completion stream, as a client that may have asked either endpoint
/// reads it. A chunk without choices (the usage chunk) reads as `Chat` whatever its
/// `object`: it carries no choice to tell them apart, and needs none.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum StreamChunk {
    Chat(ChatCompletionChunk),
    Text(TextCompletionChunk),
}

impl StreamChunk {
    /// Whether the chunk carries generated output (see [`ChatCompletionChunk::has_token`]).
    pub fn has_token(&self) -> bool {
        match self {
            StreamChunk::Chat(c) => c.has_token(),
            StreamChunk::Text(c) => c.has_token(),
        }
    }

    /// Whether this is the usage chunk that ends a stream.
    pub fn is_usage(&self) -> bool {
        match self {
            StreamChunk::Chat(c) => c.is_usage(),
            StreamChunk::Text(c) => c.is_usage(),
        }
    }

    pub fn usage(&self) -> Option<&Usage> {
        match self {
            StreamChunk::Chat(c) => c.usage.as_ref(),
            StreamChunk::Text(c) => c.usage.as_ref(),
        }
    }

    pub fn surge_execution(&self) -> Option<&SurgeExecution> {
        match self {
            StreamChunk::Chat(c) => c.surge_execution.as_ref(),
            StreamChunk::Text(c) => c.surge_execution.as_ref(),
        }
    }

    /// The generated text of every choice in the chunk, in order (chat: `delta.content`;
    /// completions: `text`).
    pub fn text(&self) -> String {
        match self {
            StreamChunk::Chat(c) => c
                .choices
                .iter()
                .filter_map(|c| c.delta.content.as_deref())
                .collect(),
            StreamChunk::Text(c) => c.choices.iter().map(|c| c.text.as_str()).collect(),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Transcriptions
// ---------------------------------------------------------------------------------------

/// `usage` of a transcription: OpenAI bills audio by duration, in whole seconds (rounded
/// up). Reading, another kind of usage (`tokens`, from OpenAI's newer models) is `Other`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum TranscriptionUsage {
    Duration {
        seconds: u64,
    },
    #[serde(other)]
    Other,
}

impl TranscriptionUsage {
    /// Usage for `audio_seconds` of audio: whole seconds, rounded up.
    pub fn duration(audio_seconds: f64) -> Self {
        TranscriptionUsage::Duration {
            seconds: audio_seconds.max(0.0).ceil() as u64,
        }
    }

    /// The billed seconds of a `duration` usage.
    pub fn seconds(&self) -> Option<u64> {
        match self {
            TranscriptionUsage::Duration { seconds } => Some(*seconds),
            TranscriptionUsage::Other => None,
        }
    }
}

/// How a transcription ran on the worker (`surge_execution`), beside `usage`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct TranscriptionExecution {
    /// Submission to the engine → the engine started on it.
    pub queue_seconds: f64,
    /// The request's fair share of engine time.
    pub execution_seconds: f64,
    /// Length of the uploaded audio.
    pub audio_seconds: f64,
    /// Decoding and resampling the upload (CPU time outside the engine).
    pub decode_seconds: f64,
}

/// `response_format=json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Transcription {
    pub text: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<TranscriptionUsage>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub surge_execution: Option<TranscriptionExecution>,
}

/// `response_format=verbose_json`: the text with its language, duration and segments.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VerboseTranscription {
    /// `transcribe`.
    #[serde(default)]
    pub task: String,
    /// The language's English name, lower case (`english`).
    #[serde(default)]
    pub language: String,
    /// Seconds of audio.
    #[serde(default)]
    pub duration: f64,
    pub text: String,
    #[serde(default)]
    pub segments: Vec<TranscriptionSegment>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<TranscriptionUsage>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub surge_execution: Option<TranscriptionExecution>,
}

/// One segment of a verbose transcription.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TranscriptionSegment {
    pub id: u64,
    /// Where the decoding window this segment came from started, in mel frames (10 ms).
    pub seek: u64,
    pub start: f64,
    pub end: f64,
    pub text: String,
    pub tokens: Vec<u32>,
    pub temperature: f64,
    pub avg_logprob: f64,
    pub compression_ratio: f64,
    pub no_speech_prob: f64,
}

// ---------------------------------------------------------------------------------------
// Models
// ---------------------------------------------------------------------------------------

/// `GET /v1/models`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelList {
    /// `list`.
    pub object: String,
    pub data: Vec<Model>,
}

impl ModelList {
    pub fn new(data: Vec<Model>) -> Self {
        ModelList {
            object: "list".into(),
            data,
        }
    }
}

/// One entry of the model list.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Model {
    pub id: String,
    /// `model`.
    pub object: String,
    #[serde(default)]
    pub created: u64,
    #[serde(default)]
    pub owned_by: String,
    /// surge: the canonical name an alias stands for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root: Option<String>,
    /// surge: `llm` or `whisper`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
}

impl Model {
    pub fn new(id: impl Into<String>, created: u64, owned_by: impl Into<String>) -> Self {
        Model {
            root: None,
            kind: None,
            id: id.into(),
            object: "model".into(),
            created,
            owned_by: owned_by.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use serde::de::DeserializeOwned;
    use serde_json::{json, Value};

    use super::*;

    /// Reads `json` as a `T` and checks that writing it back gives the same JSON (every
    /// field, nulls included; key order aside).
    fn roundtrip<T: Serialize + DeserializeOwned>(json: &str) -> T {
        let t: T = serde_json::from_str(json).unwrap_or_else(|e| panic!("{e}: {json}"));
        let back = serde_json::to_value(&t).unwrap();
        let want: Value = serde_json::from_str(json).unwrap();
        assert_eq!(back, want);
        t
    }

    fn execution() -> SurgeExecution {
        SurgeExecution {
            queue_seconds: 0.0005,
            execution_seconds: 0.25,
            time_to_first_token_seconds: 0.0625,
            sequences: 1,
        }
    }

    fn chunk(choices: Vec<ChatChunkChoice>) -> ChatCompletionChunk {
        ChatCompletionChunk {
            id: "chatcmpl-00000000000000010000000000000002".into(),
            object: ChatCompletionChunk::OBJECT.into(),
            created: 1733400000,
            model: "smollm2-135m-instruct".into(),
            system_fingerprint: None,
            choices,
            usage: None,
            surge_execution: None,
        }
    }

    // The JSON below is what the LLM worker's respond.rs wrote with `json!` before these
    // types existed.

    #[test]
    fn chat_completion_as_the_worker_writes_it() {
        let json = r#"{"id":"chatcmpl-00000000000000010000000000000002","object":"chat.completion",
            "created":1733400000,"model":"smollm2-135m-instruct","system_fingerprint":null,
            "choices":[{"index":0,"message":{"role":"assistant","content":"Paris.","refusal":null},
                        "logprobs":null,"finish_reason":"stop"}],
            "usage":{"prompt_tokens":31,"completion_tokens":3,"total_tokens":34},
            "surge_execution":{"queue_seconds":0.0005,"execution_seconds":0.25,
                               "time_to_first_token_seconds":0.0625,"sequences":1}}"#;
        let c: ChatCompletion = roundtrip(json);
        let built = ChatCompletion {
            id: "chatcmpl-00000000000000010000000000000002".into(),
            object: ChatCompletion::OBJECT.into(),
            created: 1733400000,
            model: "smollm2-135m-instruct".into(),
            system_fingerprint: None,
            choices: vec![ChatChoice {
                index: 0,
                message: AssistantMessage::text("Paris."),
                logprobs: None,
                finish_reason: Some(FinishReason::Stop),
            }],
            usage: Some(Usage::new(31, 3)),
            surge_execution: Some(execution()),
        };
        assert_eq!(c, built);
    }

    #[test]
    fn chat_logprobs_as_the_worker_writes_them() {
        let json = r#"{"id":"chatcmpl-1","object":"chat.completion","created":1,"model":"m",
            "system_fingerprint":null,
            "choices":[{"index":1,"message":{"role":"assistant","content":" Paris","refusal":null},
              "logprobs":{"content":[{"token":" Paris","logprob":-0.125,"bytes":[32,80,97,114,105,115],
                 "top_logprobs":[{"token":" Paris","logprob":-0.125,"bytes":[32,80,97,114,105,115]},
                                 {"token":"é","logprob":-2.5,"bytes":[195,169]}]}]},
              "finish_reason":"length"}],
            "usage":{"prompt_tokens":2,"completion_tokens":1,"total_tokens":3},
            "surge_execution":{"queue_seconds":0.0,"execution_seconds":0.5,
                               "time_to_first_token_seconds":0.0,"sequences":2}}"#;
        let c: ChatCompletion = roundtrip(json);
        let lp = c.choices[0].logprobs.as_ref().unwrap();
        assert_eq!(
            lp.content[0],
            ChatTokenLogprob::new(
                " Paris",
                -0.125,
                vec![
                    TopLogprob::new(" Paris", -0.125),
                    TopLogprob::new("é", -2.5)
                ]
            )
        );
        assert_eq!(c.choices[0].finish_reason, Some(FinishReason::Length));
    }

    #[test]
    fn minus_infinity_logprobs_are_written_as_null_and_read_back() {
        let t = TopLogprob::new("x", f64::NEG_INFINITY);
        let v = serde_json::to_value(&t).unwrap();
        assert_eq!(v["logprob"], Value::Null);
        let back: TopLogprob = serde_json::from_value(v).unwrap();
        assert_eq!(back.logprob, f64::NEG_INFINITY);
    }

    #[test]
    fn chat_stream_chunks_as_the_worker_writes_them() {
        let head = r#""id":"chatcmpl-00000000000000010000000000000002","object":"chat.completion.chunk",
            "created":1733400000,"model":"smollm2-135m-instruct","system_fingerprint":null"#;
        // The role chunk each choice opens with.
        let role: ChatCompletionChunk = roundtrip(&format!(
            r#"{{{head},"choices":[{{"index":0,"delta":{{"role":"assistant","content":""}},
                "logprobs":null,"finish_reason":null}}]}}"#
        ));
        assert_eq!(
            role,
            chunk(vec![ChatChunkChoice {
                index: 0,
                delta: ChatDelta {
                    role: Some(Role::Assistant),
                    content: Some(String::new()),
                    tool_calls: None,
                },
                logprobs: None,
                finish_reason: None,
            }])
        );
        assert!(!role.has_token() && !role.is_usage());
        // Content.
        let content: ChatCompletionChunk = roundtrip(&format!(
            r#"{{{head},"choices":[{{"index":0,"delta":{{"content":" Paris"}},
                "logprobs":null,"finish_reason":null}}]}}"#
        ));
        assert!(content.has_token() && !content.is_usage());
        // Content with logprobs.
        let with_lp: ChatCompletionChunk = roundtrip(&format!(
            r#"{{{head},"choices":[{{"index":0,"delta":{{"content":"!"}},
                "logprobs":{{"content":[{{"token":"!","logprob":-0.5,"bytes":[33],"top_logprobs":[]}}]}},
                "finish_reason":null}}]}}"#
        ));
        assert_eq!(
            with_lp.choices[0].logprobs.as_ref().unwrap().content.len(),
            1
        );
        // The finish chunk: empty delta.
        let finish: ChatCompletionChunk = roundtrip(&format!(
            r#"{{{head},"choices":[{{"index":0,"delta":{{}},"logprobs":null,"finish_reason":"stop"}}]}}"#
        ));
        assert_eq!(finish.choices[0].delta, ChatDelta::default());
        assert!(!finish.has_token() && !finish.is_usage());
        // The usage chunk.
        let usage: ChatCompletionChunk = roundtrip(&format!(
            r#"{{{head},"choices":[],
                "usage":{{"prompt_tokens":31,"completion_tokens":3,"total_tokens":34}},
                "surge_execution":{{"queue_seconds":0.0005,"execution_seconds":0.25,
                                    "time_to_first_token_seconds":0.0625,"sequences":1}}}}"#
        ));
        assert!(usage.is_usage() && !usage.has_token());
        let mut built = chunk(vec![]);
        built.usage = Some(Usage::new(31, 3));
        built.surge_execution = Some(execution());
        assert_eq!(usage, built);
    }

    #[test]
    fn tool_call_deltas_count_as_tokens_and_are_left_out_when_unset() {
        let mut c = chunk(vec![ChatChunkChoice {
            index: 0,
            delta: ChatDelta {
                tool_calls: Some(vec![ToolCallDelta {
                    index: 0,
                    id: Some("call_1".into()),
                    kind: Some("function".into()),
                    function: Some(FunctionCallDelta {
                        name: Some("get_weather".into()),
                        arguments: None,
                    }),
                }]),
                ..ChatDelta::default()
            },
            logprobs: None,
            finish_reason: None,
        }]);
        assert!(c.has_token());
        let v = serde_json::to_value(&c).unwrap();
        assert_eq!(
            v["choices"][0]["delta"],
            json!({"tool_calls": [{"index": 0, "id": "call_1", "type": "function",
                                   "function": {"name": "get_weather"}}]})
        );
        c.choices[0].delta.tool_calls = Some(vec![]);
        assert!(!c.has_token());
        let m = serde_json::to_value(AssistantMessage::text("hi")).unwrap();
        assert_eq!(
            m,
            json!({"role": "assistant", "content": "hi", "refusal": null})
        );
    }

    #[test]
    fn text_completion_and_its_chunks_as_the_worker_writes_them() {
        let head = r#""id":"cmpl-00000000000000010000000000000002","object":"text_completion",
            "created":1733400000,"model":"smollm2-135m-instruct","system_fingerprint":null"#;
        let full: TextCompletion = roundtrip(&format!(
            r#"{{{head},"choices":[{{"index":0,"text":" Paris is","finish_reason":"length",
                "logprobs":{{"tokens":[" Paris"," is"],"token_logprobs":[-0.25,-1.0],
                             "top_logprobs":[{{" Paris":-0.25," Lyon":-3.0}},{{" is":-1.0}}],
                             "text_offset":[0,6]}}}}],
                "usage":{{"prompt_tokens":4,"completion_tokens":2,"total_tokens":6}},
                "surge_execution":{{"queue_seconds":0.0,"execution_seconds":0.125,
                                    "time_to_first_token_seconds":0.0625,"sequences":1}}}}"#
        ));
        assert_eq!(full.object, TextCompletion::OBJECT);
        assert_eq!(
            full.choices[0].logprobs.as_ref().unwrap().text_offset,
            [0, 6]
        );
        let content: TextCompletionChunk = roundtrip(&format!(
            r#"{{{head},"choices":[{{"index":1,"text":" Paris","logprobs":null,"finish_reason":null}}]}}"#
        ));
        assert!(content.has_token() && !content.is_usage());
        let finish: TextCompletionChunk = roundtrip(&format!(
            r#"{{{head},"choices":[{{"index":1,"text":"","logprobs":null,"finish_reason":"stop"}}]}}"#
        ));
        assert!(!finish.has_token() && !finish.is_usage());
        let usage: TextCompletionChunk = roundtrip(&format!(
            r#"{{{head},"choices":[],"usage":{{"prompt_tokens":4,"completion_tokens":2,"total_tokens":6}},
                "surge_execution":{{"queue_seconds":0.0,"execution_seconds":0.125,
                                    "time_to_first_token_seconds":0.0625,"sequences":1}}}}"#
        ));
        assert!(usage.is_usage() && !usage.has_token());
    }

    #[test]
    fn stream_chunks_of_either_endpoint_are_told_apart() {
        let chat: StreamChunk =
            serde_json::from_str(r#"{"choices":[{"delta":{"content":"Hi"}}]}"#).unwrap();
        assert!(matches!(chat, StreamChunk::Chat(_)));
        assert!(chat.has_token());
        assert_eq!(chat.text(), "Hi");
        let text: StreamChunk =
            serde_json::from_str(r#"{"object":"text_completion","choices":[{"text":" Paris"}]}"#)
                .unwrap();
        assert!(matches!(text, StreamChunk::Text(_)));
        assert_eq!(text.text(), " Paris");
        let role: StreamChunk = serde_json::from_str(
            r#"{"choices":[{"delta":{"role":"assistant","content":""},"finish_reason":null}]}"#,
        )
        .unwrap();
        assert!(!role.has_token());
        let usage: StreamChunk = serde_json::from_str(
            r#"{"object":"text_completion","choices":[],"usage":{"prompt_tokens":5,"completion_tokens":7}}"#,
        )
        .unwrap();
        assert!(usage.is_usage() && !usage.has_token());
        assert_eq!(usage.usage().unwrap().completion_tokens, 7);
        // A null usage is no usage; an error event is no chunk.
        let delta: StreamChunk =
            serde_json::from_str(r#"{"choices":[{"delta":{"content":"usage"}}],"usage":null}"#)
                .unwrap();
        assert!(!delta.is_usage());
        assert!(serde_json::from_str::<StreamChunk>(
            r#"{"error":{"message":"worker crashed","type":"server_error"}}"#
        )
        .is_err());
        // Other servers' finish reasons and extra fields read fine.
        let other: StreamChunk = serde_json::from_str(
            r#"{"choices":[{"index":0,"delta":{},"finish_reason":"eos"}],"timings":{"n":1}}"#,
        )
        .unwrap();
        let StreamChunk::Chat(c) = other else {
            panic!("not chat")
        };
        assert_eq!(c.choices[0].finish_reason, Some(FinishReason::Other));
    }

    // The JSON below is what the Whisper worker's format.rs wrote with `json!`.

    #[test]
    fn transcriptions_as_the_worker_writes_them() {
        let exec = r#"{"queue_seconds":0.25,"execution_seconds":1.5,"audio_seconds":3662.25,"decode_seconds":0.01}"#;
        let t: Transcription = roundtrip(&format!(
            r#"{{"text":"Hello there.","usage":{{"type":"duration","seconds":3663}},"surge_execution":{exec}}}"#
        ));
        assert_eq!(t.usage, Some(TranscriptionUsage::duration(3662.25)));
        let v: VerboseTranscription = roundtrip(&format!(
            r#"{{"task":"transcribe","language":"english","duration":3662.25,"text":"Hello there.",
                "segments":[{{"id":0,"seek":0,"start":0.0,"end":2.5,"text":" Hello there.",
                              "tokens":[50363,383],"temperature":0.0,"avg_logprob":-0.25,
                              "compression_ratio":1.2,"no_speech_prob":0.01}}],
                "usage":{{"type":"duration","seconds":3663}},"surge_execution":{exec}}}"#
        ));
        assert_eq!(v.segments[0].tokens, [50363, 383]);
        // Seconds are whole, rounded up; another usage kind reads as Other.
        assert_eq!(TranscriptionUsage::duration(2.0).seconds(), Some(2));
        assert_eq!(TranscriptionUsage::duration(2.01).seconds(), Some(3));
        assert_eq!(TranscriptionUsage::duration(-1.0).seconds(), Some(0));
        let other: TranscriptionUsage =
            serde_json::from_str(r#"{"type":"tokens","input_tokens":3}"#).unwrap();
        assert_eq!(other, TranscriptionUsage::Other);
        // Other servers' plain `{"text"}` reads too.
        let plain: Transcription = serde_json::from_str(r#"{"text":"hi"}"#).unwrap();
        assert_eq!(plain.usage, None);
        assert_eq!(serde_json::to_value(&plain).unwrap(), json!({"text": "hi"}));
    }

    #[test]
    fn model_list_as_the_worker_writes_it() {
        let l: ModelList = roundtrip(
            r#"{"object":"list","data":[{"id":"whisper-tiny.en","object":"model","created":0,"owned_by":"surge"},
                                        {"id":"whisper-1","object":"model","created":0,"owned_by":"surge"}]}"#,
        );
        assert_eq!(
            l,
            ModelList::new(vec![
                Model::new("whisper-tiny.en", 0, "surge"),
                Model::new("whisper-1", 0, "surge")
            ])
        );
    }

    #[test]
    fn requests_read_every_shape_and_ignore_unknown_fields() {
        let r: ChatCompletionRequest = serde_json::from_str(
            r#"{"model":"m","messages":[{"role":"user","content":"hi"},
                {"role":"user","content":[{"type":"text","text":"a"},{"type":"image_url"}]}],
                "max_tokens":5,"stop":"x","stream":true,"stream_options":{"include_usage":true},
                "logprobs":true,"top_logprobs":2,"logit_bias":{"42":-100},"tools":[],"ignore_eos":true}"#,
        )
        .unwrap();
        assert_eq!(r.messages.as_ref().unwrap().len(), 2);
        assert!(matches!(
            r.messages.as_ref().unwrap()[1].content,
            Some(ContentIn::Parts(ref p)) if p.len() == 2 && p[1].text.is_none()
        ));
        assert!(matches!(r.common.stop, Some(StopIn::One(ref s)) if s == "x"));
        assert!(r.common.stream && r.common.ignore_eos);
        assert!(r.common.stream_options.unwrap().include_usage);
        assert_eq!((r.logprobs, r.top_logprobs), (Some(true), Some(2)));
        let r: CompletionRequest =
            serde_json::from_str(r#"{"prompt":"text","logprobs":3,"echo":false}"#).unwrap();
        assert!(matches!(r.prompt, Some(PromptIn::Text(_))));
        assert_eq!((r.logprobs, r.echo), (Some(3), Some(false)));
        let r: CompletionRequest = serde_json::from_str(r#"{"prompt":[1,2]}"#).unwrap();
        assert!(matches!(r.prompt, Some(PromptIn::Tokens(_))));
        let r: CompletionRequest = serde_json::from_str(r#"{"prompt":[[1],[2,3]]}"#).unwrap();
        assert!(matches!(r.prompt, Some(PromptIn::TokenLists(_))));
        let r: CompletionRequest = serde_json::from_str(r#"{"prompt":["a"]}"#).unwrap();
        assert!(matches!(r.prompt, Some(PromptIn::Texts(_))));
        // A wrong type is an error, not a default.
        assert!(serde_json::from_str::<ChatCompletionRequest>(r#"{"max_tokens":"5"}"#).is_err());
        assert!(serde_json::from_str::<ChatCompletionRequest>(r#"{"stream":null}"#).is_err());
    }

    #[test]
    fn requests_write_only_what_is_set() {
        let r = ChatCompletionRequest {
            model: Some("m".into()),
            messages: Some(vec![ChatMessageIn::text("user", "hi")]),
            common: CommonParams {
                max_tokens: Some(5),
                stream: true,
                stream_options: Some(StreamOptions {
                    include_usage: true,
                }),
                ..CommonParams::default()
            },
            ..ChatCompletionRequest::default()
        };
        assert_eq!(
            serde_json::to_value(&r).unwrap(),
            json!({"model": "m", "messages": [{"role": "user", "content": "hi"}],
                   "max_tokens": 5, "stream": true, "stream_options": {"include_usage": true}})
        );
        let back: ChatCompletionRequest =
            serde_json::from_value(serde_json::to_value(&r).unwrap()).unwrap();
        assert_eq!(back.common.max_tokens, Some(5));
    }
}
