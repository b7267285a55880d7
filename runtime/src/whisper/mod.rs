//! Whisper speech-to-text on candle, loading CTranslate2 checkpoints directly.
//!
//! The catalog's Whisper models are CTranslate2 conversions (what faster-whisper uses),
//! so the engine reads that format instead of requiring a second copy of the weights:
//!
//! - [`ct2`]: the `model.bin` container → candle tensors
//! - [`load`]: CT2 names → candle-transformers' `Whisper` (fused projections split)
//! - [`mel`]: OpenAI-exact log-mel features with computed Slaney filters
//! - [`decode`]: greedy, no-timestamp decoding of one ≤ 30 s window
//!
//! [`WhisperEngine`] ties them together. Long audio (seeking across windows) and
//! a decoder self-attention KV cache are not here yet.

pub mod ct2;
pub mod decode;
pub mod load;
pub mod mel;
pub mod transcript;

use std::path::Path;

use candle_core::Device;
use candle_transformers::models::whisper::model::Whisper;
use tokenizers::Tokenizer;

use decode::{SpecialTokens, Suppress};
use mel::MelExtractor;
pub use transcript::{DecodeOptions, Segment, Transcript};

#[derive(Debug, thiserror::Error)]
pub enum WhisperError {
    #[error("loading whisper model: {0}")]
    Load(String),
    #[error("decoding: {0}")]
    Decode(String),
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

pub type Result<T> = std::result::Result<T, WhisperError>;

/// One loaded Whisper model, ready to transcribe 16 kHz mono PCM.
pub struct WhisperEngine {
    model: Whisper,
    tokenizer: Tokenizer,
    mel: MelExtractor,
    special: SpecialTokens,
    suppress: Suppress,
}

impl WhisperEngine {
    /// Loads a CT2 model directory's three files (as resolved from the model cache).
    pub fn load(
        model_bin: &Path,
        config_json: &Path,
        tokenizer_json: &Path,
        device: &Device,
    ) -> Result<Self> {
        let loaded = load::load_model(model_bin, config_json, device)?;
        let tokenizer = Tokenizer::from_file(tokenizer_json)
            .map_err(|e| WhisperError::Load(format!("{}: {e}", tokenizer_json.display())))?;
        let cfg = &loaded.model.config;
        // English-only vocabularies have 51864 entries; multilingual ones 51865+.
        let multilingual = cfg.vocab_size >= 51865;
        let special = SpecialTokens::from_tokenizer(&tokenizer, multilingual)?;
        let suppress = Suppress::new(cfg.vocab_size, &special, &loaded.extra, device)?;
        let mel = MelExtractor::new(cfg.num_mel_bins, device)?;
        Ok(Self {
            model: loaded.model,
            tokenizer,
            mel,
            special,
            suppress,
        })
    }

    /// Transcribes up to the first 30 s of `pcm` (16 kHz mono, −1..1).
    pub fn transcribe_window(&mut self, pcm: &[f32]) -> Result<String> {
        let mel = self.mel.window(pcm)?;
        let ids = decode::greedy(&mut self.model, &mel, &self.special, &self.suppress)?;
        decode::detokenize(&self.tokenizer, &ids)
    }

