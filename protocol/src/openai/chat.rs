//! Chat completions: the response and its stream chunks.

use serde::{Deserialize, Serialize};

use super::*;

/// A `chat.completion`: the answer to a non-streamed chat request.
pub type ChatCompletion = Completion<ChatChoice>;

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
/// A surge stream sends, per choice, a role-only chunk ([`ChatChunkChoice::opening`]),
/// content chunks, a finish chunk (empty delta, `finish_reason` set); then one usage chunk
/// (`choices` empty, `usage` and `surge_execution` set), then `[DONE]`.
pub type ChatCompletionChunk = Completion<ChatChunkChoice>;

impl ChatCompletionChunk {
    pub const OBJECT: &'static str = "chat.completion.chunk";

    /// Whether this chunk carries generated output: any choice's delta has non-empty
    /// content or a tool call. False for the role-only first chunk, finish chunks and the
    /// usage chunk.
    pub fn has_token(&self) -> bool {
        self.choices.iter().any(|c| c.delta.has_token())
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

impl ChatChunkChoice {
    /// The chunk each choice of a stream opens with: the assistant's role, empty content.
    pub fn opening(index: u32) -> Self {
        ChatChunkChoice {
            index,
            delta: ChatDelta {
                role: Some(Role::Assistant),
                content: Some(String::new()),
                tool_calls: None,
            },
            logprobs: None,
            finish_reason: None,
        }
    }
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
