//! One error type for the LLM engine, so the scheduler can map failures to
//! OpenAI error bodies without matching on strings from four libraries.

use thiserror::Error;

/// Everything that can go wrong while loading or running an LLM.
#[derive(Debug, Error)]
pub enum LlmError {
    /// Tensor or GGUF parsing failures from candle.
    #[error("candle: {0}")]
    Candle(#[from] candle_core::Error),

    #[error("i/o on {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },

    /// A required GGUF metadata key is absent.
    #[error("GGUF metadata key `{0}` is missing")]
    MissingMetadata(String),

    /// A GGUF metadata key exists but has an unusable type or value.
    #[error("GGUF metadata key `{key}` is invalid: {reason}")]
    BadMetadata { key: String, reason: String },

    /// The file describes a model this engine does not implement.
    #[error("unsupported model: {0}")]
    Unsupported(String),

    #[error("tokenizer: {0}")]
    Tokenizer(String),

    #[error("chat template: {0}")]
    Template(#[from] minijinja::Error),

    /// A request would grow a sequence past the model's context window.
    #[error("sequence of {requested} tokens exceeds the context length {max}")]
    ContextOverflow { requested: usize, max: usize },

    /// The caller passed a malformed batch (empty chunk, foreign cache, bad id).
    #[error("invalid batch: {0}")]
    InvalidBatch(String),

    /// Sampling parameters outside their documented ranges.
    #[error("invalid sampling parameters: {0}")]
    InvalidSampling(String),
}

/// Result alias used throughout [`crate::llm`].
pub type Result<T> = std::result::Result<T, LlmError>;
