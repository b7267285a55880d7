//! A tokenizer rebuilt from GGUF metadata.
//!
//! Models ship as a single GGUF file (no `tokenizer.json` beside it), so the
//! vocabulary, merges and special tokens are read from the `tokenizer.ggml.*`
//! keys: byte-level BPE models (`gpt2`: SmolLM2, Qwen2) are assembled into a
//! `tokenizers::Tokenizer` with the GPT-2 style pipeline they were trained with;
//! SentencePiece models (`llama`: Gemma 3) run llama.cpp's algorithm (`spm.rs`).

use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::{Vocab, BPE};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::SplitDelimiterBehavior;
use tokenizers::{AddedToken, PreTokenizerWrapper};

use super::error::{LlmError, Result};
use super::gguf::{bad, value_to_usize, GgufFile};
use super::spm::SpmTokenizer;

/// llama.cpp token types matched whole in the input and never split by BPE: control
/// tokens (`<|im_start|>`) and user-defined ones (`<tool_call>`).
const CONTROL_TOKEN: usize = 3;
const USER_DEFINED_TOKEN: usize = 4;

/// Qwen2's pre-tokenizer regex (`tokenizer.ggml.pre = "qwen2"`).
const QWEN2_PRE_REGEX: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// Text ⇄ token ids for one model.
#[derive(Clone)]
pub struct Tokenizer {
    inner: Inner,
    bos_token_id: Option<u32>,
    eos_token_id: Option<u32>,
    /// Whether prompts start with BOS (`tokenizer.ggml.add_bos_token`; when the
    /// key is absent, llama.cpp's default: yes for SentencePiece, no for BPE).
    add_bos: bool,
    /// llama.cpp's type of each token (empty when the file has none).
    types: std::sync::Arc<[u8]>,
}

#[derive(Clone)]
enum Inner {
    Bpe(Box<tokenizers::Tokenizer>),
    Spm(std::sync::Arc<SpmTokenizer>),
}

impl Tokenizer {
    /// Builds the tokenizer from `tokenizer.ggml.*` metadata: `gpt2` (byte-level
    /// BPE) or `llama` (SentencePiece pieces and scores).
    pub fn from_gguf(f: &GgufFile) -> Result<Self> {
        let model = f.get_string("tokenizer.ggml.model")?.unwrap_or("gpt2");
        let token_types = token_types(f)?;
        let types = token_types.iter().map(|&t| t as u8).collect();
        let inner = match model {
            "gpt2" => Inner::Bpe(Box::new(bpe_from_gguf(f, &token_types)?)),
            "llama" => Inner::Spm(std::sync::Arc::new(spm_from_gguf(f, token_types)?)),
            other => {
                return Err(LlmError::Unsupported(format!(
                    "tokenizer model `{other}` (implemented: `gpt2` byte-level BPE, \
                     `llama` SentencePiece)"
                )))
            }
        };
        let token_id = |key: &str| -> Result<Option<u32>> {
            f.get_usize(key)?
                .map(|v| u32::try_from(v).map_err(|_| bad(key, "token id out of range")))
                .transpose()
        };
        let add_bos = match f.get("tokenizer.ggml.add_bos_token") {
            Some(v) => v
                .to_bool()
                .map_err(|e| bad("tokenizer.ggml.add_bos_token", e))?,
            None => model == "llama",
        };
        Ok(Self {
            inner,
            bos_token_id: token_id("tokenizer.ggml.bos_token_id")?,
            eos_token_id: token_id("tokenizer.ggml.eos_token_id")?,
            add_bos,
            types,
        })
    }

    /// Encodes a whole prompt: [`Self::encode`], with BOS in front when the model
    /// expects it and the text (e.g. a chat template's output) does not already
    /// begin with it. Gemma's output is garbage without its BOS.
    pub fn encode_prompt(&self, text: &str) -> Result<Vec<u32>> {
        let mut ids = self.encode(text)?;
        if let Some(bos) = self.bos_token_id.filter(|_| self.add_bos) {
            if ids.first() != Some(&bos) {
                ids.insert(0, bos);
            }
        }
        Ok(ids)
    }

