//! Continuous batching on one dedicated engine thread.
//!
//! The thread owns the model (candle's CPU thread pool is process-wide, so every forward
//! runs here) and two queues: `waiting` (arrived, not admitted) and `running` (holding a
//! KV cache). Every step it admits waiting sequences while the batch and the KV budget
//! allow, feeds each running sequence either its next prompt chunk (prefill, chunked so a
//! long prompt cannot stall the others) or its last sampled token (decode), runs ONE
//! packed forward, samples, and streams each sequence's text to its request.
//!
//! A request whose client went away (its event receiver dropped) is removed before the
//! next step, which frees its KV cache.

use std::collections::VecDeque;
use std::sync::mpsc::{Receiver, TryRecvError};
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::mpsc::UnboundedSender;

use crate::llm::tokenizer::TextStream;
use crate::llm::{logits_rows, BatchItem, Constraint, LlmModel, Sampler, SeqCache, Tokenizer};

use super::metrics::{prompt_length_bucket, WorkerMetrics};
use super::prefix_cache::PrefixCache;
use super::stop::StopMatcher;
use super::validate::Job;

#[path = "admission.rs"]
mod admission;
use admission::{admit, share_running_prefixes};

/// Scheduler limits.
#[derive(Debug, Clone)]
pub struct SchedulerConfig {
    pub max_num_seqs: usize,
    /// KV-cache tokens all admitted sequences may reserve together.
    pub kv_budget_tokens: usize,
    /// Most prompt tokens prefilled in one step, across sequences.
    pub prefill_chunk: usize,
    /// Start sequences from prefixes already computed: finished sequences' KV caches
    /// (kept while the budget allows) and running sequences' (copied).
    pub prefix_cache: bool,
}

/// A sequence submitted to the engine.
pub struct SeqRequest {
    pub job: Job,
    pub events: UnboundedSender<SeqEvent>,
    pub arrived: Instant,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    Stop,
    Length,
}

impl FinishReason {
    pub fn as_str(self) -> &'static str {
        match self {
            FinishReason::Stop => "stop",
            FinishReason::Length => "length",
        }
    }
}

/// A generated token with its log-probabilities, when asked for.
#[derive(Debug, Clone)]
pub struct TokenLogprob {
    pub token: String,
    pub logprob: f32,
    pub top: Vec<(String, f32)>,
}

/// Metering facts of one finished sequence.
#[derive(Debug, Clone, Default)]
pub struct SeqUsage {
    pub prompt_tokens: usize,
    /// Prompt tokens whose keys and values came from the prefix cache.
    pub cached_tokens: usize,
    pub completion_tokens: usize,
    pub queue_seconds: f64,
    /// The sequence's fair share of every step it took part in (step time ÷ sequences).
    pub execution_seconds: f64,
    pub time_to_first_token: f64,
    /// When it arrived, was admitted, made its first token and finished (for traces).
    pub times: Option<SeqTimes>,
}

/// The instants of one sequence's life in the engine.
#[derive(Debug, Clone, Copy)]
pub struct SeqTimes {
    pub arrived: Instant,
    pub admitted: Instant,
    /// Sequences running once it joined (itself included).
    pub batch_at_admission: usize,
    pub first_token: Option<Instant>,
    pub finished: Instant,
}

/// What a sequence has used up to an event.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Progress {
    pub completion_tokens: usize,
    pub execution_seconds: f64,
}

#[derive(Debug, Clone)]
pub enum SeqEvent {
    /// Newly emitted text (may be empty while held back for stop matching) and the log
    /// probabilities of the tokens it came from.
    Delta {
        text: String,
        logprobs: Vec<TokenLogprob>,
        /// The sequence's use so far (metering of a stream cut short).
        so_far: Progress,
    },
    Done {
        reason: FinishReason,
        usage: SeqUsage,
    },
    Error(String),
}

struct Running {
    req: SeqRequest,
    cache: SeqCache,
    sampler: Sampler,
    /// Prompt tokens already in the cache.
    prefilled: usize,
    /// Of those, the ones copied from the prefix cache.
    cached: usize,
    /// Every sampled token, in order (the cache holds the prompt, then these but the
    /// last); its length is the completion token count.
    output: Vec<u32>,
    /// Sampled, not yet fed back.
    next_input: Option<u32>,
    text: TextStream,
    stop: StopMatcher,
    admitted: Instant,
    batch_at_admission: usize,
    first_token: Option<Instant>,
    execution: f64,
    reserved: usize,
}

