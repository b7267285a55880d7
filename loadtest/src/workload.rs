//! Turning arrivals into concrete requests: which class each arrival is, its prompt and
//! output lengths, which audio file. Drawn from the scenario's seed before the run (open
//! loop) or per request (closed loop), so the same scenario replays the same traffic.

use std::sync::Arc;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::scenario::{Class, ClassBody};
use crate::schedule::Arrival;

/// What varies between requests of one class.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Params {
    Chat { prompt_tokens: u32, max_tokens: u32 },
    Transcription { file: usize },
}

/// One request to send: id, intended time (s from the run start), phase and class
/// indices, and its drawn parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Planned {
    pub id: u64,
    pub at: f64,
    pub phase: usize,
    pub class: usize,
    pub params: Params,
}

/// Draws classes by weight and their parameters from one seeded generator.
pub struct Planner {
    classes: Arc<Vec<Class>>,
    cumulative: Vec<f64>,
    rng: StdRng,
    next_file: Vec<usize>,
    next_id: u64,
}

impl Planner {
    pub fn new(classes: Arc<Vec<Class>>, seed: u64) -> Planner {
        let mut acc = 0.0;
        let cumulative = classes
            .iter()
            .map(|c| {
                acc += c.weight;
                acc
            })
            .collect();
        let n = classes.len();
        Planner {
            classes,
            cumulative,
            // Offset from the arrivals' seed so the two draws are independent.
            rng: StdRng::seed_from_u64(seed ^ 0x05ee_dc1a_55e5_u64),
            next_file: vec![0; n],
            next_id: 0,
        }
    }

    /// The next request at `at` in `phase`.
    pub fn draw(&mut self, at: f64, phase: usize) -> Planned {
        let total = *self.cumulative.last().unwrap_or(&0.0);
        let x = self.rng.random::<f64>() * total;
        let class = self
            .cumulative
            .iter()
            .position(|&c| x < c)
            .unwrap_or(self.classes.len() - 1);
        let params = match &self.classes[class].body {
            ClassBody::Chat {
                prompt_tokens,
                max_tokens,
                ..
            } => Params::Chat {
                prompt_tokens: prompt_tokens.sample(&mut self.rng),
                max_tokens: max_tokens.sample(&mut self.rng),
            },
            ClassBody::Transcription { files, .. } => {
                let file = self.next_file[class] % files.len().max(1);
                self.next_file[class] += 1;
                Params::Transcription { file }
            }
        };
        let id = self.next_id;
        self.next_id += 1;
        Planned {
            id,
            at,
            phase,
            class,
            params,
        }
    }

    /// Every arrival of an open-loop schedule as a request.
    pub fn plan(&mut self, arrivals: &[Arrival]) -> Vec<Planned> {
        arrivals.iter().map(|a| self.draw(a.at, a.phase)).collect()
    }
}

/// Filler words that are one token each in GPT-2-style BPE vocabularies (with their
/// leading space), so a prompt of N words is close to N tokens on most chat models.
const WORDS: [&str; 32] = [
    "the", "time", "water", "light", "house", "river", "people", "city", "green", "music", "paper",
    "stone", "night", "world", "table", "story", "market", "garden", "friend", "window", "summer",
    "school", "money", "letter", "road", "field", "power", "voice", "change", "number", "family",
    "morning",
];

/// A user message of about `tokens` tokens, unique per request id (a distinct first line,
/// so no prefix cache can serve it from an earlier request).
pub fn filler_prompt(id: u64, tokens: u32) -> String {
    let mut s = format!("Request {id}. Continue this list:");
    let mut x = id.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    for _ in 0..tokens.saturating_sub(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        s.push(' ');
        s.push_str(WORDS[(x % WORDS.len() as u64) as usize]);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dist::LengthDist;
    use crate::scenario::Slo;

    fn class(name: &str, weight: f64, body: ClassBody) -> Class {
        Class {
            name: name.into(),
            weight,
            model: "m".into(),
            api_key: None,
            slo: Slo::default(),
            body,
        }
    }

    #[test]
    fn classes_follow_their_weights_and_files_rotate() {
        let chat = ClassBody::Chat {
            stream: true,
            prompt_tokens: LengthDist::Uniform { min: 10, max: 20 },
            prompt: None,
            system: None,
            max_tokens: LengthDist::fixed(7),
            temperature: 0.0,
            ignore_eos: false,
        };
        let audio = ClassBody::Transcription {
            files: vec![
                ("a.wav".into(), Arc::new(vec![])),
                ("b.wav".into(), Arc::new(vec![])),
            ],
            response_format: "json".into(),
        };
        let classes = Arc::new(vec![class("chat", 3.0, chat), class("asr", 1.0, audio)]);
        let mut p = Planner::new(classes.clone(), 9);
        let plan: Vec<Planned> = (0..4000).map(|i| p.draw(i as f64, 0)).collect();
        let chats = plan.iter().filter(|r| r.class == 0).count();
        assert!((chats as f64 / 4000.0 - 0.75).abs() < 0.03, "{chats}");
        let files: Vec<usize> = plan
            .iter()
            .filter_map(|r| match r.params {
                Params::Transcription { file } => Some(file),
                _ => None,
            })
            .take(4)
            .collect();
        assert_eq!(files, [0, 1, 0, 1]);
        assert!(plan.iter().all(|r| match r.params {
            Params::Chat {
                prompt_tokens,
                max_tokens,
            } => (10..=20).contains(&prompt_tokens) && max_tokens == 7,
            _ => true,
        }));
        assert_eq!(plan.iter().map(|r| r.id).max(), Some(3999));
        // Seeded: the same seed replays the same requests.
        let again: Vec<Planned> = {
            let mut p = Planner::new(classes, 9);
            (0..4000).map(|i| p.draw(i as f64, 0)).collect()
        };
        assert_eq!(plan, again);
    }

    #[test]
    fn filler_prompts_are_unique_and_sized() {
        let a = filler_prompt(1, 100);
        assert_ne!(a, filler_prompt(2, 100));
        let words = a.split_whitespace().count();
        assert!((95..=100).contains(&words), "{words}");
        assert!(filler_prompt(3, 1).starts_with("Request 3."));
    }
}
