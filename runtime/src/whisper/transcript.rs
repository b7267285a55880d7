//! What a transcription produces, independent of how it is served: the segments
//! (with times in seconds from the start of the audio) and the decoding statistics
//! OpenAI's `verbose_json` reports.

use serde::Serialize;

/// Per-request decoding choices (the API's `temperature`, `prompt`, …).
#[derive(Debug, Clone, Default)]
pub struct DecodeOptions {
    /// First temperature to decode with; `None` means 0 with OpenAI's fallback
    /// schedule (0.2, 0.4, … 1.0) when a window's output looks like a failure.
    /// An explicit temperature disables the fallback, as OpenAI's API does.
    pub temperature: Option<f32>,
    /// Text that conditions the first window (the API's `prompt`).
    pub prompt: Option<String>,
    /// Seed for sampled (temperature > 0) decoding; fixed per request so a retry
    /// of the same request gives the same text.
    pub seed: u64,
}

/// One stretch of speech with its timing, as in OpenAI's `verbose_json` segments.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Segment {
    pub id: usize,
    /// Mel frame (10 ms units) where the window this segment came from started.
    pub seek: usize,
    pub start: f64,
    pub end: f64,
    pub text: String,
    pub tokens: Vec<u32>,
    pub temperature: f32,
    pub avg_logprob: f64,
    pub compression_ratio: f64,
    pub no_speech_prob: f64,
}

/// The whole transcription of one upload.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Transcript {
    /// All segments' text joined, trimmed.
    pub text: String,
    pub segments: Vec<Segment>,
    /// Length of the audio in seconds.
    pub duration: f64,
    /// ISO 639-1 code of the language transcribed (`en` for English-only models).
    pub language: String,
}
