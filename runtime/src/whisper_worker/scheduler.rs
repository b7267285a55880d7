//! The Whisper engine thread: owns the model and batches every transcription.
//!
//! Requests arrive on a channel as [`Job`]s (decoded 16 kHz PCM + options) and are
//! answered on their own oneshot. Each request becomes a [`Task`] (a state machine over
//! its 30 s windows); every loop iteration the engine
//!
//! 1. takes in new jobs (computing their log-mel), waiting up to `max_wait` for company
//!    when the only work is a lone window to encode,
//! 2. drops tasks whose client went away (reply receiver dropped),
//! 3. runs one decode step for up to `max_batch` decoding tasks together, or, when no
//!    task is decoding, encodes the next window of up to `max_encode_batch` tasks,
//!
//! and answers tasks that finished. Windows encoded together are decoded together, and
//! a long recording's windows take turns with other requests, so a short request is
//! not stuck behind a long one. Decoding first means a new window is encoded only when
//! the current ones are done: on a CPU, where batching gains little (measured: encoder
//! ~10% slower per window in fours, decoder ~20% faster per token in fours), this
//! keeps requests close to first-come first-served, which measured the best latency
//! and throughput; on a GPU, `max_encode_batch` windows share every step. Each task's
//! execution time is its fair share of the steps it took part in (step time ÷ members).

use std::sync::mpsc::{Receiver, RecvTimeoutError, TryRecvError};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use crate::whisper::transcribe::Task;
use crate::whisper::{DecodeOptions, Transcript, WhisperEngine};

use super::metrics::WhisperMetrics;

/// Batching limits.
#[derive(Debug, Clone)]
pub struct SchedulerConfig {
    /// Most sequences decoded together.
    pub max_batch: usize,
    /// Most windows encoded together. On a CPU 1 is fastest: the encoder is
    /// compute-bound and four windows at once measured ~10% slower per window.
    pub max_encode_batch: usize,
    /// How long a lone window waits for company before it is encoded alone (only
    /// when `max_encode_batch` > 1).
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
    /// When it was admitted, last encoded, first decoded and finished (for traces).
    pub times: Times,
}

