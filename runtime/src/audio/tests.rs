//! Round-trips sox-generated files through the decoder. Skips (with a note) when sox, or a
//! sox format handler, is missing, so a bare build machine still passes.

use std::path::Path;
use std::process::Command;

use super::*;

/// Runs sox with `args`; false (and a note) if sox is absent or refuses, e.g. no mp3 handler.
fn sox(args: &[&str]) -> bool {
    match Command::new("sox").args(args).output() {
        Ok(o) if o.status.success() => true,
        Ok(o) => {
            eprintln!(
                "sox {args:?} failed: {}",
                String::from_utf8_lossy(&o.stderr)
            );
            false
        }
        Err(e) => {
            eprintln!("sox unavailable ({e}); skipping");
            false
        }
    }
}

fn path(dir: &Path, name: &str) -> String {
    dir.join(name).to_string_lossy().into_owned()
}

/// A 1 s stereo 440 Hz sine at 44.1 kHz, as wav.
fn sine_wav(dir: &Path) -> Option<Vec<u8>> {
    let wav = path(dir, "x.wav");
    let args = [
        "-D", "-n", "-r", "44100", "-c", "2", &wav, "synth", "1", "sine", "440",
    ];
    sox(&args).then(|| std::fs::read(&wav).ok()).flatten()
}

/// Sign changes, ignoring samples within ±0.1 of zero so that near-silent codec noise (mp3
/// encoder delay, dither) does not count: 2 per cycle of the dominant tone.
fn zero_crossings(x: &[f32]) -> usize {
    let mut last: Option<bool> = None;
    let mut count = 0;
    for &s in x.iter().filter(|s| s.abs() > 0.1) {
        let positive = s > 0.0;
        if last.is_some_and(|l| l != positive) {
            count += 1;
        }
        last = Some(positive);
    }
    count
}

/// `pad` is how many extra 16 kHz samples the format may add: mp3 written without a LAME
/// gapless tag (as sox writes it) carries encoder delay + padding the decoder cannot trim.
fn check_sine(audio: &Audio, what: &str, pad: f64) {
    assert_eq!(audio.source_rate, 44_100, "{what}");
    let d = audio.duration_seconds;
    assert!(d >= 0.95 && d <= 1.05 + pad / 16_000.0, "{what}: {d} s");
    let n = audio.samples.len() as f64;
    assert!(n >= 15_840.0 && n <= 16_160.0 + pad, "{what}: {n} samples");
    let zc = zero_crossings(&audio.samples) as f64;
    assert!((zc - 880.0).abs() <= 44.0, "{what}: {zc} zero crossings");
    let peak = audio.samples.iter().fold(0f32, |m, s| m.max(s.abs()));
    assert!(peak > 0.5 && peak <= 1.05, "{what}: peak {peak}");
}

#[test]
fn decodes_sine_in_each_format() {
    let dir = tempfile::tempdir().unwrap();
    let Some(wav) = sine_wav(dir.path()) else {
        return;
    };
    check_sine(
        &decode_to_16k_mono(&wav, Some("x.wav"), None).unwrap(),
        "wav",
        0.0,
    );
    let src = path(dir.path(), "x.wav");
    for ext in ["flac", "ogg", "mp3"] {
        let out = path(dir.path(), &format!("x.{ext}"));
        if !sox(&["-D", &src, &out]) {
            eprintln!("note: sox cannot write {ext} here; skipping {ext}");
            continue;
        }
        let bytes = std::fs::read(&out).unwrap();
        // No hint: formats must be recognised by content alone.
        let audio = decode_to_16k_mono(&bytes, None, None).unwrap();
        // Two 1152-sample mp3 frames at 44.1 kHz, expressed at 16 kHz.
        let pad = if ext == "mp3" {
            2.0 * 1152.0 * 16_000.0 / 44_100.0
        } else {
            0.0
        };
        check_sine(&audio, ext, pad);
    }
}

#[test]
fn random_bytes_are_unsupported() {
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let bytes: Vec<u8> = (0..4096)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect();
    let err = decode_to_16k_mono(&bytes, Some("upload.bin"), None).unwrap_err();
    assert!(matches!(err, AudioError::UnsupportedFormat(_)), "{err}");
    assert!(err.to_string().contains("ogg/vorbis"), "{err}");
}

#[test]
fn truncated_wav_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let Some(wav) = sine_wav(dir.path()) else {
        return;
    };
    let err = decode_to_16k_mono(&wav[..30], Some("x.wav"), None).unwrap_err();
    assert!(matches!(err, AudioError::Corrupt(_)), "{err}");
}

#[test]
fn zero_sample_wav_is_empty() {
    let mut buf = std::io::Cursor::new(Vec::new());
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: 16_000,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    hound::WavWriter::new(&mut buf, spec)
        .unwrap()
        .finalize()
        .unwrap();
    let err = decode_to_16k_mono(buf.get_ref(), None, None).unwrap_err();
    assert!(matches!(err, AudioError::Empty), "{err}");
}

#[test]
fn over_limit_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let Some(wav) = sine_wav(dir.path()) else {
        return;
    };
    let err = decode_to_16k_mono(&wav, None, Some(0.5)).unwrap_err();
    assert!(matches!(err, AudioError::TooLong { .. }), "{err}");
    assert!(decode_to_16k_mono(&wav, None, Some(2.0)).is_ok());
}
