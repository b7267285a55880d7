//! One request's transcription as a state machine the engine can batch.
//!
//! A [`Task`] walks the recording in 30 s windows the way openai-whisper's
//! `transcribe` does: encode the window at `seek`, decode with timestamp tokens
//! (conditioned on the previous windows' text), cut the output into segments at
//! timestamp pairs, and move `seek` to the last complete segment's end (or past the
//! window). A window whose output looks broken (compressible like a loop, or
//! improbable) is decoded again at the next temperature of the fallback schedule,
//! reusing its encoding; when every temperature fails, the best attempt is kept (not a
//! loop, then likeliest — faster-whisper's rule). Silent windows (no-speech probability high and text
//! improbable) are skipped.
//!
//! On a multilingual model without a given language, the first window first identifies
//! the language (the decoder fed `<|startoftranscript|>` alone, the likeliest language
//! token wins, as in openai-whisper and faster-whisper), then decodes with
//! `<|lang|><|transcribe|>` (or `<|translate|>`) like every later window.
//!
//! The engine drives tasks: [`Task::needs_encode`] → encode → [`Task::start_window`];
//! then [`Task::decode_input`] / [`Task::on_logits`] once per batched decode step
//! until the task is [`Task::is_done`].

use std::io::Write;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::llm::sampling::argmax;

use super::decode::SpecialTokens;
use super::decoder::{CrossKv, SelfCache};
use super::mel::{LogMel, HOP, N_FRAMES, SAMPLE_RATE};
use super::rules::Rules;
use super::transcript::{DecodeOptions, Segment, Transcript};

/// openai-whisper's defaults.
const TEMPERATURES: [f32; 6] = [0.0, 0.2, 0.4, 0.6, 0.8, 1.0];
const COMPRESSION_RATIO_THRESHOLD: f64 = 2.4;
const LOGPROB_THRESHOLD: f64 = -1.0;
const NO_SPEECH_THRESHOLD: f64 = 0.6;
/// Seconds per timestamp token.
const TIME_PRECISION: f64 = 0.02;
/// Mel frames per timestamp step (20 ms / 10 ms).
const FRAMES_PER_TIMESTAMP: usize = 2;

/// What a task needs from the tokenizer and model, shared by all tasks.
pub struct Vocab<'a> {
    pub special: &'a SpecialTokens,
    pub rules: &'a Rules,
    /// Decodes text tokens (timestamps and specials skipped).
    pub detokenize: &'a dyn Fn(&[u32]) -> String,
    /// `<|startofprev|>`, for conditioning on earlier text.
    pub start_of_prev: u32,
    /// `<|nospeech|>` / `<|nocaptions|>`, if the vocabulary has one.
    pub no_speech: Option<u32>,
    pub n_text_ctx: usize,
}

/// The window being decoded.
struct Window {
    cross: CrossKv,
    cache: SelfCache,
    seek: usize,
    /// Content frames inside this window (3000 except at the end).
    frames: usize,
    prompt: Vec<u32>,
    /// Position of `<|startoftranscript|>` in `prompt` (its logits give no-speech).
    sot_index: usize,
    temp_index: usize,
    sampled: Vec<u32>,
    sum_logprob: f64,
    no_speech_prob: f64,
    /// Tokens to feed on the next step: the prompt first, then the last sample.
    pending: Vec<u32>,
    /// The prompt is `<|startoftranscript|>` alone and the next logits pick the language.
    detecting: bool,
    logits_for: Vec<usize>,
    /// The best failed attempt so far, kept in case every temperature fails.
    best: Option<Attempt>,
}

/// One decoding of a window and how it scored.
struct Attempt {
    sampled: Vec<u32>,
    stats: WindowStats,
}

impl Attempt {
    /// faster-whisper's choice when every temperature fails: prefer output that is not
    /// a loop (compression ratio under the threshold), then the likeliest.
    fn better(a: Option<Attempt>, b: Attempt) -> Attempt {
        let key = |x: &Attempt| {
            (
                x.stats.compression_ratio <= COMPRESSION_RATIO_THRESHOLD,
                x.stats.avg_logprob,
            )
        };
        match a {
            Some(a) if key(&a) >= key(&b) => a,
            _ => b,
        }
    }
}

pub struct Task {
    pub mel: LogMel,
    opts: DecodeOptions,
    rng: StdRng,
    seek: usize,
    segments: Vec<Segment>,
    /// Every token kept so far (text and timestamps), for conditioning.
    all_tokens: Vec<u32>,
    /// Conditioning uses `all_tokens[prompt_from..]` (reset after a hot fallback).
    prompt_from: usize,
    window: Option<Window>,
    duration: f64,
    /// The spoken language's code; `None` until the first window detects it.
    language: Option<&'static str>,
}

