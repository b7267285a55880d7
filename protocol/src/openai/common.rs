//! Response parts shared by the endpoints: roles, usage, finish reasons, log-probabilities, surge's execution fields.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize};

/// Why a choice ended. Reading, a reason surge does not know becomes `Other`.
/// What every completion response and stream chunk shares: the envelope around its
/// choices (`C`: [`ChatChoice`](super::ChatChoice), [`ChatChunkChoice`](super::ChatChunkChoice)
/// or [`TextChoice`](super::TextChoice)).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Completion<C> {
    #[serde(default)]
    pub id: String,
    /// `chat.completion`, `chat.completion.chunk` or `text_completion`.
    #[serde(default)]
    pub object: String,
    #[serde(default)]
    pub created: u64,
    #[serde(default)]
    pub model: String,
    /// Always `null` from surge.
    #[serde(default)]
    pub system_fingerprint: Option<String>,
    pub choices: Vec<C>,
    /// Always on a response; on a stream, only on the usage chunk.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
    /// Set beside `usage`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub surge_execution: Option<SurgeExecution>,
    /// On every streamed chunk that carries tokens: what the request has used so far.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub surge_meter: Option<SurgeMeter>,
}

impl<C> Completion<C> {
    /// An envelope of type `object` around `choices`, without usage.
    pub fn new(
        object: &str,
        id: impl Into<String>,
        created: u64,
        model: impl Into<String>,
        choices: Vec<C>,
    ) -> Self {
        Completion {
            id: id.into(),
            object: object.into(),
            created,
            model: model.into(),
            system_fingerprint: None,
            choices,
            usage: None,
            surge_execution: None,
            surge_meter: None,
        }
    }

    /// Whether this is the usage chunk that ends a stream: no choices, usage set.
    pub fn is_usage(&self) -> bool {
        self.choices.is_empty() && self.usage.is_some()
    }
}

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
    /// LLM workers: how many prompt tokens came from the prefix cache.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_tokens_details: Option<PromptTokensDetails>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PromptTokensDetails {
    #[serde(default)]
    pub cached_tokens: u64,
}

impl Usage {
    pub fn new(prompt_tokens: u64, completion_tokens: u64) -> Self {
        Usage {
            prompt_tokens,
            completion_tokens,
            total_tokens: prompt_tokens + completion_tokens,
            prompt_tokens_details: None,
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

/// What a streamed request has used up to and including this chunk (`surge_meter`),
/// summed over its choices. A gateway whose client hangs up mid-stream bills the last
/// chunk it delivered: the tokens the client received, and the execution that made them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct SurgeMeter {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub execution_seconds: f64,
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
