//! surge-loadtest: clients that measure OpenAI-compatible endpoints.
//!
//! So far: `llm-bench` (`src/bin/llm-bench.rs`), which benchmarks an LLM server process
//! (surge's worker or llama.cpp's `llama-server`) on load time, prefill, decode,
//! concurrent-stream throughput, time to first token and peak memory. The open-loop spike
//! load generator is still to come.

pub mod sse;
pub mod stats;
