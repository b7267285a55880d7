//! What a transcription produces, independent of how it is served: the segments
//! (with times in seconds from the start of the audio) and the decoding statistics
//! OpenAI's `verbose_json` reports.

use serde::Serialize;

/// What the decoder is asked to write: the speech's own words, or English.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum WhisperTask {
    #[default]
    Transcribe,
    /// `<|translate|>`: English text whatever the spoken language (multilingual models).
    Translate,
}

impl WhisperTask {
    /// The name OpenAI's `verbose_json` reports as `task`.
    pub fn name(self) -> &'static str {
        match self {
            WhisperTask::Transcribe => "transcribe",
            WhisperTask::Translate => "translate",
        }
    }
}

/// Per-request decoding choices (the API's `temperature`, `prompt`, …).
#[derive(Debug, Clone, Default)]
pub struct DecodeOptions {
    /// ISO code of the spoken language; `None` detects it from the first window on a
    /// multilingual model (English-only models are always `en`).
    pub language: Option<&'static str>,
    pub task: WhisperTask,
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
    /// ISO 639-1 code of the spoken language, as given or detected (`en` for
    /// English-only models). A translation's text is English whatever this is.
    pub language: String,
    pub task: WhisperTask,
}
