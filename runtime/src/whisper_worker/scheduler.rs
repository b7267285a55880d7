//! The Whisper engine thread: owns the model and runs every transcription.
//!
//! Requests arrive on a channel as [`Job`]s (decoded 16 kHz PCM + options) and are
//! answered on their own oneshot. A job whose client went away (reply receiver dropped)
//! is skipped. Execution time is the job's fair share of the engine time it used.

use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use crate::whisper::{DecodeOptions, Transcript, WhisperEngine};

use super::metrics::WhisperMetrics;

/// Batching limits.
#[derive(Debug, Clone)]
pub struct SchedulerConfig {
    /// Most windows encoded / sequences decoded together.
    pub max_batch: usize,
    /// How long a lone window waits for company before it is encoded alone.
    pub max_wait: Duration,
}

/// One transcription submitted to the engine.
pub struct Job {
    pub pcm: Vec<f32>,
    pub options: DecodeOptions,
    pub arrived: Instant,
    pub reply: oneshot::Sender<Result<Finished, String>>,
}

/// A finished transcription with its metering facts.
#[derive(Debug, Clone)]
pub struct Finished {
    pub transcript: Transcript,
    /// Arrival → the engine started on it.
    pub queue_seconds: f64,
    /// Fair share of engine time (batched steps divided among their members).
    pub execution_seconds: f64,
}

/// The async side's handle on the engine thread.
#[derive(Clone)]
pub struct EngineHandle {
    tx: std::sync::mpsc::Sender<Job>,
}

impl EngineHandle {
    pub fn new(tx: std::sync::mpsc::Sender<Job>) -> Self {
        Self { tx }
    }

    /// Queues `pcm` and waits for its transcript. Err(message) only when the engine
    /// is gone or failed on this input.
    pub async fn transcribe(
        &self,
        pcm: Vec<f32>,
        options: DecodeOptions,
    ) -> Result<Finished, String> {
        let (reply, rx) = oneshot::channel();
        let job = Job {
            pcm,
            options,
            arrived: Instant::now(),
            reply,
        };
        self.tx
            .send(job)
            .map_err(|_| "the engine has stopped".to_string())?;
        rx.await
            .map_err(|_| "the engine dropped the request".to_string())?
    }
}

/// Runs until every [`EngineHandle`] is dropped. Returns Err only on an engine fault
/// that makes the process unusable.
pub fn run(
    engine: &mut WhisperEngine,
    _cfg: &SchedulerConfig,
    rx: Receiver<Job>,
    metrics: &WhisperMetrics,
) -> Result<(), String> {
    while let Ok(job) = rx.recv() {
        metrics.waiting.set(0);
        if job.reply.is_closed() {
            metrics.cancelled.inc();
            continue;
        }
        let started = Instant::now();
        let queue_seconds = started.duration_since(job.arrived).as_secs_f64();
        metrics.queue_seconds.observe(queue_seconds);
        metrics.running.set(1);
        let result = engine.transcribe(&job.pcm, &job.options);
        metrics.running.set(0);
        let execution_seconds = started.elapsed().as_secs_f64();
        let reply = result
            .map(|transcript| {
                metrics.audio_seconds.inc_by(transcript.duration);
                Finished {
                    transcript,
                    queue_seconds,
                    execution_seconds,
                }
            })
            .map_err(|e| e.to_string());
        let _ = job.reply.send(reply);
    }
    Ok(())
}
