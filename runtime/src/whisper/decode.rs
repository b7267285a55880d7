//! Greedy decoding of one ≤ 30 s window, no timestamps.
//!
//! The prompt is `<|startoftranscript|>` (+ `<|en|><|transcribe|>` for multilingual
//! models) + `<|notimestamps|>`; tokens are taken by argmax until `<|endoftext|>` or
//! half the text context, as OpenAI's `sample_len` default. Suppression follows the
//! CT2 config (`suppress_ids` always, `suppress_ids_begin` on the first step) and
//! additionally forbids every special token but EOT, since without timestamps none
//! of them may appear in text. candle's decoder has no self-attention KV cache, so each
//! step re-runs the whole prefix (the cross-attention K/V are cached): quadratic, but
//! fine for a window's ≤ 224 tokens; a cache is the obvious next lever.

use candle_core::{Device, IndexOp, Tensor};
use candle_transformers::models::whisper::model::Whisper;
use tokenizers::Tokenizer;

use super::load::Ct2Config;
use super::{Result, WhisperError};

/// Token ids the decoder needs, looked up by name so any Whisper tokenizer works.
#[derive(Debug, Clone)]
pub struct SpecialTokens {
    pub sot: u32,
    pub eot: u32,
    pub no_timestamps: u32,
    /// `<|en|>`, `<|transcribe|>` — only for multilingual vocabularies.
    pub lang_task: Vec<u32>,
}

impl SpecialTokens {
    pub fn from_tokenizer(tok: &Tokenizer, multilingual: bool) -> Result<Self> {
        let id = |s: &str| {
            tok.token_to_id(s)
                .ok_or_else(|| WhisperError::Load(format!("tokenizer lacks {s}")))
        };
        Ok(Self {
            sot: id("<|startoftranscript|>")?,
            eot: id("<|endoftext|>")?,
            no_timestamps: id("<|notimestamps|>")?,
            lang_task: if multilingual {
                vec![id("<|en|>")?, id("<|transcribe|>")?]
            } else {
                Vec::new()
            },
        })
    }
}

/// Additive logit masks (0 or −∞) over the vocabulary.
pub struct Suppress {
    always: Tensor,
    first: Tensor,
}

impl Suppress {
    pub fn new(vocab: usize, sp: &SpecialTokens, cfg: &Ct2Config, dev: &Device) -> Result<Self> {
        let mut always = vec![0f32; vocab];
        for &t in &cfg.suppress_ids {
            if let Some(v) = always.get_mut(t as usize) {
                *v = f32::NEG_INFINITY;
            }
        }
        // Everything from EOT+1 up is special (sot, languages, tasks, timestamps).
        for v in always.iter_mut().skip(sp.eot as usize + 1) {
            *v = f32::NEG_INFINITY;
        }
        let mut first = always.clone();
        for &t in &cfg.suppress_ids_begin {
            if let Some(v) = first.get_mut(t as usize) {
                *v = f32::NEG_INFINITY;
            }
        }
        Ok(Self {
            always: Tensor::from_vec(always, vocab, dev)?,
            first: Tensor::from_vec(first, vocab, dev)?,
        })
    }
}

/// Encodes `mel` (`[1, n_mels, 3000]`) and greedily decodes it; returns the text tokens.
pub fn greedy(
    model: &mut Whisper,
    mel: &Tensor,
    sp: &SpecialTokens,
    suppress: &Suppress,
) -> Result<Vec<u32>> {
    let audio = model.encoder.forward(mel, true)?;
    let mut tokens = vec![sp.sot];
    tokens.extend(&sp.lang_task);
    tokens.push(sp.no_timestamps);
    let prompt_len = tokens.len();
    let max_new = model.config.max_target_positions / 2;
    for step in 0..max_new {
        let input = Tensor::new(tokens.as_slice(), mel.device())?.unsqueeze(0)?;
        // flush on the first step: the cross-attention K/V belong to the previous audio.
        let hidden = model.decoder.forward(&input, &audio, step == 0)?;
        let last = hidden.i((.., tokens.len() - 1..))?;
        let logits = model.decoder.final_linear(&last)?.i((0, 0))?;
        let mask = if step == 0 {
            &suppress.first
        } else {
            &suppress.always
        };
        let next = (logits + mask)?.argmax(0)?.to_scalar::<u32>()?;
        if next == sp.eot {
            break;
        }
        tokens.push(next);
    }
    Ok(tokens.split_off(prompt_len))
}

/// Turns text tokens into a string, trimming Whisper's leading space.
pub fn detokenize(tok: &Tokenizer, ids: &[u32]) -> Result<String> {
    let text = tok
        .decode(ids, true)
        .map_err(|e| WhisperError::Decode(e.to_string()))?;
    Ok(text.trim().to_string())
}
