//! The surge worker runtime: model engines that a worker process drives.
//!
//! - [`audio`]: decode uploaded audio (wav, mp3, flac, ogg, m4a) to 16 kHz mono PCM for Whisper
//! - [`llm`]: the LLM engine core (GGUF, tokenizer, chat template, batched forward, sampling)
//! - [`llm_worker`]: the LLM worker process (continuous-batching scheduler, OpenAI API)
//! - [`server`]: HTTP plumbing every worker kind shares (errors, listening, drain)
//! - [`whisper`]: the Whisper speech-to-text engine core (CTranslate2 weights on candle)
//! - [`whisper_worker`]: the Whisper worker process (batching engine thread, transcription API)
//! - [`worker`]: `surge worker` — resolve a cached model and run its worker kind

pub mod audio;
pub mod kernels;
pub mod llm;
pub mod llm_worker;
pub mod server;
pub mod whisper;
pub mod whisper_worker;
pub mod worker;

/// Whether this build runs models on CUDA GPUs (the `cuda` feature). Without it a worker
/// refuses `--device cuda…`, and the gateway places every pool on the CPU.
pub const CUDA: bool = cfg!(feature = "cuda");
