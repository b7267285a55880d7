//! The synthetic speech corpus of `testdata/speech/`: its texts, the clips generated from
//! them at run time (espeak-ng, then `sox -D` to 16 kHz mono in wav, mp3, flac or ogg),
//! and faster-whisper's recorded WER on those clips, which transcription tests use as their
//! bar.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::Value;

/// The formats the corpus is generated in.
pub const FORMATS: [&str; 4] = ["wav", "mp3", "flac", "ogg"];

/// `testdata/speech/` in this checkout.
pub fn testdata_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata/speech")
}

/// The corpus texts: one sentence per line of `sentences.txt`, and `passage.txt` as one line.
#[derive(Debug, Clone)]
pub struct Corpus {
    pub sentences: Vec<String>,
    pub passage: String,
}

impl Corpus {
    pub fn load(dir: &Path) -> Result<Corpus, String> {
        let read = |f: &str| {
            std::fs::read_to_string(dir.join(f))
                .map_err(|e| format!("{}: {e}", dir.join(f).display()))
        };
        let sentences: Vec<String> = read("sentences.txt")?
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect();
        let passage = read("passage.txt")?
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
        Ok(Corpus { sentences, passage })
    }

    /// `testdata/speech/` of this checkout.
    pub fn default_corpus() -> Result<Corpus, String> {
        Corpus::load(&testdata_dir())
    }
}

/// Whether espeak-ng and sox are installed (`scripts/setup.sh` installs them).
pub fn have_tools() -> bool {
    ["espeak-ng", "sox"].iter().all(|t| {
        Command::new(t)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok()
    })
}

/// Speaks `text` with espeak-ng's default voice and converts it with `sox -D` (no dither,
/// so the audio is the same every run) to 16 kHz mono `dir/STEM.EXT` for each format.
/// Returns the paths in the order of `formats`.
pub fn synthesize(
    text: &str,
    dir: &Path,
    stem: &str,
    formats: &[&str],
) -> Result<Vec<PathBuf>, String> {
    let raw = dir.join(format!("{stem}.raw.wav"));
    run(Command::new("espeak-ng").arg("-w").arg(&raw).arg(text))?;
    let mut out = Vec::new();
    for ext in formats {
        let p = dir.join(format!("{stem}.{ext}"));
        run(Command::new("sox")
            .arg("-D")
            .arg(&raw)
            .args(["-r", "16000", "-c", "1"])
            .arg(&p))?;
        out.push(p);
    }
    let _ = std::fs::remove_file(&raw);
    Ok(out)
}

/// Duration of an audio file in seconds (`soxi -D`).
pub fn duration_s(path: &Path) -> Result<f64, String> {
    let out = Command::new("soxi")
        .arg("-D")
        .arg(path)
        .output()
        .map_err(|e| format!("soxi: {e}"))?;
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .map_err(|e| format!("soxi -D {}: {e}", path.display()))
}

