//! Band-limited resampling of mono PCM to Whisper's 16 kHz.
//!
//! Whisper's feature extractor assumes exactly 16 kHz input; feeding it audio at another rate
//! shifts every formant and wrecks recognition. A naive linear interpolator would alias high
//! frequencies into the speech band, so this uses rubato's windowed-sinc resampler, which
//! low-pass filters below the output Nyquist and copes with any source rate (including odd ones
//! such as 22050 or 11025 whose ratio to 16 kHz has no small common factor).

use rubato::audioadapter_buffers::direct::InterleavedSlice;
use rubato::{
    Async, FixedAsync, Resampler, SincInterpolationParameters, SincInterpolationType,
    WindowFunction,
};

/// The sample rate Whisper's feature extractor expects.
pub const TARGET_RATE: u32 = 16_000;

/// Frames per resampler chunk: large enough to amortise per-call overhead, small enough that
/// the scratch buffers stay tiny next to the clip itself.
const CHUNK_FRAMES: usize = 1024;

/// Resamples mono `samples` at `source_rate` Hz to [`TARGET_RATE`].
///
/// Returns the input untouched when it is already at 16 kHz, so the common case costs nothing.
/// Errors are returned as strings because they mean an internal fault (rubato rejecting the
/// parameters), not a problem with the client's audio; the caller wraps them.
pub fn to_16k(samples: Vec<f32>, source_rate: u32) -> Result<Vec<f32>, String> {
    if source_rate == TARGET_RATE || samples.is_empty() {
        return Ok(samples);
    }
    if source_rate == 0 {
        return Err("source sample rate is 0".into());
    }
    let ratio = f64::from(TARGET_RATE) / f64::from(source_rate);
    // A 256-tap Blackman-Harris sinc with linear interpolation between 256 oversampled
    // points: well beyond what speech recognition can hear, and cheap enough for long uploads.
    let params = SincInterpolationParameters {
        sinc_len: 256,
        f_cutoff: None,
        oversampling_factor: 256,
        interpolation: SincInterpolationType::Linear,
        window: WindowFunction::BlackmanHarris2,
    };
    let mut resampler =
        Async::<f32>::new_sinc(ratio, 1.0, &params, CHUNK_FRAMES, 1, FixedAsync::Input)
            .map_err(|e| format!("cannot build resampler: {e}"))?;
    let frames = samples.len();
    let input = InterleavedSlice::new(&samples[..], 1, frames)
        .map_err(|e| format!("cannot wrap input: {e}"))?;
    let output = resampler
        .process_all(&input, frames, None)
        .map_err(|e| format!("resampling failed: {e}"))?;
    Ok(output.take_data())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passes_16k_through_unchanged() {
        let x = vec![0.1, -0.2, 0.3];
        assert_eq!(to_16k(x.clone(), 16_000).unwrap(), x);
    }

    #[test]
    fn length_scales_with_rate() {
        let x = vec![0.0f32; 48_000];
        let y = to_16k(x, 48_000).unwrap();
        assert!((y.len() as i64 - 16_000).abs() <= 1, "got {}", y.len());
    }
}