/// Result of feeding one decode step's logits to a task.
pub enum Progress {
    /// Decode again next step.
    Decoding,
    /// The window is finished; encode the next one.
    NeedsEncode,
    /// The whole recording is transcribed.
    Done,
}

impl Task {
    pub fn new(mel: LogMel, opts: DecodeOptions, vocab_prompt: Vec<u32>) -> Self {
        let duration = mel.content_frames as f64 * HOP as f64 / SAMPLE_RATE as f64;
        let rng = StdRng::seed_from_u64(opts.seed);
        let language = opts.language;
        Self {
            language,
            mel,
            opts,
            rng,
            seek: 0,
            segments: Vec::new(),
            all_tokens: vocab_prompt,
            prompt_from: 0,
            window: None,
            duration,
        }
    }

    /// Whether the next window must be encoded before decoding can go on.
    pub fn needs_encode(&self) -> bool {
        self.window.is_none() && self.seek < self.mel.content_frames
    }

    /// The mel window at `seek` (`[n_mels, 3000]`).
    pub fn window_mel(&self) -> Vec<f32> {
        self.mel.window(self.seek)
    }

    pub fn is_decoding(&self) -> bool {
        self.window.is_some()
    }

    pub fn is_done(&self) -> bool {
        self.window.is_none() && self.seek >= self.mel.content_frames
    }

    /// Starts decoding the window at `seek` from its encoding.
    pub fn start_window(&mut self, cross: CrossKv, cache: SelfCache, v: &Vocab<'_>) {
        let detecting = self.language.is_none();
        let (prompt, sot_index) = if detecting {
            (vec![v.special.sot], 0)
        } else {
            self.window_prompt(v)
        };
        let frames = N_FRAMES.min(self.mel.content_frames - self.seek);
        let temp_index = 0;
        let mut w = Window {
            cross,
            cache,
            seek: self.seek,
            frames,
            prompt,
            sot_index,
            temp_index,
            sampled: Vec::new(),
            sum_logprob: 0.0,
            no_speech_prob: 0.0,
            pending: Vec::new(),
            detecting,
            logits_for: Vec::new(),
            best: None,
        };
        restart(&mut w);
        self.window = Some(w);
    }

    /// The decoding prompt of the window at `seek`: earlier text after `<|startofprev|>`,
    /// then `<|startoftranscript|>` and the language and task tokens. Returns it with
    /// the position of `<|startoftranscript|>`.
    fn window_prompt(&self, v: &Vocab<'_>) -> (Vec<u32>, usize) {
        let mut prompt = Vec::new();
        let history = &self.all_tokens[self.prompt_from..];
        if !history.is_empty() {
            prompt.push(v.start_of_prev);
            let keep = (v.n_text_ctx / 2 - 1).min(history.len());
            prompt.extend_from_slice(&history[history.len() - keep..]);
        }
        let sot_index = prompt.len();
        prompt.push(v.special.sot);
        // The engine checked the language and task against the model when the task was
        // made (and detection picks only the model's languages), so this is never `None`;
        // if it were, the bare `<|startoftranscript|>` is still a valid prompt.
        let language = self.language.unwrap_or("en");
        if let Some(lt) = v.special.lang_task(language, self.opts.task) {
            prompt.extend_from_slice(&lt);
        }
        (prompt, sot_index)
    }

    /// Takes the language-identification logits: the likeliest language becomes the
    /// task's, and the window restarts with the full prompt.
    fn on_language(&mut self, rows: &[f32], v: &Vocab<'_>) -> Progress {
        let detected = v
            .special
            .detect_language(rows)
            .map_or("en", |(code, _)| code);
        self.language = Some(detected);
        let (prompt, sot_index) = self.window_prompt(v);
        let Some(w) = self.window.as_mut() else {
            return Progress::Done;
        };
        w.prompt = prompt;
        w.sot_index = sot_index;
        w.detecting = false;
        restart(w);
        Progress::Decoding
    }

    fn temperature(&self, index: usize) -> f32 {
        match self.opts.temperature {
            Some(t) => t,
            None => TEMPERATURES[index],
        }
    }

    /// The tokens, cache and cross K/V to feed this step, if decoding.
    pub fn decode_input(&mut self) -> Option<(&[u32], &mut SelfCache, &CrossKv, &[usize])> {
        let w = self.window.as_mut()?;
        Some((&w.pending, &mut w.cache, &w.cross, &w.logits_for))
    }

