//! Admission: waiting requests become running sequences while the batch and the KV
//! budget have room, starting from the longest prefix of their prompt that is already
//! computed — in the prefix cache (finished sequences) or in a sequence still running.

use std::collections::VecDeque;
use std::time::Instant;

use crate::llm::tokenizer::TextStream;
use crate::llm::{LlmModel, Sampler};

use super::super::metrics::WorkerMetrics;
use super::super::prefix_cache::{common_prefix_len, PrefixCache, MIN_REUSE};
use super::super::stop::StopMatcher;
use super::{Running, SchedulerConfig, SeqEvent, SeqRequest};

/// Admits waiting sequences in arrival order while the batch and the KV budget have room.
/// Each reserves prompt + max_new_tokens up front, so an admitted sequence never has to be
/// preempted; the validator already rejected requests that could never fit.
pub(super) fn admit(
    waiting: &mut VecDeque<SeqRequest>,
    running: &mut Vec<Running>,
    reserved: &mut usize,
    prefix: &mut PrefixCache,
    model: &LlmModel,
    cfg: &SchedulerConfig,
    metrics: &WorkerMetrics,
) {
    while running.len() < cfg.max_num_seqs {
        let Some(front) = waiting.front() else { break };
        let need = front.job.prompt.len() + front.job.max_new_tokens;
        if *reserved + need > cfg.kv_budget_tokens && !running.is_empty() {
            break;
        }
        // Kept prefixes give way to running sequences.
        prefix.shrink_to(cfg.kv_budget_tokens.saturating_sub(*reserved + need));
        let Some(req) = waiting.pop_front() else {
            break;
        };
        let sampler = match Sampler::new(req.job.sampling.clone()) {
            Ok(s) => s,
            Err(e) => {
                let _ = req.events.send(SeqEvent::Error(e.to_string()));
                continue;
            }
        };
        let now = Instant::now();
        metrics
            .queue_seconds
            .observe(now.duration_since(req.arrived).as_secs_f64());
        *reserved += need;
        let mut cache = model.new_sequence_cache();
        let cached = if cfg.prefix_cache {
            metrics.prefix_cache_lookups.inc();
            // A failed copy only costs the reuse: the prompt is prefilled from scratch.
            prefix
                .reuse(&req.job.prompt, &mut cache)
                .unwrap_or_else(|e| {
                    tracing::warn!("prefix cache: {e}");
                    cache.reset();
                    0
                })
        } else {
            0
        };
        if cached > 0 {
            metrics.prefix_cache_hits.inc();
            metrics.prefix_cache_hit_tokens.inc_by(cached as u64);
        }
        running.push(Running {
            stop: StopMatcher::new(req.job.stop.clone()),
            req,
            cache,
            sampler,
            prefilled: cached,
            cached,
            output: Vec::new(),
            next_input: None,
            text: TextStream::new(true),
            admitted: now,
            batch_at_admission: running.len() + 1,
            first_token: None,
            execution: 0.0,
            reserved: need,
        });
    }
}

/// Gives each sequence that has not prefilled anything of its own yet the longest prefix
/// of its prompt that another running sequence has already computed, when that is longer
/// than what it has. A burst of requests sharing a system prompt thus prefills it once:
/// the first admitted takes the step's prefill budget, the others copy its keys and
/// values at the next step instead of computing them again. Exact like the prefix cache
/// (the kernels compute each row the same way whatever its chunk); a copy, so the source
/// sequence is never touched.
pub(super) fn share_running_prefixes(running: &mut [Running], metrics: &WorkerMetrics) {
    for i in 0..running.len() {
        let s = &running[i];
        let prompt = &s.req.job.prompt;
        if s.prefilled != s.cached || s.prefilled + 1 >= prompt.len() {
            continue;
        }
        let limit = prompt.len() - 1;
        let best = running
            .iter()
            .enumerate()
            .filter(|&(j, _)| j != i)
            .map(|(j, t)| {
                let known = t.req.job.prompt.iter().chain(&t.output).take(t.cache.len());
                (j, common_prefix_len(known, prompt).min(limit))
            })
            .max_by_key(|&(_, n)| n);
        let Some((j, n)) = best.filter(|&(_, n)| n >= s.prefilled + MIN_REUSE) else {
            continue;
        };
        let (src, dst) = if j < i {
            let (a, b) = running.split_at_mut(i);
            (&a[j], &mut b[0])
        } else {
            let (a, b) = running.split_at_mut(j);
            (&b[0], &mut a[i])
        };
        dst.cache.reset();
        match dst.cache.copy_prefix(&src.cache, n) {
            Ok(()) => {
                metrics.prefix_cache_hits.inc();
                metrics
                    .prefix_cache_hit_tokens
                    .inc_by((n - dst.cached) as u64);
                (dst.prefilled, dst.cached) = (n, n);
            }
            Err(e) => {
                // Only the reuse is lost: the prompt is prefilled from scratch.
                tracing::warn!("prefix sharing: {e}");
                dst.cache.reset();
                (dst.prefilled, dst.cached) = (0, 0);
            }
        }
    }
}
