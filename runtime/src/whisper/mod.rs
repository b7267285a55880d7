//! Whisper speech-to-text, loading CTranslate2 checkpoints directly.
//!
//! The catalog's Whisper models are CTranslate2 conversions (what faster-whisper uses),
//! so the engine reads that format instead of requiring a second copy of the weights:
//!
//! - [`ct2`]: the `model.bin` container → tensors
//! - [`layers`], [`encoder`], [`decoder`]: our forward pass — int8 linears on our own
//!   kernels, f32 GEMM attention in the encoder, per-sequence KV caches in the decoder
//! - [`mel`]: OpenAI-exact log-mel features with computed Slaney filters
//! - [`rules`]: timestamp decoding rules; [`transcribe`]: windows, seeking, segments,
//!   temperature fallback, as a per-request state machine the engine can batch
//! - [`load`]: the same weights mapped onto candle-transformers' `Whisper`, kept as the
//!   reference our forward is tested against
//!
//! [`WhisperEngine`] ties them together.

pub mod ct2;
pub mod decode;
pub mod decoder;
pub mod encoder;
pub mod languages;
pub mod layers;
pub mod load;
pub mod mel;
pub mod rules;
pub mod transcribe;
pub mod transcript;

#[cfg(test)]
mod tests;

use std::path::Path;

use candle_core::Device;
use tokenizers::Tokenizer;

use decode::SpecialTokens;
use decoder::{CrossKv, DecodeSeq, Decoder};
use encoder::Encoder;
use mel::MelExtractor;
use rules::Rules;
use transcribe::{Task, Vocab};
pub use transcript::{DecodeOptions, Segment, Transcript, WhisperTask};

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
    encoder: Encoder,
    decoder: Decoder,
    tokenizer: Tokenizer,
    mel: MelExtractor,
    special: SpecialTokens,
    rules: Rules,
    start_of_prev: u32,
    no_speech: Option<u32>,
}

/// What `model.bin` and `config.json` give, before the tokenizer joins them.
struct Weights {
    encoder: Encoder,
    decoder: Decoder,
    cfg: load::Ct2Config,
    n_mels: usize,
}

impl WhisperEngine {
    /// Loads a CT2 model directory's three files (as resolved from the model cache).
    /// Runs on the CPU only: the int8 kernels are CPU kernels.
    pub fn load(
        model_bin: &Path,
        config_json: &Path,
        tokenizer_json: &Path,
        device: &Device,
    ) -> Result<Self> {
        let mut timer = crate::server::StartupTimer::start();
        Self::load_timed(model_bin, config_json, tokenizer_json, device, &mut timer)
    }

    /// [`WhisperEngine::load`], lapping `weights` and `tokenizer` on `timer`.
    pub fn load_timed(
        model_bin: &Path,
        config_json: &Path,
        tokenizer_json: &Path,
        device: &Device,
        timer: &mut crate::server::StartupTimer,
    ) -> Result<Self> {
        if !device.is_cpu() {
            return Err(WhisperError::Load(
                "the Whisper engine runs on the CPU only (use --device cpu)".into(),
            ));
        }
        // tokenizer.json (2 MB of JSON) parses on a second thread while this one loads
        // and quantizes the weights; `tokenizer_s` is then only what is left after them.
        let read_tokenizer = || {
            Tokenizer::from_file(tokenizer_json)
                .map_err(|e| WhisperError::Load(format!("{}: {e}", tokenizer_json.display())))
        };
        std::thread::scope(|s| {
            let tokenizer = std::thread::Builder::new()
                .name("surge-tokenizer".into())
                .spawn_scoped(s, read_tokenizer);
            let weights = Self::load_weights(model_bin, config_json);
            timer.lap(crate::server::startup::StartupPhase::Weights);
            let tokenizer = match tokenizer {
                Ok(h) => h.join().unwrap_or_else(|_| {
                    Err(WhisperError::Load("the tokenizer thread panicked".into()))
                }),
                Err(_) => read_tokenizer(),
            };
            let engine = Self::assemble(weights?, tokenizer?);
            timer.lap(crate::server::startup::StartupPhase::Tokenizer);
            engine
        })
    }

    /// The encoder, decoder and config from `model.bin` and `config.json`.
    fn load_weights(model_bin: &Path, config_json: &Path) -> Result<Weights> {
        let ct2 = ct2::Ct2Model::load(model_bin, &Device::Cpu)?;
        if ct2.spec != "WhisperSpec" {
            return Err(WhisperError::Load(format!(
                "expected a WhisperSpec model, found {}",
                ct2.spec
            )));
        }
        let cfg = load::Ct2Config::load(config_json)?;
        let count = |side: &str| {
            (0..)
                .take_while(|i| {
                    ct2.vars
                        .contains_key(&format!("{side}/layer_{i}/ffn/linear_0/weight"))
                })
                .count()
        };
        let encoder = Encoder::load(
            &ct2,
            count("encoder"),
            ct2.scalar_usize("encoder/num_heads")?,
        )?;
        let decoder = Decoder::load(
            &ct2,
            count("decoder"),
            ct2.scalar_usize("decoder/num_heads")?,
        )?;
        let n_mels = ct2.get("encoder/conv1/weight")?.dims3()?.1;
        Ok(Weights {
            encoder,
            decoder,
            cfg,
            n_mels,
        })
    }