    /// Consumes the logits this task asked for (one row per `logits_for` entry).
    pub fn on_logits(&mut self, rows: &mut [f32], v: &Vocab<'_>) -> Progress {
        if self.window.as_ref().is_some_and(|w| w.detecting) {
            return self.on_language(rows, v);
        }
        let vocab = rows.len() / self.window.as_ref().map_or(1, |w| w.logits_for.len());
        let temperature = self.temperature(self.window.as_ref().map_or(0, |w| w.temp_index));
        let Some(w) = self.window.as_mut() else {
            return Progress::Done;
        };
        let first = w.sampled.is_empty() && w.logits_for.len() == 2;
        let (sot_row, last_row) = if first {
            rows.split_at_mut(vocab)
        } else {
            (&mut [][..], &mut rows[..])
        };
        if first {
            if let Some(ns) = v.no_speech {
                w.no_speech_prob = softmax_at(sot_row, ns as usize);
            }
        }
        let logits = &mut last_row[..vocab];
        v.rules.apply(logits, &w.sampled);
        let logprobs = log_softmax(logits);
        let next = if temperature > 0.0 {
            sample(logits, temperature, &mut self.rng)
        } else {
            argmax(logits)
        };
        let max_sampled = v.n_text_ctx / 2;
        let eot = next == v.special.eot;
        if !eot {
            w.sum_logprob += logprobs[next as usize] as f64;
            w.sampled.push(next);
        }
        let full = w.cache.len() + 1 >= v.n_text_ctx;
        if !eot && w.sampled.len() < max_sampled && !full {
            w.pending.clear();
            w.pending.push(next);
            w.logits_for.clear();
            w.logits_for.push(0);
            return Progress::Decoding;
        }
        self.finish_window(v)
    }

    /// Judges the finished window: retry hotter, or keep its segments and seek on.
    fn finish_window(&mut self, v: &Vocab<'_>) -> Progress {
        let Some(mut w) = self.window.take() else {
            return Progress::Done;
        };
        let text_tokens: Vec<u32> = w
            .sampled
            .iter()
            .copied()
            .filter(|&t| t < v.special.eot)
            .collect();
        let text = (v.detokenize)(&text_tokens);
        let compression = compression_ratio(&text);
        let avg_logprob = w.sum_logprob / (w.sampled.len() + 1) as f64;
        let temperature = self.temperature(w.temp_index);
        let silent = w.no_speech_prob > NO_SPEECH_THRESHOLD && avg_logprob < LOGPROB_THRESHOLD;
        let failed = compression > COMPRESSION_RATIO_THRESHOLD || avg_logprob < LOGPROB_THRESHOLD;
        let can_retry = self.opts.temperature.is_none() && w.temp_index + 1 < TEMPERATURES.len();
        let attempt = Attempt {
            sampled: std::mem::take(&mut w.sampled),
            stats: WindowStats {
                temperature,
                avg_logprob,
                compression_ratio: compression,
                no_speech_prob: w.no_speech_prob,
            },
        };
        if failed && !silent && can_retry {
            w.best = Some(Attempt::better(w.best.take(), attempt));
            w.temp_index += 1;
            restart(&mut w);
            self.window = Some(w);
            return Progress::Decoding;
        }
        if silent {
            self.seek += w.frames;
        } else {
            let chosen = if failed {
                Attempt::better(w.best.take(), attempt)
            } else {
                attempt
            };
            self.seek += self.cut_segments(w.seek, w.frames, &chosen, v);
            self.all_tokens.extend_from_slice(&chosen.sampled);
            if chosen.stats.temperature > 0.5 {
                self.prompt_from = self.all_tokens.len();
            }
        }
        if self.seek < self.mel.content_frames {
            Progress::NeedsEncode
        } else {
            Progress::Done
        }
    }

    /// Adds the window's segments; returns how many frames to advance.
    fn cut_segments(&mut self, seek: usize, frames: usize, a: &Attempt, v: &Vocab<'_>) -> usize {
        let tb = v.rules.timestamp_begin;
        let (toks, stats) = (&a.sampled, &a.stats);
        let is_ts = |t: u32| t >= tb;
        let offset = seek as f64 * HOP as f64 / SAMPLE_RATE as f64;
        let single_ending =
            toks.len() >= 2 && !is_ts(toks[toks.len() - 2]) && is_ts(toks[toks.len() - 1])
                || toks.len() == 1 && is_ts(toks[0]);
        let mut cuts: Vec<usize> = (1..toks.len())
            .filter(|&i| is_ts(toks[i - 1]) && is_ts(toks[i]))
            .collect();
        if !cuts.is_empty() {
            if single_ending {
                cuts.push(toks.len());
            }
            let mut last = 0;
            for &cut in &cuts {
                let slice = &toks[last..cut];
                let start = (slice[0].saturating_sub(tb)) as f64 * TIME_PRECISION;
                let end = (slice[slice.len() - 1].saturating_sub(tb)) as f64 * TIME_PRECISION;
                self.push_segment(seek, offset + start, offset + end, slice, stats, v);
                last = cut;
            }
            if single_ending {
                frames
            } else {
                let last_ts = toks[last - 1].saturating_sub(tb) as usize;
                (last_ts * FRAMES_PER_TIMESTAMP).max(1)
            }
        } else {
            let mut duration = frames as f64 * HOP as f64 / SAMPLE_RATE as f64;
            if let Some(&t) = toks.iter().rev().find(|&&t| is_ts(t)) {
                if t != tb {
                    duration = (t - tb) as f64 * TIME_PRECISION;
                }
            }
            self.push_segment(seek, offset, offset + duration, toks, stats, v);
            frames
        }
    }

