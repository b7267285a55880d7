//! Turns an uploaded audio file into the 16 kHz mono f32 PCM that Whisper consumes.
//!
//! Clients upload whatever their recorder produced, so decoding is by content (symphonia),
//! followed by a mono mixdown and a band-limited resample (rubato). Every failure is an
//! [`AudioError`] whose message can be shown to the client as-is; no input can panic.

mod decode;
mod resample;

pub use resample::TARGET_RATE;

/// Container/codec combinations this module decodes, for error messages.
pub const SUPPORTED_FORMATS: &str = "wav, mp3, flac, ogg/vorbis, m4a/aac";

/// 16 kHz mono audio ready for Whisper.
#[derive(Debug, Clone)]
pub struct Audio {
    /// Mono samples in [-1, 1] at [`TARGET_RATE`].
    pub samples: Vec<f32>,
    /// Length of the decoded audio, in seconds.
    pub duration_seconds: f64,
    /// The upload's own sample rate in Hz, kept for logging and metrics.
    pub source_rate: u32,
}

/// Why an upload could not be turned into audio. Display strings are client-facing.
#[derive(Debug, thiserror::Error)]
pub enum AudioError {
    /// The bytes are not a container/codec we can decode.
    #[error(
        "unsupported or unrecognised audio format ({0}); supported formats: {SUPPORTED_FORMATS}"
    )]
    UnsupportedFormat(String),
    /// The format was recognised but the data is malformed or cut short.
    #[error("audio data is corrupt or truncated: {0}")]
    Corrupt(String),
    /// The file decoded cleanly but holds no samples.
    #[error("audio file contains no samples (zero-length audio)")]
    Empty,
    /// The audio is longer than the caller allows.
    #[error("audio is longer than the maximum of {max_seconds} seconds")]
    TooLong {
        /// The limit that was exceeded, in seconds.
        max_seconds: f64,
    },
    /// Resampling failed; an internal fault rather than a problem with the upload.
    #[error("internal error while resampling audio: {0}")]
    Resample(String),
}

/// Decodes `bytes` (any supported container, identified by content; `filename_hint`'s
/// extension only breaks ties) to 16 kHz mono f32.
///
/// `max_seconds` bounds the decoded duration; decoding stops as soon as it is exceeded so an
/// oversized upload costs little memory or time.
pub fn decode_to_16k_mono(
    bytes: &[u8],
    filename_hint: Option<&str>,
    max_seconds: Option<f64>,
) -> Result<Audio, AudioError> {
    let decoded = decode::decode_mono(bytes, filename_hint, max_seconds)?;
    let samples = resample::to_16k(decoded.samples, decoded.rate).map_err(AudioError::Resample)?;
    Ok(Audio {
        samples,
        duration_seconds: decoded.duration_seconds,
        source_rate: decoded.rate,
    })
}

#[cfg(test)]
mod tests;
