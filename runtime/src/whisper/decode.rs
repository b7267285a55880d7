//! The Whisper vocabulary's special tokens, looked up by name so any Whisper
//! tokenizer (English-only or multilingual) works.

use tokenizers::Tokenizer;

use super::{Result, WhisperError};

/// Token ids the decoder needs.
#[derive(Debug, Clone)]
pub struct SpecialTokens {
    pub sot: u32,
    pub eot: u32,
    /// `<|notimestamps|>`; the timestamp tokens follow it.
    pub no_timestamps: u32,
    /// `<|en|>`, `<|transcribe|>` — only for multilingual vocabularies.
    pub lang_task: Vec<u32>,
}

impl SpecialTokens {
    pub fn from_tokenizer(tok: &Tokenizer, multilingual: bool) -> Result<Self> {
        Ok(Self {
            sot: id(tok, "<|startoftranscript|>")?,
            eot: id(tok, "<|endoftext|>")?,
            no_timestamps: id(tok, "<|notimestamps|>")?,
            lang_task: if multilingual {
                vec![id(tok, "<|en|>")?, id(tok, "<|transcribe|>")?]
            } else {
                Vec::new()
            },
        })
    }
}

/// A token's id, or a load error naming it.
pub fn id(tok: &Tokenizer, s: &str) -> Result<u32> {
    tok.token_to_id(s)
        .ok_or_else(|| WhisperError::Load(format!("tokenizer lacks {s}")))
}