    /// Transcribes all of `pcm` (16 kHz mono). Interim: fixed 30 s windows without
    /// timestamps, one segment per window; seeking by timestamps replaces this.
    pub fn transcribe(&mut self, pcm: &[f32], _opts: &DecodeOptions) -> Result<Transcript> {
        let mut segments = Vec::new();
        let step = mel::N_SAMPLES;
        let mut start = 0;
        while start < pcm.len() {
            let end = (start + step).min(pcm.len());
            let mel = self.mel.window(&pcm[start..end])?;
            let ids = decode::greedy(&mut self.model, &mel, &self.special, &self.suppress)?;
            let text = decode::detokenize(&self.tokenizer, &ids)?;
            segments.push(Segment {
                id: segments.len(),
                seek: start / mel::HOP,
                start: start as f64 / mel::SAMPLE_RATE as f64,
                end: end as f64 / mel::SAMPLE_RATE as f64,
                text: format!(" {text}"),
                tokens: ids,
                temperature: 0.0,
                avg_logprob: 0.0,
                compression_ratio: 0.0,
                no_speech_prob: 0.0,
            });
            start = end;
        }
        let text = segments
            .iter()
            .map(|s| s.text.as_str())
            .collect::<String>()
            .trim()
            .to_string();
        Ok(Transcript {
            text,
            segments,
            duration: pcm.len() as f64 / mel::SAMPLE_RATE as f64,
            language: "en".into(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;
    use std::time::Instant;

    fn have(tool: &str) -> bool {
        Command::new(tool).arg("--version").output().is_ok()
    }

    /// Synthesises speech with espeak-ng and resamples it to 16 kHz mono with sox.
    fn speech(text: &str, dir: &Path) -> Option<Vec<f32>> {
        if !have("espeak-ng") || !have("sox") {
            eprintln!("SKIP: whisper end-to-end test needs espeak-ng and sox (scripts/setup.sh)");
            return None;
        }
        let raw = dir.join("raw.wav");
        let wav = dir.join("16k.wav");
        let ok = Command::new("espeak-ng")
            .arg("-w")
            .arg(&raw)
            .arg(text)
            .status();
        assert!(ok.unwrap().success(), "espeak-ng failed");
        let ok = Command::new("sox")
            .arg("-D")
            .arg(&raw)
            .args(["-r", "16000", "-c", "1"])
            .arg(&wav)
            .status();
        assert!(ok.unwrap().success(), "sox failed");
        let mut r = hound::WavReader::open(&wav).unwrap();
        let spec = r.spec();
        assert_eq!((spec.sample_rate, spec.channels), (16_000, 1));
        let scale = 1.0 / (1u32 << (spec.bits_per_sample - 1)) as f32;
        Some(match spec.sample_format {
            hound::SampleFormat::Int => r
                .samples::<i32>()
                .map(|s| s.unwrap() as f32 * scale)
                .collect(),
            hound::SampleFormat::Float => r.samples::<f32>().map(|s| s.unwrap()).collect(),
        })
    }

    #[test]
    fn transcribes_espeak_sentence() {
        let dir = tempfile::tempdir().unwrap();
        let Some(pcm) = speech("The quick brown fox jumps over the lazy dog.", dir.path()) else {
            return;
        };
        let cache = surge_models::ModelCache::open_default().unwrap();
        let entry = surge_models::catalog::find("whisper-tiny.en").unwrap();
        let req = surge_models::PullRequest::from_catalog(entry).unwrap();
        surge_models::pull(&cache, &req, &Default::default()).unwrap();
        let m = cache.resolve("whisper-tiny.en").unwrap();

        let t0 = Instant::now();
        let mut engine = WhisperEngine::load(
            m.path("model.bin").unwrap(),
            m.path("config.json").unwrap(),
            m.path("tokenizer.json").unwrap(),
            &Device::Cpu,
        )
        .unwrap();
        let load_s = t0.elapsed().as_secs_f64();
        let t1 = Instant::now();
        let text = engine.transcribe_window(&pcm).unwrap();
        let run_s = t1.elapsed().as_secs_f64();
        let audio_s = pcm.len() as f64 / 16_000.0;
        eprintln!(
            "whisper: load {load_s:.2}s, {audio_s:.2}s audio in {run_s:.2}s (RTF {:.3}): {text:?}",
            run_s / audio_s
        );

        let lower = text.to_lowercase();
        let words = [
            "the", "quick", "brown", "fox", "jumps", "over", "the", "lazy", "dog",
        ];
        let hits = words.iter().filter(|w| lower.contains(*w)).count();
        assert!(
            lower.contains("quick brown fox") || hits >= 6,
            "transcript {text:?} matches only {hits}/9 words"
        );
    }
}