impl Running {
    fn progress(&self) -> Progress {
        Progress {
            completion_tokens: self.output.len(),
            execution_seconds: self.execution,
        }
    }
}

/// Runs the engine loop until every sender is gone. Returns an error if the model fails;
/// every request then holding a place gets an error event first.
pub fn run(
    model: &LlmModel,
    tok: &Tokenizer,
    eos: &[u32],
    cfg: &SchedulerConfig,
    rx: Receiver<SeqRequest>,
    metrics: &WorkerMetrics,
) -> Result<(), String> {
    let mut waiting: VecDeque<SeqRequest> = VecDeque::new();
    let mut running: Vec<Running> = Vec::new();
    let mut reserved = 0usize;
    let mut prefix = PrefixCache::default();
    metrics.kv_tokens_capacity.set(cfg.kv_budget_tokens as i64);
    // Fault injection for the engine-failure tests: panic after this many steps.
    let panic_after: Option<u64> = std::env::var("SURGE_FAULT_ENGINE_PANIC_AFTER_STEPS")
        .ok()
        .and_then(|v| v.parse().ok());
    let mut steps = 0u64;
    loop {
        if waiting.is_empty() && running.is_empty() {
            match rx.recv() {
                Ok(r) => waiting.push_back(r),
                Err(_) => return Ok(()),
            }
        }
        loop {
            match rx.try_recv() {
                Ok(r) => waiting.push_back(r),
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) if !waiting.is_empty() || !running.is_empty() => {
                    break
                }
                Err(TryRecvError::Disconnected) => return Ok(()),
            }
        }

        // Clients that went away: drop their sequences (and KV caches) now.
        let before = waiting.len() + running.len();
        waiting.retain(|r| !r.events.is_closed());
        running.retain(|s| {
            let keep = !s.req.events.is_closed();
            if !keep {
                reserved -= s.reserved;
            }
            keep
        });
        metrics
            .cancelled
            .inc_by((before - waiting.len() - running.len()) as u64);

        admit(
            &mut waiting,
            &mut running,
            &mut reserved,
            &mut prefix,
            model,
            cfg,
            metrics,
        );
        metrics.running.set(running.len() as i64);
        metrics.waiting.set(waiting.len() as i64);
        metrics.kv_tokens_reserved.set(reserved as i64);
        if running.is_empty() {
            continue;
        }

        if cfg.prefix_cache {
            share_running_prefixes(&mut running, metrics);
        }
        steps += 1;
        if panic_after.is_some_and(|n| steps > n) {
            panic!("injected engine fault after {} steps", steps - 1);
        }
        if let Err(e) = step(&mut running, model, tok, eos, cfg, metrics) {
            let msg = format!("engine step failed: {e}");
            for s in running.drain(..) {
                let _ = s.req.events.send(SeqEvent::Error(msg.clone()));
            }
            for r in waiting.drain(..) {
                let _ = r.events.send(SeqEvent::Error(msg.clone()));
            }
            return Err(msg);
        }

        // Retire finished sequences: their caches go to the prefix cache (when it is on),
        // which keeps what the KV budget's unreserved part holds.
        let mut i = 0;
        while i < running.len() {
            let s = &running[i];
            if s.next_input.is_some() || s.prefilled < s.req.job.prompt.len() {
                i += 1;
                continue;
            }
            let s = running.remove(i);
            reserved -= s.reserved;
            if cfg.prefix_cache {
                let mut tokens = s.req.job.prompt;
                tokens.extend(s.output);
                prefix.insert(tokens, s.cache);
                prefix.shrink_to(cfg.kv_budget_tokens.saturating_sub(reserved));
            }
        }
        metrics.prefix_cache_tokens.set(prefix.tokens() as i64);
    }
}