/// The instants of one transcription in the engine.
#[derive(Debug, Clone, Copy)]
pub struct Times {
    pub arrived: Instant,
    pub admitted: Instant,
    /// The end of the last encoder step it took part in.
    pub encoded: Option<Instant>,
    /// The start of the first decoder step it took part in.
    pub decoding: Option<Instant>,
    pub finished: Instant,
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

/// A job the engine is working on.
struct Active {
    task: Task,
    reply: oneshot::Sender<Result<Finished, String>>,
    queue_seconds: f64,
    execution_seconds: f64,
    times: Times,
}

/// Runs until every [`EngineHandle`] is dropped and the last task is answered. Returns
/// Err only on an engine fault that makes the process unusable.
pub fn run(
    engine: &mut WhisperEngine,
    cfg: &SchedulerConfig,
    rx: Receiver<Job>,
    metrics: &WhisperMetrics,
) -> Result<(), String> {
    let max_batch = cfg.max_batch.max(1);
    let max_encode = cfg.max_encode_batch.max(1);
    let mut active: Vec<Active> = Vec::new();
    let mut open = true;
    loop {
        // 1. intake: block when idle; otherwise take what is there.
        if active.is_empty() {
            if !open {
                return Ok(());
            }
            match rx.recv() {
                Ok(job) => admit(engine, job, &mut active, metrics),
                Err(_) => return Ok(()),
            }
        }
        while let Some(job) = next_job(&rx, &mut open, None) {
            admit(engine, job, &mut active, metrics);
        }
        if !cfg.max_wait.is_zero() && max_encode > 1 && open {
            let deadline = Instant::now() + cfg.max_wait;
            while lone_encode(&active, max_encode) {
                let left = deadline.saturating_duration_since(Instant::now());
                match next_job(&rx, &mut open, Some(left)) {
                    Some(job) => admit(engine, job, &mut active, metrics),
                    None => break,
                }
            }
        }
        // 2. cancellations.
        active.retain(|a| {
            let gone = a.reply.is_closed();
            if gone {
                metrics.cancelled.inc();
            }
            !gone
        });
        metrics.running.set(active.len() as i64);
        if active.is_empty() {
            continue;
        }
        // 3./4. decode while anyone is decoding; otherwise encode the next windows.
        let decode: Vec<usize> = (0..active.len())
            .filter(|&i| active[i].task.is_decoding())
            .take(max_batch)
            .collect();
        if !decode.is_empty() {
            step(&mut active, &decode, "decode", metrics, |tasks| {
                engine.decode_step(tasks)
            })?;
        } else {
            let encode: Vec<usize> = (0..active.len())
                .filter(|&i| active[i].task.needs_encode())
                .take(max_encode)
                .collect();
            step(&mut active, &encode, "encode", metrics, |tasks| {
                engine.encode(tasks)
            })?;
        }
        // Answer finished tasks.
        let mut i = 0;
        while i < active.len() {
            if active[i].task.is_done() {
                let a = active.swap_remove(i);
                let transcript = a.task.into_transcript();
                metrics.audio_seconds.inc_by(transcript.duration);
                let _ = a.reply.send(Ok(Finished {
                    transcript,
                    queue_seconds: a.queue_seconds,
                    execution_seconds: a.execution_seconds,
                    times: Times {
                        finished: Instant::now(),
                        ..a.times
                    },
                }));
            } else {
                i += 1;
            }
        }
        metrics.running.set(active.len() as i64);
    }
}

/// The next job, waiting at most `wait` (`None`: not at all). Marks the channel closed
/// when every handle is gone.
fn next_job(rx: &Receiver<Job>, open: &mut bool, wait: Option<Duration>) -> Option<Job> {
    if !*open {
        return None;
    }
    let got = match wait {
        None => rx
            .try_recv()
            .map_err(|e| matches!(e, TryRecvError::Disconnected)),
        Some(d) => rx
            .recv_timeout(d)
            .map_err(|e| matches!(e, RecvTimeoutError::Disconnected)),
    };
    match got {
        Ok(job) => Some(job),
        Err(disconnected) => {
            if disconnected {
                *open = false;
            }
            None
        }
    }
}

/// True when the only work is fewer than `max_batch` windows to encode: worth waiting
/// briefly for more requests to share the encoder step.
fn lone_encode(active: &[Active], max_batch: usize) -> bool {
    let encoding = active.iter().filter(|a| a.task.needs_encode()).count();
    encoding > 0 && encoding < max_batch && active.iter().all(|a| !a.task.is_decoding())
}

/// Turns a job into a task (its log-mel is computed here, charged to it alone).
fn admit(engine: &WhisperEngine, job: Job, active: &mut Vec<Active>, metrics: &WhisperMetrics) {
    if job.reply.is_closed() {
        metrics.cancelled.inc();
        return;
    }
    let started = Instant::now();
    let queue_seconds = started.duration_since(job.arrived).as_secs_f64();
    metrics.queue_seconds.observe(queue_seconds);
    match engine.new_task(&job.pcm, job.options) {
        Ok(task) => active.push(Active {
            task,
            reply: job.reply,
            queue_seconds,
            execution_seconds: started.elapsed().as_secs_f64(),
            times: Times {
                arrived: job.arrived,
                admitted: started,
                encoded: None,
                decoding: None,
                finished: started,
            },
        }),
        Err(e) => {
            let _ = job.reply.send(Err(e.to_string()));
        }
    }
    metrics.running.set(active.len() as i64);
}

/// Runs one batched engine step over `members` of `active` and shares its time out.
fn step(
    active: &mut [Active],
    members: &[usize],
    kind: &str,
    metrics: &WhisperMetrics,
    run: impl FnOnce(&mut [&mut Task]) -> crate::whisper::Result<usize>,
) -> Result<(), String> {
    let started = Instant::now();
    let mut tasks: Vec<&mut Task> = active
        .iter_mut()
        .enumerate()
        .filter(|(i, _)| members.contains(i))
        .map(|(_, a)| &mut a.task)
        .collect();
    let ran = run(&mut tasks).map_err(|e| format!("{kind} step: {e}"))?;
    let seconds = started.elapsed().as_secs_f64();
    metrics
        .step_seconds
        .with_label_values(&[kind])
        .observe(seconds);
    metrics
        .batch_size
        .with_label_values(&[kind])
        .observe(ran as f64);
    let share = seconds / members.len().max(1) as f64;
    let ended = Instant::now();
    for &i in members {
        let a = &mut active[i];
        a.execution_seconds += share;
        if kind == "encode" {
            a.times.encoded = Some(ended);
        } else {
            a.times.decoding.get_or_insert(started);
        }
    }
    Ok(())
}
