//! Chat completions: the response and its stream chunks.

use serde::{Deserialize, Serialize};

use super::*;

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
