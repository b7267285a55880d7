//! Transcriptions: `json` and `verbose_json`, usage by duration.

use serde::{Deserialize, Serialize};

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
/// Translations (`/v1/audio/translations`) answer in the same shape.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VerboseTranscription {
    /// `transcribe`, or `translate` for a translation.
    #[serde(default)]
    pub task: String,
    /// The language's English name, lower case (`english`): the spoken language of a
    /// transcription, the output's (always `english`) of a translation.
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
