//! surge-loadtest: clients that measure OpenAI-compatible endpoints.
//!
//! - `surge-loadtest` (`src/bin/surge-loadtest.rs`) is the load tester: open-loop
//!   arrival schedules (constant, Poisson, steps, spikes) or a closed loop of N users,
//!   chat (streaming or not) and transcription classes from a TOML scenario, TTFT /
//!   inter-token / end-to-end latency from the intended send time, goodput against SLO
//!   thresholds, the target's `/metrics` on the same timeline, a JSON report, an SVG
//!   plot and `--fail-on` assertions for CI. One concern per module:
//!   [`schedule`] → [`workload`] → [`runner`] / [`client`] (+ [`sse`], [`scrape`],
//!   [`progress`]) → [`report`] / [`timeline`] → [`table`], [`plot`], [`failon`];
//!   [`run`] wires them together, [`scenario`] and [`dist`] read the file.
//! - `llm-bench` (`src/bin/llm-bench.rs`) benchmarks an LLM server process (surge's worker
//!   or llama.cpp's `llama-server`) on load time, prefill, decode, concurrent-stream
//!   throughput, time to first token and peak memory.
//! - `whisper-bench` (`src/bin/whisper-bench/`) benchmarks surge's Whisper worker against
//!   faster-whisper (`peers/faster_whisper_peer.py`) on load time, real-time factor,
//!   concurrent throughput, peak memory and WER, in one run.
//! - `gateway-bench` (`src/bin/gateway-bench/`) measures `surge serve`: the latency and
//!   requests/s it costs over a direct worker (alternating in one run), and cold starts
//!   from zero workers to the first token (LLM) or the full response (Whisper).
//! - [`bench`] holds what the three benches share: surge processes on free ports, the
//!   closed loop of clients, `/metrics` polling, the whole-run deadline, table headers.
//! - [`wer`] and [`speech`] are for transcription tests too: word error rate with the
//!   normalisation of `testdata/speech/`, clip synthesis, and faster-whisper's recorded WER
//!   on those clips (the bar a transcript must clear).

pub mod bench;
pub mod client;
pub mod dist;
pub mod failon;
pub mod plot;
pub mod progress;
pub mod report;
pub mod run;
pub mod runner;
pub mod scenario;
pub mod schedule;
pub mod scrape;
pub mod server;
pub mod speech;
pub mod sse;
pub mod stats;
pub mod table;
pub mod timeline;
pub mod transcribe;
pub mod wer;
pub mod workload;
