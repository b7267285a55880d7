//! Per-request logits processing and token choice (OpenAI sampling options).
//!
//! Runs on the CPU over one row of logits per sequence: at a vocabulary of
//! ~50k this is microseconds to a millisecond, small next to a forward step,
//! and keeping it out of the tensor graph lets every request have its own
//! parameters and RNG inside a shared batch.

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use super::error::{LlmError, Result};

/// Sampling options of one request, with OpenAI's meanings and defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SamplingParams {
    /// 0 means greedy (argmax); otherwise logits are divided by it.
    pub temperature: f32,
    /// Nucleus sampling: keep the smallest set of most likely tokens whose
    /// probability mass reaches `top_p` (1 disables it).
    pub top_p: f32,
    /// Keep only the `top_k` most likely tokens (0 disables it).
    pub top_k: usize,
    /// Subtracted once from every token already generated in this request.
    pub presence_penalty: f32,
    /// Subtracted once per previous occurrence in this request's output.
    pub frequency_penalty: f32,
    /// Added to the logits of the given token ids (OpenAI range -100..=100).
    pub logit_bias: HashMap<u32, f32>,
    /// Same seed and same logits give the same tokens; `None` seeds from the OS.
    pub seed: Option<u64>,
    /// Report the log-probability of the chosen token.
    pub logprobs: bool,
    /// Also report this many most likely alternatives (implies `logprobs`).
    pub top_logprobs: usize,
}

impl Default for SamplingParams {
    fn default() -> Self {
        Self {
            temperature: 1.0,
            top_p: 1.0,
            top_k: 0,
            presence_penalty: 0.0,
            frequency_penalty: 0.0,
            logit_bias: HashMap::new(),
            seed: None,
            logprobs: false,
            top_logprobs: 0,
        }
    }
}

impl SamplingParams {
    pub fn greedy() -> Self {
        Self {
            temperature: 0.0,
            ..Self::default()
        }
    }

    pub fn validate(&self) -> Result<()> {
        let fail = |m: String| Err(LlmError::InvalidSampling(m));
        if !self.temperature.is_finite() || self.temperature < 0.0 {
            return fail(format!("temperature {} must be >= 0", self.temperature));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return fail(format!("top_p {} must be in (0, 1]", self.top_p));
        }
        if !self.presence_penalty.is_finite() || !self.frequency_penalty.is_finite() {
            return fail("penalties must be finite".into());
        }
        if let Some((id, b)) = self.logit_bias.iter().find(|(_, b)| !b.is_finite()) {
            return fail(format!("logit_bias for {id} is {b}"));
        }
        Ok(())
    }
}

/// The chosen token and, when requested, log-probabilities.
///
/// Log-probabilities are the log-softmax of the logits after penalties and
/// `logit_bias` but before temperature and top-k/top-p truncation, so greedy
/// and sampled requests report comparable numbers (as vLLM does by default).
#[derive(Debug, Clone, PartialEq)]
pub struct SampledToken {
    pub token: u32,
    pub logprob: Option<f32>,
    /// Most likely tokens first.
    pub top_logprobs: Vec<(u32, f32)>,
}

/// Sampling state of one request: parameters, RNG and output-token counts.
pub struct Sampler {
    params: SamplingParams,
    rng: StdRng,
    counts: HashMap<u32, u32>,
    scratch: Vec<f32>,
}

impl Sampler {
    pub fn new(params: SamplingParams) -> Result<Self> {
        params.validate()?;
        let rng = match params.seed {
            Some(s) => StdRng::seed_from_u64(s),
            None => StdRng::from_os_rng(),
        };
        Ok(Self {
            params,
            rng,
            counts: HashMap::new(),
            scratch: Vec::new(),
        })
    }

    pub fn params(&self) -> &SamplingParams {
        &self.params
    }