    fn assemble(w: Weights, tokenizer: Tokenizer) -> Result<Self> {
        let Weights {
            encoder,
            decoder,
            cfg,
            n_mels,
        } = w;
        // English-only vocabularies have 51864 entries; multilingual ones 51865+ (and the
        // language and task tokens, which `SpecialTokens` then requires).
        let multilingual = decoder.vocab() >= 51865;
        let special = SpecialTokens::from_tokenizer(&tokenizer, multilingual)?;
        let rules = Rules::new(&special, &cfg, decoder.vocab());
        let no_speech = ["<|nospeech|>", "<|nocaptions|>"]
            .iter()
            .find_map(|s| tokenizer.token_to_id(s));
        Ok(Self {
            start_of_prev: decode::id(&tokenizer, "<|startofprev|>")?,
            no_speech,
            mel: MelExtractor::new(n_mels, &Device::Cpu)?,
            encoder,
            decoder,
            tokenizer,
            special,
            rules,
        })
    }

    /// Whether the model knows languages other than English.
    pub fn is_multilingual(&self) -> bool {
        self.special.is_multilingual()
    }

    /// The codes of the languages the model can be told to hear (`en` alone for an
    /// English-only model), in Whisper's token order.
    pub fn languages(&self) -> Vec<&'static str> {
        if self.special.is_multilingual() {
            self.special
                .languages
                .iter()
                .map(|&(code, _)| code)
                .collect()
        } else {
            vec!["en"]
        }
    }

    /// Text of `ids` (special and timestamp tokens dropped), leading space kept.
    pub fn detokenize(&self, ids: &[u32]) -> String {
        self.tokenizer.decode(ids, true).unwrap_or_default()
    }

    fn vocab<'a>(&'a self, detok: &'a dyn Fn(&[u32]) -> String) -> Vocab<'a> {
        Vocab {
            special: &self.special,
            rules: &self.rules,
            detokenize: detok,
            start_of_prev: self.start_of_prev,
            no_speech: self.no_speech,
            n_text_ctx: self.decoder.n_ctx(),
        }
    }

    /// A new transcription of `pcm` (16 kHz mono): computes its log-mel. Refuses a
    /// language or task the model cannot do (the worker checks first, with 400s).
    pub fn new_task(&self, pcm: &[f32], mut opts: DecodeOptions) -> Result<Task> {
        if !self.is_multilingual() {
            // Nothing to detect: an English-only model hears English.
            opts.language = Some(opts.language.unwrap_or("en"));
        }
        let probe = opts.language.unwrap_or("en");
        if self.special.lang_task(probe, opts.task).is_none() {
            return Err(WhisperError::Decode(format!(
                "this model cannot {} language '{probe}'",
                opts.task.name()
            )));
        }
        let mel = self.mel.full(pcm)?;
        let prompt = match opts.prompt.as_deref().map(str::trim) {
            Some(p) if !p.is_empty() => self
                .tokenizer
                .encode(format!(" {p}"), false)
                .map_err(|e| WhisperError::Decode(format!("prompt: {e}")))?
                .get_ids()
                .to_vec(),
            _ => Vec::new(),
        };
        Ok(Task::new(mel, opts, prompt))
    }

    /// Encodes every task that needs its next window, all windows in one batch, and
    /// starts their decoding. Returns how many windows were encoded.
    pub fn encode(&self, tasks: &mut [&mut Task]) -> Result<usize> {
        let mut who = Vec::new();
        let mut mels = Vec::new();
        for (i, t) in tasks.iter().enumerate() {
            if t.needs_encode() {
                who.push(i);
                mels.push(t.window_mel());
            }
        }
        if mels.is_empty() {
            return Ok(0);
        }
        let refs: Vec<&[f32]> = mels.iter().map(Vec::as_slice).collect();
        let audio = self.encoder.forward(&refs)?;
        let per = audio.len() / mels.len();
        let detok = |ids: &[u32]| self.detokenize(ids);
        let v = self.vocab(&detok);
        for (k, &i) in who.iter().enumerate() {
            let cross: CrossKv = self.decoder.cross_kv(&audio[k * per..(k + 1) * per])?;
            tasks[i].start_window(cross, self.decoder.new_cache(), &v);
        }
        Ok(who.len())
    }

    /// One batched decode step over every task that is decoding. Returns how many
    /// sequences took part.
    pub fn decode_step(&self, tasks: &mut [&mut Task]) -> Result<usize> {
        let mut seqs = Vec::new();
        let mut who = Vec::new();
        for (i, t) in tasks.iter_mut().enumerate() {
            if let Some((tokens, cache, cross, logits_for)) = t.decode_input() {
                seqs.push(DecodeSeq {
                    tokens,
                    cache,
                    cross,
                    logits_for,
                });
                who.push(i);
            }
        }
        if seqs.is_empty() {
            return Ok(0);
        }
        let rows_per: Vec<usize> = seqs.iter().map(|s| s.logits_for.len()).collect();
        let mut logits = self.decoder.step(&mut seqs)?;
        drop(seqs);
        let vocab = self.decoder.vocab();
        let detok = |ids: &[u32]| self.detokenize(ids);
        let v = self.vocab(&detok);
        let mut offset = 0;
        for (&i, &n) in who.iter().zip(&rows_per) {
            let rows = &mut logits[offset * vocab..(offset + n) * vocab];
            offset += n;
            tasks[i].on_logits(rows, &v);
        }
        Ok(who.len())
    }

    /// Transcribes all of `pcm` (16 kHz mono) on its own, window after window.
    pub fn transcribe(&self, pcm: &[f32], opts: &DecodeOptions) -> Result<Transcript> {
        let mut task = self.new_task(pcm, opts.clone())?;
        while !task.is_done() {
            let mut one = [&mut task];
            if self.encode(&mut one)? == 0 && self.decode_step(&mut one)? == 0 {
                return Err(WhisperError::Decode(
                    "transcription made no progress".into(),
                ));
            }
        }
        Ok(task.into_transcript())
    }
}