    /// Encodes text without adding BOS/EOS; special tokens written in the text
    /// (e.g. `<|im_start|>` from a rendered chat template) become their ids,
    /// as with Hugging Face's `apply_chat_template(tokenize=True)`.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        match &self.inner {
            Inner::Bpe(t) => Ok(t
                .encode(text, false)
                .map_err(|e| LlmError::Tokenizer(e.to_string()))?
                .get_ids()
                .to_vec()),
            Inner::Spm(t) => Ok(t.encode(text)),
        }
    }

    pub fn decode(&self, ids: &[u32], skip_special_tokens: bool) -> Result<String> {
        match &self.inner {
            Inner::Bpe(t) => t
                .decode(ids, skip_special_tokens)
                .map_err(|e| LlmError::Tokenizer(e.to_string())),
            Inner::Spm(t) => Ok(t.decode(ids, skip_special_tokens)),
        }
    }

    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        match &self.inner {
            Inner::Bpe(t) => t.token_to_id(token),
            Inner::Spm(t) => t.token_to_id(token),
        }
    }

    pub fn id_to_token(&self, id: u32) -> Option<String> {
        match &self.inner {
            Inner::Bpe(t) => t.id_to_token(id),
            Inner::Spm(t) => t.id_to_token(id),
        }
    }

    pub fn vocab_size(&self) -> usize {
        match &self.inner {
            Inner::Bpe(t) => t.get_vocab_size(true),
            Inner::Spm(t) => t.vocab_size(),
        }
    }

    /// The bytes token `id` adds to generated text, as a grammar engine sees them;
    /// `None` for a control token (or an unused id), which stands for no text.
    pub fn token_bytes(&self, id: u32) -> Option<Vec<u8>> {
        match &self.inner {
            Inner::Spm(t) => t.token_bytes(id),
            Inner::Bpe(t) => {
                let piece = t.id_to_token(id)?;
                match self.types.get(id as usize).map_or(1, |&t| t as usize) {
                    CONTROL_TOKEN => None,
                    // Added tokens (`<tool_call>`) are stored as their text.
                    USER_DEFINED_TOKEN => Some(piece.into_bytes()),
                    _ => piece.chars().map(byte_level_byte).collect(),
                }
            }
        }
    }

    pub fn bos_token_id(&self) -> Option<u32> {
        self.bos_token_id
    }

    pub fn eos_token_id(&self) -> Option<u32> {
        self.eos_token_id
    }
}

/// The byte GPT-2's byte-level alphabet writes as `c` (`Ġ` is a space): printable
/// Latin-1 stands for itself, the other 68 bytes (0x00–0x20, 0x7f–0xa0, 0xad) were
/// moved, in order, to U+0100 onwards.
fn byte_level_byte(c: char) -> Option<u8> {
    match c as u32 {
        b @ (0x21..=0x7e | 0xa1..=0xac | 0xae..=0xff) => Some(b as u8),
        n @ 0x100..=0x120 => Some((n - 0x100) as u8),
        n @ 0x121..=0x142 => Some((n - 0x121 + 0x7f) as u8),
        0x143 => Some(0xad),
        _ => None,
    }
}