    /// Chooses the next token from one row of logits and remembers it for
    /// the presence/frequency penalties of later tokens.
    pub fn sample(&mut self, logits: &[f32]) -> Result<SampledToken> {
        let p = &self.params;
        let mut l = std::mem::take(&mut self.scratch);
        l.clear();
        // NaN would poison comparisons and sums; treat it as impossible.
        l.extend(
            logits
                .iter()
                .map(|&x| if x.is_nan() { f32::NEG_INFINITY } else { x }),
        );
        for (&tok, &count) in &self.counts {
            if let Some(x) = l.get_mut(tok as usize) {
                *x -= p.presence_penalty + p.frequency_penalty * count as f32;
            }
        }
        for (&tok, &bias) in &p.logit_bias {
            match l.get_mut(tok as usize) {
                Some(x) => *x += bias,
                None => {
                    return Err(LlmError::InvalidSampling(format!(
                        "logit_bias token {tok} outside vocabulary of {}",
                        logits.len()
                    )))
                }
            }
        }
        let max = l.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        if max == f32::NEG_INFINITY {
            return Err(LlmError::InvalidSampling(
                "no token has a finite logit".into(),
            ));
        }

        let token = if p.temperature == 0.0 || p.top_k == 1 {
            argmax(&l)
        } else {
            let inv_t = 1.0 / p.temperature;
            let weights: Vec<f32> = l.iter().map(|&x| ((x - max) * inv_t).exp()).collect();
            choose(&weights, p.top_k, p.top_p, &mut self.rng)
        };

        let want_lp = p.logprobs || p.top_logprobs > 0;
        let (logprob, top_logprobs) = if want_lp {
            let lse = max as f64
                + l.iter()
                    .map(|&x| ((x - max) as f64).exp())
                    .sum::<f64>()
                    .ln();
            let lp = |i: u32| (l[i as usize] as f64 - lse) as f32;
            let top = top_n(&l, p.top_logprobs)
                .into_iter()
                .map(|(i, _)| (i, lp(i)))
                .collect();
            (Some(lp(token)), top)
        } else {
            (None, Vec::new())
        };
        *self.counts.entry(token).or_default() += 1;
        self.scratch = l;
        Ok(SampledToken {
            token,
            logprob,
            top_logprobs,
        })
    }
}

/// Index of the largest value; the lowest index wins ties so greedy decoding
/// is reproducible. Whisper's greedy decoding uses it too.
pub(crate) fn argmax(xs: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &x) in xs.iter().enumerate() {
        if x > xs[best] {
            best = i;
        }
    }
    best as u32
}

/// The `n` largest values as (index, value), largest first, ties by index.
fn top_n(xs: &[f32], n: usize) -> Vec<(u32, f32)> {
    let mut v: Vec<(u32, f32)> = xs.iter().enumerate().map(|(i, &x)| (i as u32, x)).collect();
    let n = n.min(v.len());
    let by_desc = |a: &(u32, f32), b: &(u32, f32)| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0));
    if n > 0 && n < v.len() {
        v.select_nth_unstable_by(n - 1, by_desc);
    }
    v.truncate(n);
    v.sort_unstable_by(by_desc);
    v
}

/// Draws an index from unnormalised `weights` after top-k and top-p.
///
/// A full sort of a 50k vocabulary per token would cost more than the rest of
/// sampling, so nucleus truncation without top-k first tries small partial
/// selections (which almost always hold the nucleus) and widens only when
/// they do not.
fn choose(weights: &[f32], top_k: usize, top_p: f32, rng: &mut StdRng) -> u32 {
    let v = weights.len();
    let limit = if top_k == 0 { v } else { top_k.min(v) };
    let total: f64 = weights.iter().map(|&w| w as f64).sum();
    if limit == v && top_p >= 1.0 {
        let mut u = rng.random::<f64>() * total;
        for (i, &w) in weights.iter().enumerate() {
            u -= w as f64;
            if u < 0.0 && w > 0.0 {
                return i as u32;
            }
        }
        return argmax(weights);
    }
    let candidates = if limit < v {
        let mut c = top_n(weights, limit);
        if top_p < 1.0 {
            let pool: f64 = c.iter().map(|x| x.1 as f64).sum();
            nucleus_cut(&mut c, top_p as f64 * pool);
        }
        c
    } else {
        let target = top_p as f64 * total;
        let mut n = v.min(64);
        loop {
            let mut c = top_n(weights, n);
            if nucleus_cut(&mut c, target) || n == v {
                break c;
            }
            n = (n * 8).min(v);
        }
    };
    let mass: f64 = candidates.iter().map(|c| c.1 as f64).sum();
    let mut u = rng.random::<f64>() * mass;
    for &(i, w) in &candidates {
        u -= w as f64;
        if u < 0.0 {
            return i;
        }
    }
    candidates.first().map_or(0, |c| c.0)
}

/// Truncates sorted candidates after the first prefix whose mass reaches
/// `target`; false when the candidates do not reach it.
fn nucleus_cut(c: &mut Vec<(u32, f32)>, target: f64) -> bool {
    let mut acc = 0.0;
    for (idx, item) in c.iter().enumerate() {
        acc += item.1 as f64;
        if acc >= target {
            c.truncate(idx + 1);
            return true;
        }
    }
    false
}

/// Copies `[n, vocab]` logits from any device into one `Vec<f32>` per row.
pub fn logits_rows(logits: &Tensor) -> Result<Vec<Vec<f32>>> {
    Ok(logits
        .to_device(&Device::Cpu)?
        .to_dtype(DType::F32)?
        .to_vec2::<f32>()?)
}

#[cfg(test)]
#[path = "sampling_tests.rs"]
mod tests;
