//! Test audio: speech synthesised with espeak-ng and converted with sox (`-D`: no dither,
//! so every run produces the same bytes), and hand-made WAVs for the error cases.
//! `scripts/setup.sh` installs espeak-ng, sox and sox's mp3 handler; tests that need them
//! print SKIP and return when they are missing.

use std::path::{Path, PathBuf};
use std::process::Command;

use surge_loadtest::speech::{duration_s, synthesize};

/// One audio file ready to upload.
#[derive(Debug, Clone)]
pub struct Clip {
    pub filename: String,
    pub bytes: Vec<u8>,
    /// Length as sox reports it.
    pub seconds: f64,
}

fn have(tool: &str) -> bool {
    Command::new(tool)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// espeak-ng and sox are both installed.
pub fn speech_tools() -> bool {
    have("espeak-ng") && have("sox")
}

/// sox has a handler that writes files ending in `.ext` (mp3 needs libsox-fmt-mp3).
pub fn sox_writes(ext: &str) -> bool {
    let Ok(out) = Command::new("sox").arg("-h").output() else {
        return false;
    };
    let help = String::from_utf8_lossy(&out.stdout);
    help.lines()
        .find_map(|l| l.strip_prefix("AUDIO FILE FORMATS:"))
        .is_some_and(|formats| formats.split_whitespace().any(|f| f == ext))
}

/// A fresh scratch directory under the target dir for `test`'s files.
pub fn scratch(test: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("speech")
        .join(format!("{test}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Synthesises `text` with espeak-ng and converts it with `sox -D` into 16 kHz mono
/// files, one per extension in `exts` (the corpus recipe of `testdata/speech/`). Needs
/// [`speech_tools`] and, per extension, [`sox_writes`].
pub fn speak(dir: &Path, stem: &str, text: &str, exts: &[&str]) -> Vec<Clip> {
    let paths = synthesize(text, dir, stem, exts).unwrap_or_else(|e| panic!("{e}"));
    paths
        .iter()
        .zip(exts)
        .map(|(path, ext)| Clip {
            filename: format!("{stem}.{ext}"),
            bytes: std::fs::read(path).unwrap(),
            seconds: duration_s(path).unwrap_or_else(|e| panic!("{e}")),
        })
        .collect()
}

/// A canonical 16-bit PCM mono WAV of `samples` at `rate` Hz.
pub fn wav(rate: u32, samples: &[i16]) -> Vec<u8> {
    let data_len = (samples.len() * 2) as u32;
    let mut out = Vec::with_capacity(44 + data_len as usize);
    out.extend_from_slice(b"RIFF");
    out.extend_from_slice(&(36 + data_len).to_le_bytes());
    out.extend_from_slice(b"WAVEfmt ");
    out.extend_from_slice(&16u32.to_le_bytes()); // fmt chunk size
    out.extend_from_slice(&1u16.to_le_bytes()); // PCM
    out.extend_from_slice(&1u16.to_le_bytes()); // mono
    out.extend_from_slice(&rate.to_le_bytes());
    out.extend_from_slice(&(rate * 2).to_le_bytes()); // byte rate
    out.extend_from_slice(&2u16.to_le_bytes()); // block align
    out.extend_from_slice(&16u16.to_le_bytes()); // bits per sample
    out.extend_from_slice(b"data");
    out.extend_from_slice(&data_len.to_le_bytes());
    for s in samples {
        out.extend_from_slice(&s.to_le_bytes());
    }
    out
}

/// The 16-bit PCM samples of a WAV file (its `data` chunk; other chunks skipped).
pub fn pcm16(wav: &[u8]) -> Vec<i16> {
    assert!(wav.len() >= 12 && &wav[..4] == b"RIFF" && &wav[8..12] == b"WAVE");
    let mut i = 12;
    while i + 8 <= wav.len() {
        let id = &wav[i..i + 4];
        let len = u32::from_le_bytes(wav[i + 4..i + 8].try_into().unwrap()) as usize;
        let body = &wav[i + 8..(i + 8 + len).min(wav.len())];
        if id == b"data" {
            return body
                .chunks_exact(2)
                .map(|b| i16::from_le_bytes([b[0], b[1]]))
                .collect();
        }
        i += 8 + len + (len & 1);
    }
    panic!("no data chunk in the WAV");
}

/// Share of `expected`'s words (lower-cased, punctuation stripped) found in `got`.
pub fn word_overlap(expected: &str, got: &str) -> f64 {
    let words = |s: &str| -> Vec<String> {
        s.split_whitespace()
            .map(|w| {
                w.chars()
                    .filter(|c| c.is_alphanumeric())
                    .collect::<String>()
                    .to_lowercase()
            })
            .filter(|w| !w.is_empty())
            .collect()
    };
    let want = words(expected);
    let have = words(got);
    if want.is_empty() {
        return 1.0;
    }
    let hits = want.iter().filter(|w| have.contains(w)).count();
    hits as f64 / want.len() as f64
}
