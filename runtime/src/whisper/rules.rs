//! Logit rules of Whisper's timestamped decoding (openai-whisper's `SuppressBlank`,
//! `SuppressTokens` and `ApplyTimestampRules`), on one row of logits.
//!
//! Timestamps come in pairs that open and close a segment, never decrease, the first
//! token of a window is a timestamp within the first second, and a timestamp is forced
//! when the timestamps together are likelier than any text token.

use super::decode::SpecialTokens;
use super::load::Ct2Config;

/// Token classes the rules need, precomputed per model.
pub struct Rules {
    /// `<|0.00|>`; every id from here up is a timestamp (20 ms steps).
    pub timestamp_begin: u32,
    pub eot: u32,
    /// Never sampled: the config's non-speech symbols and every special token that is
    /// not EOT or a timestamp.
    always: Vec<u32>,
    /// Also suppressed on a window's first sampled token (blank, EOT).
    at_begin: Vec<u32>,
    /// Latest timestamp index allowed first (1 s at 20 ms).
    max_initial_timestamp: u32,
}

impl Rules {
    pub fn new(sp: &SpecialTokens, cfg: &Ct2Config, vocab: usize) -> Self {
        let timestamp_begin = sp.no_timestamps + 1;
        let mut always: Vec<u32> = cfg.suppress_ids.clone();
        always.extend((sp.eot + 1..timestamp_begin).filter(|&t| (t as usize) < vocab));
        always.sort_unstable();
        always.dedup();
        Self {
            timestamp_begin,
            eot: sp.eot,
            always,
            at_begin: cfg.suppress_ids_begin.clone(),
            max_initial_timestamp: 50,
        }
    }

    /// Masks `logits` (one vocabulary row) for the next token after `sampled` (the
    /// tokens sampled so far in this window, prompt excluded).
    pub fn apply(&self, logits: &mut [f32], sampled: &[u32]) {
        let ninf = f32::NEG_INFINITY;
        let tb = self.timestamp_begin as usize;
        let eot = self.eot as usize;
        let mask = |ids: &[u32], logits: &mut [f32]| {
            for &t in ids {
                if let Some(v) = logits.get_mut(t as usize) {
                    *v = ninf;
                }
            }
        };
        if sampled.is_empty() {
            mask(&self.at_begin, logits);
        }
        mask(&self.always, logits);

        let is_ts = |t: u32| t >= self.timestamp_begin;
        let last_ts = sampled.last().is_some_and(|&t| is_ts(t));
        let penult_ts = sampled.len() < 2 || is_ts(sampled[sampled.len() - 2]);
        if last_ts {
            if penult_ts {
                logits[tb..].fill(ninf); // a pair just closed: text (or EOT) next
            } else {
                logits[..eot].fill(ninf); // a segment's end: timestamp or EOT next
            }
        }
        if let Some(&last) = sampled.iter().rev().find(|&&t| is_ts(t)) {
            // Non-decreasing, and a new segment must not start where the last ended
            // twice (zero-length segments loop forever).
            let floor = if last_ts && !penult_ts {
                last
            } else {
                last + 1
            };
            let hi = (floor as usize).min(logits.len());
            logits[tb..hi.max(tb)].fill(ninf);
        }
        if sampled.is_empty() {
            logits[..tb].fill(ninf);
            let last_allowed = tb + self.max_initial_timestamp as usize;
            if last_allowed + 1 < logits.len() {
                logits[last_allowed + 1..].fill(ninf);
            }
        }
        // If all timestamps together beat the best text token, force a timestamp.
        let lse = |xs: &[f32]| {
            let m = xs.iter().fold(ninf, |a, &b| a.max(b));
            if m == ninf {
                return ninf;
            }
            m + xs.iter().map(|&x| (x - m).exp()).sum::<f32>().ln()
        };
        let ts_mass = lse(&logits[tb..]);
        let best_text = logits[..tb].iter().fold(ninf, |a, &b| a.max(b));
        if ts_mass > best_text {
            logits[..tb].fill(ninf);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules() -> Rules {
        // A toy vocabulary: text 0..10, EOT 10, specials 11..14, no_timestamps 14,
        // timestamps 15..30.
        let sp = SpecialTokens {
            sot: 11,
            eot: 10,
            no_timestamps: 14,
            transcribe: None,
            translate: None,
            languages: vec![],
        };
        let cfg = Ct2Config {
            suppress_ids: vec![3],
            suppress_ids_begin: vec![0, 10],
        };
        Rules::new(&sp, &cfg, 30)
    }

    fn allowed(r: &Rules, sampled: &[u32], logits: &[f32]) -> Vec<usize> {
        let mut l = logits.to_vec();
        r.apply(&mut l, sampled);
        (0..l.len()).filter(|&i| l[i] > f32::NEG_INFINITY).collect()
    }

    #[test]
    fn first_token_is_an_early_timestamp() {
        let r = rules();
        let a = allowed(&r, &[], &[0.0; 30]);
        assert!(a.iter().all(|&t| t >= 15), "{a:?}");
    }

    #[test]
    fn timestamps_pair_up_and_never_decrease() {
        let r = rules();
        let flat = [0.0f32; 30];
        // After <|t=2|> text: text, EOT or a timestamp ≥ 2+1.
        let a = allowed(&r, &[17, 5], &flat);
        assert!(!a.contains(&3) && !a.contains(&12) && !a.contains(&17) && a.contains(&18));
        // After text then a closing timestamp: only timestamps ≥ it, or EOT.
        let a = allowed(&r, &[17, 5, 20], &flat);
        assert!(a.iter().all(|&t| t == 10 || t >= 20), "{a:?}");
        // After a closed pair: text or EOT only.
        let a = allowed(&r, &[17, 5, 20, 20], &flat);
        assert!(a.iter().all(|&t| t <= 10), "{a:?}");
    }

    #[test]
    fn timestamp_mass_forces_a_timestamp() {
        let r = rules();
        let mut logits = [0.0f32; 30];
        logits[5] = 1.0; // best text token, but 15 timestamps at 0.0 outweigh it
        let a = allowed(&r, &[17, 5], &logits);
        assert!(a.iter().all(|&t| t >= 15), "{a:?}");
    }
}