/// One packed forward over every running sequence, then sampling and streaming.
fn step(
    running: &mut [Running],
    model: &LlmModel,
    tok: &Tokenizer,
    eos: &[u32],
    cfg: &SchedulerConfig,
    metrics: &WorkerMetrics,
) -> Result<(), String> {
    // Which sequences take part and with which tokens. Decodes always go; prefill chunks
    // share what is left of the per-step prefill budget, oldest first.
    let mut budget = cfg.prefill_chunk.max(1);
    let mut plan: Vec<(usize, Vec<u32>, bool)> = Vec::new(); // (index, tokens, samples after)
    for (i, s) in running.iter().enumerate() {
        if let Some(t) = s.next_input {
            plan.push((i, vec![t], true));
        } else if s.prefilled < s.req.job.prompt.len() && budget > 0 {
            let rest = &s.req.job.prompt[s.prefilled..];
            let take = rest.len().min(budget);
            budget -= take;
            plan.push((i, rest[..take].to_vec(), take == rest.len()));
        }
    }
    if plan.is_empty() {
        return Ok(());
    }
    let started = Instant::now();
    let (logits, mut masks) = {
        // Split borrows: each planned sequence lends its cache to the batch, and a
        // constrained one that samples after this step its grammar to the mask thread.
        let mut caches: Vec<&mut SeqCache> = Vec::with_capacity(plan.len());
        let mut grammars: Vec<(usize, &mut Constraint)> = Vec::new();
        for (i, s) in running.iter_mut().enumerate() {
            let Some(p) = plan.iter().find(|p| p.0 == i) else {
                continue;
            };
            caches.push(&mut s.cache);
            if let (true, Some(c)) = (p.2, s.req.job.constraint.as_mut()) {
                grammars.push((i, c));
            }
        }
        let mut batch: Vec<BatchItem> = Vec::with_capacity(plan.len());
        for (cache, (_, tokens, _)) in caches.into_iter().zip(plan.iter()) {
            batch.push(BatchItem { tokens, cache });
        }
        // The masks depend only on tokens already sampled: with several, they are
        // computed on a thread of their own while the forward pass runs. One is cheaper
        // inline (measured on 2 cores: a thread per step and its contention with the
        // kernel pool cost more than one mask).
        let masks = |grammars: Vec<(usize, &mut Constraint)>| -> Vec<_> {
            grammars
                .into_iter()
                .map(|(i, c)| (i, c.allowed()))
                .collect()
        };
        if grammars.len() < 2 {
            let masks = masks(grammars);
            (model.step(&mut batch), masks)
        } else {
            std::thread::scope(|scope| {
                let masks = std::thread::Builder::new()
                    .name("surge-grammar".into())
                    .spawn_scoped(scope, move || masks(grammars));
                let logits = model.step(&mut batch);
                let masks = match masks {
                    Ok(h) => h.join().expect("the grammar mask thread panicked"),
                    Err(e) => vec![(usize::MAX, Err(format!("no mask thread: {e}")))],
                };
                (logits, masks)
            })
        }
    };
    let logits = logits.map_err(|e| e.to_string())?;
    let rows = logits_rows(&logits).map_err(|e| e.to_string())?;
    // Sampling is part of the step's cost (billed as execution): timed with the forward.
    // A grammar's mask applies before the sampler; its failure (never expected: the
    // grammar compiled at validation) ends only its own sequence.
    let mut samples = Vec::with_capacity(plan.len());
    for ((i, _, samples_after), mut row) in plan.iter().zip(rows) {
        if !samples_after {
            samples.push(None);
            continue;
        }
        let s = &mut running[*i];
        let masked = match masks.iter().position(|(k, _)| k == i) {
            Some(k) => masks.swap_remove(k).1.map(|m| m.apply(&mut row)),
            None if s.req.job.constraint.is_some() => Err("no mask was computed".into()),
            None => Ok(()),
        };
        samples.push(Some(match masked {
            Ok(()) => s.sampler.sample(&row).map_err(|e| e.to_string()),
            Err(e) => Err(format!("output grammar failed: {e}")),
        }));
    }
    let elapsed = started.elapsed().as_secs_f64();
    metrics.step_seconds.observe(elapsed);
    metrics.batch_size.observe(plan.len() as f64);
    let share = elapsed / plan.len() as f64;

    for ((i, tokens, _), sampled) in plan.into_iter().zip(samples) {
        let s = &mut running[i];
        s.execution += share;
        if s.next_input.take().is_none() {
            s.prefilled += tokens.len();
            metrics.prompt_tokens.inc_by(tokens.len() as u64);
        }
        let sampled = match sampled {
            None => continue,
            Some(Ok(sampled)) => sampled,
            Some(Err(e)) => {
                let _ = s.req.events.send(SeqEvent::Error(e));
                continue;
            }
        };
        metrics.generated_tokens.inc();
        s.output.push(sampled.token);
        if s.first_token.is_none() {
            let now = Instant::now();
            s.first_token = Some(now);
            metrics
                .ttft_seconds
                .observe(now.duration_since(s.req.arrived).as_secs_f64());
            let prompt = s.req.job.prompt.len();
            let prefill = now.duration_since(s.admitted).as_secs_f64();
            if prefill > 0.0 {
                metrics
                    .prefill_tokens_per_second
                    .with_label_values(&[prompt_length_bucket(prompt)])
                    .observe((prompt - s.cached) as f64 / prefill);
            }
        }
        let logprobs = sampled
            .logprob
            .map(|lp| {
                vec![TokenLogprob {
                    token: token_text(tok, sampled.token),
                    logprob: lp,
                    top: sampled
                        .top_logprobs
                        .iter()
                        .map(|&(t, l)| (token_text(tok, t), l))
                        .collect(),
                }]
            })
            .unwrap_or_default();
        if !s.req.job.ignore_eos && eos.contains(&sampled.token) {
            // The end-of-turn token is not part of the answer: neither its text nor its
            // log-probability is reported (as OpenAI does).
            flush_and_finish(s, FinishReason::Stop);
            continue;
        }
        let delta = s
            .text
            .push(tok, sampled.token)
            .map_err(|e| e.to_string())?
            .unwrap_or_default();
        // The grammar is complete: nothing but the end may follow, so end here.
        let complete = match s
            .req
            .job
            .constraint
            .as_mut()
            .map(|c| c.advance(sampled.token))
        {
            None | Some(Ok(false)) => false,
            Some(Ok(true)) => true,
            Some(Err(e)) => {
                let _ = s
                    .req
                    .events
                    .send(SeqEvent::Error(format!("output grammar failed: {e}")));
                continue;
            }
        };
        let (text, stopped) = s.stop.push(&delta);
        let _ = s.req.events.send(SeqEvent::Delta {
            text,
            logprobs,
            so_far: s.progress(),
        });
        if stopped {
            finish(s, FinishReason::Stop);
        } else if complete {
            flush_and_finish(s, FinishReason::Stop);
        } else if s.output.len() >= s.req.job.max_new_tokens
            || s.cache.len() + 1 >= s.cache.max_len()
        {
            flush_and_finish(s, FinishReason::Length);
        } else {
            s.next_input = Some(sampled.token);
        }
    }
    Ok(())
}