/// The byte-level BPE pipeline: the pre-tokenizer splits digits individually then
/// applies GPT-2's byte-level regex, which is what SmolLM2 (and other
/// `smollm`/`gpt2` pre-tokenizer models) use, except for `tokenizer.ggml.pre =
/// "qwen2"`, which gets Qwen2's regex.
fn bpe_from_gguf(f: &GgufFile, token_types: &[usize]) -> Result<tokenizers::Tokenizer> {
    let tokens = token_strings(f)?;
    let merges: Vec<(String, String)> = f
        .require_array("tokenizer.ggml.merges")?
        .iter()
        .map(|v| {
            let s = v.to_string().map_err(|e| bad("tokenizer.ggml.merges", e))?;
            // Byte-level tokens never contain a literal space (it is `Ġ`),
            // so the first space is the separator.
            s.split_once(' ')
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .ok_or_else(|| bad("tokenizer.ggml.merges", format!("merge `{s}` has no space")))
        })
        .collect::<Result<_>>()?;
    let vocab: Vocab = tokens
        .iter()
        .enumerate()
        .map(|(i, t)| (t.clone(), i as u32))
        .collect();
    let bpe = BPE::builder()
        .vocab_and_merges(vocab, merges)
        .build()
        .map_err(|e| LlmError::Tokenizer(e.to_string()))?;
    let mut inner = tokenizers::Tokenizer::new(bpe);
    let pre = f.get_string("tokenizer.ggml.pre")?.unwrap_or("default");
    let pre_tokenizer = if pre == "qwen2" {
        // Qwen2's own split regex (as in its tokenizer.json and llama.cpp's
        // `LLAMA_VOCAB_PRE_TYPE_QWEN2`): single digits, and one leading
        // non-letter glued to a word (`_prime`, `(n`), which matters for code.
        let split = Split::new(
            SplitPattern::Regex(QWEN2_PRE_REGEX.into()),
            SplitDelimiterBehavior::Isolated,
            false,
        )
        .map_err(|e| LlmError::Tokenizer(e.to_string()))?;
        Sequence::new(vec![
            PreTokenizerWrapper::from(split),
            PreTokenizerWrapper::from(ByteLevel::new(false, false, false)),
        ])
    } else {
        Sequence::new(vec![
            PreTokenizerWrapper::from(Digits::new(true)),
            PreTokenizerWrapper::from(ByteLevel::new(false, true, true)),
        ])
    };
    inner.with_pre_tokenizer(Some(pre_tokenizer));
    inner.with_decoder(Some(ByteLevelDecoder::default()));
    // Both kinds are matched whole in input; only control tokens are special, i.e.
    // left out of decoded text. User-defined ones (Qwen's `<tool_call>`) are text the
    // model writes, as in the model's tokenizer.json and llama.cpp.
    let added = |kind: usize, special: bool| -> Vec<AddedToken> {
        tokens
            .iter()
            .zip(token_types)
            .filter(|(_, ty)| **ty == kind)
            .map(|(t, _)| AddedToken::from(t.clone(), special))
            .collect()
    };
    inner.add_special_tokens(&added(CONTROL_TOKEN, true));
    inner.add_tokens(&added(USER_DEFINED_TOKEN, false));
    Ok(inner)
}

/// SentencePiece pieces, scores and types (`spm.rs`).
fn spm_from_gguf(f: &GgufFile, token_types: Vec<usize>) -> Result<SpmTokenizer> {
    let scores = f
        .require_array("tokenizer.ggml.scores")?
        .iter()
        .map(|v| v.to_f32().map_err(|e| bad("tokenizer.ggml.scores", e)))
        .collect::<Result<Vec<f32>>>()?;
    let add_space_prefix = match f.get("tokenizer.ggml.add_space_prefix") {
        Some(v) => v
            .to_bool()
            .map_err(|e| bad("tokenizer.ggml.add_space_prefix", e))?,
        // llama.cpp's default for SentencePiece models.
        None => true,
    };
    SpmTokenizer::new(token_strings(f)?, scores, token_types, add_space_prefix)
}

fn token_strings(f: &GgufFile) -> Result<Vec<String>> {
    f.require_array("tokenizer.ggml.tokens")?
        .iter()
        .map(|v| {
            v.to_string()
                .cloned()
                .map_err(|e| bad("tokenizer.ggml.tokens", e))
        })
        .collect()
}

/// Per-token llama.cpp types; empty when the file has none.
fn token_types(f: &GgufFile) -> Result<Vec<usize>> {
    match f.get("tokenizer.ggml.token_type") {
        Some(v) => v
            .to_vec()
            .map_err(|e| bad("tokenizer.ggml.token_type", e))?
            .iter()
            .map(|t| value_to_usize("tokenizer.ggml.token_type", t))
            .collect(),
        None => Ok(Vec::new()),
    }
}

/// Turns a stream of generated ids into text deltas for SSE streaming.
///
/// A token can end in the middle of a UTF-8 character and byte-level BPE
/// merges change how earlier bytes decode, so each delta is the difference
/// between decoding a short window with and without the newest tokens, held
/// back while it ends in an incomplete character (the approach used by TGI
/// and vLLM). Owned, unlike `tokenizers::DecodeStream`, so the scheduler can
/// keep one per sequence without borrowing the tokenizer.
#[derive(Debug, Clone, Default)]
pub struct TextStream {
    ids: Vec<u32>,
    prefix_offset: usize,
    read_offset: usize,
    skip_special_tokens: bool,
}