fn run(cmd: &mut Command) -> Result<(), String> {
    let out = cmd.output().map_err(|e| format!("{cmd:?}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{cmd:?}: {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// A temporary directory removed on drop (no tempfile dependency in this crate).
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(prefix: &str) -> Result<TempDir, String> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let p = std::env::temp_dir().join(format!("{prefix}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&p).map_err(|e| format!("{}: {e}", p.display()))?;
        Ok(TempDir(p))
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// faster-whisper's recorded WER on the corpus clips
/// (`testdata/speech/faster_whisper_wer.json`).
#[derive(Debug, Clone)]
pub struct PeerWer(pub Value);

/// Edits and reference words of one clip or one corpus.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Score {
    pub edits: usize,
    pub ref_words: usize,
}

impl Score {
    pub fn wer(&self) -> f64 {
        self.edits as f64 / self.ref_words.max(1) as f64
    }
}

impl PeerWer {
    pub fn load(path: &Path) -> Result<PeerWer, String> {
        let s = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        serde_json::from_str(&s)
            .map(PeerWer)
            .map_err(|e| format!("{}: {e}", path.display()))
    }

    /// `testdata/speech/faster_whisper_wer.json` of this checkout.
    pub fn default_record() -> Result<PeerWer, String> {
        PeerWer::load(&testdata_dir().join("faster_whisper_wer.json"))
    }

    fn score(v: &Value) -> Option<Score> {
        Some(Score {
            edits: v.get("edits")?.as_u64()? as usize,
            ref_words: v.get("ref_words")?.as_u64()? as usize,
        })
    }

    /// All sentence clips of `format` together.
    pub fn sentences(&self, format: &str) -> Option<Score> {
        Self::score(
            self.0
                .pointer(&format!("/formats/{format}/sentences_corpus"))?,
        )
    }

    /// The passage clip in `format`.
    pub fn passage(&self, format: &str) -> Option<Score> {
        Self::score(self.0.pointer(&format!("/formats/{format}/passage"))?)
    }

    /// One clip (`sentence1`…, `passage`) in `format`.
    pub fn clip(&self, clip: &str, format: &str) -> Option<Score> {
        self.clip_row(clip, format).and_then(Self::score)
    }

    /// faster-whisper's transcript of one clip.
    pub fn transcript(&self, clip: &str, format: &str) -> Option<&str> {
        self.clip_row(clip, format)?.get("text")?.as_str()
    }

    fn clip_row(&self, clip: &str, format: &str) -> Option<&Value> {
        self.0
            .pointer(&format!("/formats/{format}/clips"))?
            .as_array()?
            .iter()
            .find(|c| c["clip"] == clip)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn corpus_and_peer_record_agree() {
        let corpus = Corpus::default_corpus().unwrap();
        assert!((6..=8).contains(&corpus.sentences.len()));
        for s in corpus.sentences.iter().chain([&corpus.passage]) {
            assert!(
                !s.chars().any(|c| c.is_ascii_digit()),
                "no digits in the corpus: {s}"
            );
        }
        let peer = PeerWer::default_record().unwrap();
        for f in FORMATS {
            let mut total = Score {
                edits: 0,
                ref_words: 0,
            };
            for (i, s) in corpus.sentences.iter().enumerate() {
                let clip = peer.clip(&format!("sentence{}", i + 1), f).unwrap();
                assert_eq!(clip.ref_words, crate::wer::normalize(s).len());
                // the recorded transcript reproduces the recorded edits
                let text = peer.transcript(&format!("sentence{}", i + 1), f).unwrap();
                assert_eq!(crate::wer::word_errors(s, text).0, clip.edits);
                total.edits += clip.edits;
                total.ref_words += clip.ref_words;
            }
            assert_eq!(peer.sentences(f), Some(total));
            let p = peer.passage(f).unwrap();
            assert_eq!(p.ref_words, crate::wer::normalize(&corpus.passage).len());
            let text = peer.transcript("passage", f).unwrap();
            assert_eq!(crate::wer::word_errors(&corpus.passage, text).0, p.edits);
        }
    }

    #[test]
    fn synthesizes_every_format_reproducibly() {
        if !have_tools() {
            eprintln!("SKIP: needs espeak-ng and sox (scripts/setup.sh)");
            return;
        }
        let dir = TempDir::new("surge-speech-test").unwrap();
        let text = "She opened the window.";
        let a = synthesize(text, dir.path(), "a", &FORMATS).unwrap();
        let b = synthesize(text, dir.path(), "b", &FORMATS).unwrap();
        for (x, y) in a.iter().zip(&b) {
            let d = duration_s(x).unwrap();
            assert!(d > 0.5 && d < 5.0, "{}: {d} s", x.display());
            if x.extension().unwrap() != "ogg" {
                // Ogg streams carry a random serial number; the decoded audio is the same.
                assert_eq!(std::fs::read(x).unwrap(), std::fs::read(y).unwrap());
            }
        }
    }
}
