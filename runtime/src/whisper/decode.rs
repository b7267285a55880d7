//! The Whisper vocabulary's special tokens, looked up by name so any Whisper
//! tokenizer (English-only or multilingual) works.

use tokenizers::Tokenizer;

use super::languages::LANGUAGES;
use super::transcript::WhisperTask;
use super::{Result, WhisperError};

/// Token ids the decoder needs.
#[derive(Debug, Clone)]
pub struct SpecialTokens {
    pub sot: u32,
    pub eot: u32,
    /// `<|notimestamps|>`; the timestamp tokens follow it.
    pub no_timestamps: u32,
    /// `<|transcribe|>` and `<|translate|>`: only multilingual vocabularies have them.
    pub transcribe: Option<u32>,
    pub translate: Option<u32>,
    /// (code, `<|code|>` id) of every language the vocabulary has, in token order; empty
    /// for English-only models, whose prompt is `<|startoftranscript|>` alone.
    pub languages: Vec<(&'static str, u32)>,
}

impl SpecialTokens {
    pub fn from_tokenizer(tok: &Tokenizer, multilingual: bool) -> Result<Self> {
        let (transcribe, translate, languages) = if multilingual {
            let languages: Vec<(&'static str, u32)> = LANGUAGES
                .iter()
                .filter_map(|(code, _)| Some((*code, tok.token_to_id(&format!("<|{code}|>"))?)))
                .collect();
            if languages.is_empty() {
                return Err(WhisperError::Load(
                    "a multilingual vocabulary without language tokens".into(),
                ));
            }
            (
                Some(id(tok, "<|transcribe|>")?),
                Some(id(tok, "<|translate|>")?),
                languages,
            )
        } else {
            (None, None, Vec::new())
        };
        Ok(Self {
            sot: id(tok, "<|startoftranscript|>")?,
            eot: id(tok, "<|endoftext|>")?,
            no_timestamps: id(tok, "<|notimestamps|>")?,
            transcribe,
            translate,
            languages,
        })
    }

    /// Whether the model knows languages other than English.
    pub fn is_multilingual(&self) -> bool {
        !self.languages.is_empty()
    }

    /// The `<|code|>` token, if the model knows the language.
    pub fn language(&self, code: &str) -> Option<u32> {
        self.languages
            .iter()
            .find(|(c, _)| *c == code)
            .map(|&(_, id)| id)
    }

    /// The tokens after `<|startoftranscript|>` for `language` and `task`: `<|de|>
    /// <|transcribe|>` on a multilingual model, nothing on an English-only one. `None`
    /// when the model cannot do it (another language or translation on an English-only
    /// model, a language it lacks).
    pub fn lang_task(&self, language: &str, task: WhisperTask) -> Option<Vec<u32>> {
        if !self.is_multilingual() {
            return (language == "en" && task == WhisperTask::Transcribe).then(Vec::new);
        }
        let task = match task {
            WhisperTask::Transcribe => self.transcribe?,
            WhisperTask::Translate => self.translate?,
        };
        Some(vec![self.language(language)?, task])
    }

    /// Language identification from the logits after `<|startoftranscript|>`: the likeliest
    /// language token (openai-whisper's `detect_language`, faster-whisper's
    /// `detect_language` with one segment), as (code, probability among languages).
    pub fn detect_language(&self, logits: &[f32]) -> Option<(&'static str, f64)> {
        let scored: Vec<(&'static str, f32)> = self
            .languages
            .iter()
            .filter_map(|&(code, id)| Some((code, *logits.get(id as usize)?)))
            .filter(|(_, l)| l.is_finite())
            .collect();
        let &(best, top) = scored.iter().max_by(|a, b| a.1.total_cmp(&b.1))?;
        let sum: f64 = scored.iter().map(|(_, l)| ((l - top) as f64).exp()).sum();
        Some((best, 1.0 / sum))
    }
}

/// A token's id, or a load error naming it.
pub fn id(tok: &Tokenizer, s: &str) -> Result<u32> {
    tok.token_to_id(s)
        .ok_or_else(|| WhisperError::Load(format!("tokenizer lacks {s}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn multilingual() -> SpecialTokens {
        SpecialTokens {
            sot: 10,
            eot: 9,
            no_timestamps: 20,
            transcribe: Some(18),
            translate: Some(17),
            languages: vec![("en", 11), ("de", 12), ("fr", 13)],
        }
    }

    #[test]
    fn prompts_per_model_language_and_task() {
        let m = multilingual();
        assert_eq!(
            m.lang_task("de", WhisperTask::Transcribe),
            Some(vec![12, 18])
        );
        assert_eq!(
            m.lang_task("fr", WhisperTask::Translate),
            Some(vec![13, 17])
        );
        assert_eq!(m.lang_task("yue", WhisperTask::Transcribe), None);
        let en = SpecialTokens {
            transcribe: None,
            translate: None,
            languages: vec![],
            ..m
        };
        assert_eq!(en.lang_task("en", WhisperTask::Transcribe), Some(vec![]));
        assert_eq!(en.lang_task("de", WhisperTask::Transcribe), None);
        assert_eq!(en.lang_task("en", WhisperTask::Translate), None);
        assert_eq!(en.detect_language(&[0.0; 30]), None);
    }

    #[test]
    fn detection_takes_the_likeliest_language_token_only() {
        let m = multilingual();
        let mut logits = vec![0.0f32; 30];
        logits[5] = 100.0; // a text token: not a language, never chosen
        logits[12] = 3.0;
        logits[13] = 3.0 - 2f32.ln();
        let (code, p) = m.detect_language(&logits).unwrap();
        assert_eq!(code, "de");
        // e^3 / (e^0 + e^3 + e^3 / 2)
        let want = 3f64.exp() / (1.0 + 1.5 * 3f64.exp());
        assert!((p - want).abs() < 1e-6, "{p} vs {want}");
    }
}
