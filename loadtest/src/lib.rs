//! surge-loadtest: clients that measure OpenAI-compatible endpoints.
//!
//! - `llm-bench` (`src/bin/llm-bench.rs`) benchmarks an LLM server process (surge's worker
//!   or llama.cpp's `llama-server`) on load time, prefill, decode, concurrent-stream
//!   throughput, time to first token and peak memory.
//! - `whisper-bench` (`src/bin/whisper-bench.rs`) benchmarks surge's Whisper worker against
//!   faster-whisper (`peers/faster_whisper_peer.py`) on load time, real-time factor,
//!   concurrent throughput, peak memory and WER, in one run.
//! - `gateway-bench` (`src/bin/gateway-bench.rs`) measures `surge serve`: the latency and
//!   requests/s it costs over a direct worker (alternating in one run), and cold starts
//!   from zero workers to the first token (LLM) or the full response (Whisper).
//! - [`wer`] and [`speech`] are for transcription tests too: word error rate with the
//!   normalisation of `testdata/speech/`, clip synthesis, and faster-whisper's recorded WER
//!   on those clips (the bar a transcript must clear).
//!
//! The open-loop spike load generator is still to come.

pub mod server;
pub mod speech;
pub mod sse;
pub mod stats;
pub mod transcribe;
pub mod wer;
