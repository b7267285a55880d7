//! The LLM engine core: GGUF loading, tokenizer, chat template, a batched
//! llama-family (`llama`, `qwen2`) forward with per-sequence KV caches, and sampling.
//!
//! The scheduler (one dedicated thread, because candle's CPU thread pool is
//! process-wide) drives it roughly like this:
//!
//! ```no_run
//! # fn main() -> surge_runtime::llm::Result<()> {
//! use surge_runtime::llm::*;
//! let dev = candle_core::Device::Cpu;
//! let mut gguf = GgufFile::open("model.gguf")?;
//! let model = LlmModel::load_gguf(&mut gguf, &dev, &LoadOptions::default())?;
//! let tok = Tokenizer::from_gguf(&gguf)?;
//! let tmpl = ChatTemplate::from_gguf(&gguf, None)?;
//! let prompt = tmpl.render(&[ChatMessage::new("user", "Hi")], true)?;
//! let ids = tok.encode(&prompt)?;
//! let mut cache = model.new_sequence_cache();
//! let mut sampler = Sampler::new(SamplingParams::default())?;
//! let logits = model.step(&mut [BatchItem { tokens: &ids, cache: &mut cache }])?;
//! let next = sampler.sample(&logits_rows(&logits)?[0])?;
//! # let _ = next; Ok(()) }
//! ```

pub mod chat_template;
pub mod error;
pub mod gguf;
pub mod grammar;
pub mod kv_cache;
pub mod model;
pub mod packed;
pub mod sampling;
mod spm;
#[doc(hidden)]
pub mod test_support;
pub mod tokenizer;
pub mod weights;

pub use chat_template::{ChatMessage, ChatTemplate};
pub use error::{LlmError, Result};
pub use gguf::{Architecture, GgufFile, LlamaConfig, RopeStyle, SUPPORTED_ARCHITECTURES};
pub use grammar::{Allowed, Constraint, GrammarSpec, Grammars};
pub use kv_cache::SeqCache;
pub use model::{BatchItem, LlmModel, LoadOptions, LoadReport};
pub use sampling::{logits_rows, SampledToken, Sampler, SamplingParams};
pub use tokenizer::{TextStream, Tokenizer};
pub use weights::{KPadding, WeightFormat};