    fn push_segment(
        &mut self,
        seek: usize,
        start: f64,
        end: f64,
        tokens: &[u32],
        stats: &WindowStats,
        v: &Vocab<'_>,
    ) {
        let text_tokens: Vec<u32> = tokens
            .iter()
            .copied()
            .filter(|&t| t < v.special.eot)
            .collect();
        let text = (v.detokenize)(&text_tokens);
        if text.trim().is_empty() {
            return;
        }
        let end = end.min(self.duration).max(start);
        self.segments.push(Segment {
            id: self.segments.len(),
            seek,
            start: round3(start.min(self.duration)),
            end: round3(end),
            text,
            tokens: tokens.to_vec(),
            temperature: stats.temperature,
            avg_logprob: stats.avg_logprob,
            compression_ratio: stats.compression_ratio,
            no_speech_prob: stats.no_speech_prob,
        });
    }

    /// The transcript once [`Task::is_done`].
    pub fn into_transcript(self) -> Transcript {
        let text = self
            .segments
            .iter()
            .map(|s| s.text.as_str())
            .collect::<String>()
            .trim()
            .to_string();
        Transcript {
            text,
            segments: self.segments,
            duration: round3(self.duration),
            // Only audio too short for any window leaves the language undetected.
            language: self.language.unwrap_or("en").to_string(),
            task: self.opts.task,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct WindowStats {
    temperature: f32,
    avg_logprob: f64,
    compression_ratio: f64,
    no_speech_prob: f64,
}

/// (Re)starts a window's decoding from its prompt at its current temperature.
fn restart(w: &mut Window) {
    w.cache.clear();
    w.sampled.clear();
    w.sum_logprob = 0.0;
    w.pending.clear();
    w.pending.extend_from_slice(&w.prompt);
    w.logits_for.clear();
    if w.detecting {
        // One row: the language is read from the logits after `<|startoftranscript|>`.
        w.logits_for.push(w.sot_index);
    } else {
        w.logits_for.push(w.sot_index);
        w.logits_for.push(w.prompt.len() - 1);
    }
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

fn log_softmax(xs: &[f32]) -> Vec<f32> {
    let m = xs.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
    let lse = m + xs.iter().map(|&x| (x - m).exp()).sum::<f32>().ln();
    xs.iter().map(|&x| x - lse).collect()
}

fn softmax_at(xs: &[f32], i: usize) -> f64 {
    log_softmax(xs).get(i).map_or(0.0, |&l| (l as f64).exp())
}

fn sample(logits: &[f32], temperature: f32, rng: &mut StdRng) -> u32 {
    let m = logits.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
    let weights: Vec<f64> = logits
        .iter()
        .map(|&x| (((x - m) / temperature) as f64).exp())
        .collect();
    let total: f64 = weights.iter().sum();
    let mut r = rng.random::<f64>() * total;
    for (i, w) in weights.iter().enumerate() {
        r -= w;
        if r <= 0.0 && *w > 0.0 {
            return i as u32;
        }
    }
    argmax(logits)
}

/// `len(text) / len(zlib(text))`, openai-whisper's repetition detector.
pub fn compression_ratio(text: &str) -> f64 {
    if text.is_empty() {
        return 0.0;
    }
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    let _ = z.write_all(text.as_bytes());
    let compressed = z.finish().map(|v| v.len()).unwrap_or(text.len());
    text.len() as f64 / compressed.max(1) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repetition_compresses() {
        let normal = "The quick brown fox jumps over the lazy dog near the river bank.";
        let looped = "I'm sorry. ".repeat(20);
        assert!(
            compression_ratio(normal) < 1.5,
            "{}",
            compression_ratio(normal)
        );
        assert!(compression_ratio(&looped) > COMPRESSION_RATIO_THRESHOLD);
    }

    #[test]
    fn sampling_at_low_temperature_is_argmax() {
        let mut rng = StdRng::seed_from_u64(1);
        let logits = [0.0, 5.0, 1.0];
        assert_eq!(sample(&logits, 0.01, &mut rng), 1);
    }
}