impl TextStream {
    pub fn new(skip_special_tokens: bool) -> Self {
        Self {
            skip_special_tokens,
            ..Self::default()
        }
    }

    /// Adds one token and returns the newly completed text, if any.
    pub fn push(&mut self, tok: &Tokenizer, id: u32) -> Result<Option<String>> {
        self.ids.push(id);
        let skip = self.skip_special_tokens;
        let prefix = tok.decode(&self.ids[self.prefix_offset..self.read_offset], skip)?;
        let full = tok.decode(&self.ids[self.prefix_offset..], skip)?;
        if full.len() > prefix.len() && !full.ends_with('\u{FFFD}') {
            let delta = full.get(prefix.len()..).unwrap_or_default().to_string();
            self.prefix_offset = self.read_offset;
            self.read_offset = self.ids.len();
            // Keep the window short: only the ids since the previous delta.
            if self.prefix_offset > 0 {
                self.ids.drain(..self.prefix_offset);
                self.read_offset -= self.prefix_offset;
                self.prefix_offset = 0;
            }
            return Ok(Some(delta));
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::llm::test_support::test_gguf_path;

    /// GPT-2's byte-to-character table, built as GPT-2 builds it: every byte maps to a
    /// character that maps back to it, and no other character maps to a byte.
    #[test]
    fn byte_level_characters_map_back_to_their_bytes() {
        let printable = |b: u32| matches!(b, 0x21..=0x7e | 0xa1..=0xac | 0xae..=0xff);
        let mut next = 0x100;
        for b in 0..=255u32 {
            let c = if printable(b) {
                b
            } else {
                next += 1;
                next - 1
            };
            assert_eq!(byte_level_byte(char::from_u32(c).unwrap()), Some(b as u8));
        }
        assert_eq!(next, 0x144);
        for c in ['\0', ' ', '\u{7f}', '\u{144}', '\u{200}'] {
            assert_eq!(byte_level_byte(c), None, "{c:?}");
        }
    }

    fn tokenizer() -> Tokenizer {
        let f = GgufFile::open(test_gguf_path()).expect("open test GGUF (set SURGE_TEST_GGUF)");
        Tokenizer::from_gguf(&f).expect("tokenizer")
    }

    #[test]
    fn round_trips_exactly() {
        let tok = tokenizer();
        for text in [
            "Hello, world!",
            "The year 2024 had 366 days; π ≈ 3.14159.",
            "  leading spaces and\ttabs\nnewlines\n\n",
            "Unicode: héllo wörld — 日本語のテキスト 🚀🎉 Ωμέγα",
            "<|im_start|>user\nWhat is 12+30?<|im_end|>\n<|im_start|>assistant\n",
            "",
        ] {
            let ids = tok.encode(text).expect("encode");
            let back = tok.decode(&ids, false).expect("decode");
            assert_eq!(back, text, "ids {ids:?}");
        }
    }

    #[test]
    fn special_tokens_and_digits() {
        let tok = tokenizer();
        assert_eq!(tok.token_to_id("<|im_start|>"), Some(1));
        assert_eq!(tok.token_to_id("<|im_end|>"), Some(2));
        assert_eq!(tok.bos_token_id(), Some(1));
        assert_eq!(tok.eos_token_id(), Some(2));
        let ids = tok.encode("<|im_start|>user<|im_end|>").expect("encode");
        assert_eq!(ids.first(), Some(&1));
        assert_eq!(ids.last(), Some(&2));
        assert_eq!(ids.len(), 3, "{ids:?}");
        // Individual-digit splitting: "12345" is five tokens.
        assert_eq!(tok.encode("12345").expect("encode").len(), 5);
        assert_eq!(tok.decode(&ids, true).expect("decode"), "user");
    }

    #[test]
    fn text_stream_matches_full_decode() {
        let tok = tokenizer();
        let text = "Streaming 日本語 and emoji 🚀 with digits 42.";
        let ids = tok.encode(text).expect("encode");
        let mut stream = TextStream::new(false);
        let mut out = String::new();
        for &id in &ids {
            if let Some(delta) = stream.push(&tok, id).expect("push") {
                out.push_str(&delta);
            }
        }
        assert_eq!(out, text);
    }
}
