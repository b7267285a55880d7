//! Container probing and codec decoding of an in-memory upload, mixed down to mono.
//!
//! Uploads arrive as bytes, often with a misleading or missing filename, so the container is
//! identified by content; the extension is only a tie-breaking hint. Whisper is mono, so
//! channels are averaged here, before resampling, to resample one channel instead of many.

use std::io::{Cursor, ErrorKind};

use symphonia::core::codecs::audio::AudioDecoderOptions;
use symphonia::core::errors::Error as SymError;
use symphonia::core::formats::probe::Hint;
use symphonia::core::formats::{FormatOptions, TrackType};
use symphonia::core::io::MediaSourceStream;
use symphonia::core::meta::MetadataOptions;

use super::AudioError;

/// Decoded audio before resampling.
#[derive(Debug)]
pub struct Decoded {
    /// Mono samples in [-1, 1] at `rate`.
    pub samples: Vec<f32>,
    /// The source sample rate in Hz.
    pub rate: u32,
    /// `samples.len() / rate`, in seconds.
    pub duration_seconds: f64,
}

/// Decodes `bytes` to mono f32 at the source rate, stopping with [`AudioError::TooLong`] as
/// soon as more than `max_seconds` has been decoded so a huge upload cannot exhaust memory.
pub fn decode_mono(
    bytes: &[u8],
    filename_hint: Option<&str>,
    max_seconds: Option<f64>,
) -> Result<Decoded, AudioError> {
    let mut hint = Hint::new();
    if let Some(ext) = filename_hint
        .and_then(|n| n.rsplit_once('.'))
        .map(|(_, e)| e)
    {
        hint.with_extension(&ext.to_ascii_lowercase());
    }
    let mss = MediaSourceStream::new(Box::new(Cursor::new(bytes)), Default::default());
    let mut format = symphonia::default::get_probe()
        .probe(
            &hint,
            mss,
            FormatOptions::default(),
            MetadataOptions::default(),
        )
        .map_err(probe_error)?;
    let track = format
        .default_track(TrackType::Audio)
        .ok_or_else(|| AudioError::UnsupportedFormat("no audio track found".into()))?;
    let track_id = track.id;
    let params = track
        .codec_params
        .as_ref()
        .and_then(|p| p.audio())
        .ok_or_else(|| AudioError::UnsupportedFormat("track has no audio codec".into()))?;
    let mut rate = params.sample_rate.unwrap_or(0);
    let mut decoder = symphonia::default::get_codecs()
        .make_audio_decoder(params, &AudioDecoderOptions::default())
        .map_err(|e| AudioError::UnsupportedFormat(format!("codec: {e}")))?;

    let mut mono: Vec<f32> = Vec::new();
    let mut interleaved: Vec<f32> = Vec::new();
    let mut bad_packets = 0usize;
    loop {
        let packet = match format.next_packet() {
            Ok(Some(p)) => p,
            // End of stream; a chained-OGG track change is treated as the end too, since a
            // single upload is one recording.
            Ok(None) | Err(SymError::ResetRequired) => break,
            // A truncated tail still leaves usable audio before it; only fail if nothing
            // decoded at all (handled after the loop).
            Err(SymError::IoError(e)) if e.kind() == ErrorKind::UnexpectedEof => break,
            Err(e) => return Err(AudioError::Corrupt(e.to_string())),
        };
        if packet.track_id != track_id {
            continue;
        }
        let buf = match decoder.decode(&packet) {
            Ok(buf) => buf,
            // Lossy streams commonly contain a few damaged frames; skipping them is what
            // every player does, and Whisper tolerates the gap.
            Err(SymError::DecodeError(_)) | Err(SymError::IoError(_)) => {
                bad_packets += 1;
                continue;
            }
            Err(e) => return Err(AudioError::Corrupt(e.to_string())),
        };
        let channels = buf.spec().channels().count();
        if channels == 0 {
            return Err(AudioError::Corrupt("stream declares zero channels".into()));
        }
        rate = buf.spec().rate();
        buf.copy_to_vec_interleaved(&mut interleaved);
        let scale = 1.0 / channels as f32;
        mono.extend(
            interleaved
                .chunks_exact(channels)
                .map(|frame| frame.iter().sum::<f32>() * scale),
        );
        if let Some(max) = max_seconds {
            if rate > 0 && mono.len() as f64 / f64::from(rate) > max {
                return Err(AudioError::TooLong { max_seconds: max });
            }
        }
    }
    if mono.is_empty() {
        return Err(if bad_packets > 0 {
            AudioError::Corrupt(format!("{bad_packets} packet(s) failed to decode"))
        } else {
            AudioError::Empty
        });
    }
    if rate == 0 {
        return Err(AudioError::Corrupt(
            "stream declares a 0 Hz sample rate".into(),
        ));
    }
    let duration_seconds = mono.len() as f64 / f64::from(rate);
    Ok(Decoded {
        samples: mono,
        rate,
        duration_seconds,
    })
}

/// Maps a probe failure to what the client did wrong: an unknown container, or one that is
/// recognisable but cut short or malformed.
fn probe_error(e: SymError) -> AudioError {
    match e {
        // symphonia's own wording ("core (probe): ...") means nothing to a client.
        SymError::Unsupported(_) => {
            AudioError::UnsupportedFormat("not a recognised audio container".into())
        }
        SymError::IoError(ref io) if io.kind() == ErrorKind::UnexpectedEof => {
            AudioError::Corrupt("data ends before the header is complete".into())
        }
        other => AudioError::Corrupt(other.to_string()),
    }
}