/// Sends what the stop matcher still holds back, then finishes.
fn flush_and_finish(s: &mut Running, reason: FinishReason) {
    let tail = s.stop.flush();
    if !tail.is_empty() {
        let _ = s.req.events.send(SeqEvent::Delta {
            text: tail,
            logprobs: vec![],
            so_far: s.progress(),
        });
    }
    finish(s, reason);
}

fn finish(s: &mut Running, reason: FinishReason) {
    s.next_input = None;
    let usage = SeqUsage {
        prompt_tokens: s.req.job.prompt.len(),
        cached_tokens: s.cached,
        completion_tokens: s.output.len(),
        queue_seconds: s.admitted.duration_since(s.req.arrived).as_secs_f64(),
        execution_seconds: s.execution,
        time_to_first_token: s
            .first_token
            .map(|t| t.duration_since(s.req.arrived).as_secs_f64())
            .unwrap_or_default(),
        times: Some(SeqTimes {
            arrived: s.req.arrived,
            admitted: s.admitted,
            batch_at_admission: s.batch_at_admission,
            first_token: s.first_token,
            finished: Instant::now(),
        }),
    };
    let _ = s.req.events.send(SeqEvent::Done { reason, usage });
}

/// The text of one token as OpenAI's logprobs show it (special tokens included).
fn token_text(tok: &Tokenizer, id: u32) -> String {
    tok.decode(&[id], false).unwrap_or_default()
}

/// Cloneable handle the HTTP side uses to submit sequences.
#[derive(Clone)]
pub struct EngineHandle {
    tx: std::sync::mpsc::Sender<SeqRequest>,
    pub metrics: Arc<WorkerMetrics>,
}

impl EngineHandle {
    pub fn new(tx: std::sync::mpsc::Sender<SeqRequest>, metrics: Arc<WorkerMetrics>) -> Self {
        EngineHandle { tx, metrics }
    }

    /// Queues a sequence; `None` when the engine thread is gone.
    pub fn submit(
        &self,
        job: Job,
        arrived: Instant,
    ) -> Option<tokio::sync::mpsc::UnboundedReceiver<SeqEvent>> {
        let (events, rx) = tokio::sync::mpsc::unbounded_channel();
        self.tx
            .send(SeqRequest {
                job,
                events,
                arrived,
            })
            .ok()?;
        Some(rx)
    }
}
