//! Legacy completions: the response, which is also the stream chunk.

use serde::{Deserialize, Serialize};

use super::*;

/// A `text_completion`: the answer to a non-streamed completion request, and each event
/// of a streamed one (OpenAI uses one object for both).
///
/// A surge stream sends content chunks, a finish chunk per choice (`text` empty,
/// `finish_reason` set), one usage chunk (`choices` empty), then `[DONE]`.
pub type TextCompletion = Completion<TextChoice>;

/// A streamed legacy completion's event: the same object as the response.
pub type TextCompletionChunk = TextCompletion;

impl TextCompletion {
    pub const OBJECT: &'static str = "text_completion";

    /// Whether this chunk carries generated text (any choice's `text` non-empty).
    pub fn has_token(&self) -> bool {
        self.choices.iter().any(|c| !c.text.is_empty())
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
