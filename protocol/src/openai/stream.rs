//! A chunk of either completion stream, as a client reads it.

use serde::{Deserialize, Serialize};

use super::*;

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

    /// The first finish reason among the chunk's choices.
    pub fn finish_reason(&self) -> Option<FinishReason> {
        match self {
            StreamChunk::Chat(c) => c.choices.iter().find_map(|c| c.finish_reason),
            StreamChunk::Text(c) => c.choices.iter().find_map(|c| c.finish_reason),
        }
    }

    pub fn surge_meter(&self) -> Option<&SurgeMeter> {
        match self {
            StreamChunk::Chat(c) => c.surge_meter.as_ref(),
            StreamChunk::Text(c) => c.surge_meter.as_ref(),
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
