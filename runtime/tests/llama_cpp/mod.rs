//! Greedy parity with llama.cpp on the same GGUF file.
//!
//! The references in `testdata/llm/*-llama-cpp.json` are written by
//! `scripts/peers/llama_cpp_greedy.py` (llama-cpp-python, llama.cpp's own CPU
//! kernels): per prompt, llama.cpp's token ids, its first 32 greedy tokens and
//! its five best `(token, logit)` per step.
#![allow(dead_code)] // each test binary uses a different subset

use candle_core::IndexOp;
use surge_runtime::llm::*;

/// llama.cpp's record for one prompt.
#[derive(serde::Deserialize)]
pub struct Reference {
    pub text: String,
    pub prompt_ids: Vec<u32>,
    pub tokens: Vec<u32>,
    /// Per step, llama.cpp's five best `(token, logit)`.
    pub top5: Vec<Vec<(u32, f32)>>,
}

/// The records of `testdata/llm/{name}`.
pub fn references(name: &str) -> Vec<Reference> {
    #[derive(serde::Deserialize)]
    struct File {
        prompts: Vec<Reference>,
    }
    let path = format!("{}/../testdata/llm/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let f: File = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"));
    f.prompts
}

/// How close to llama.cpp a model must stay.
pub struct Bounds {
    /// Largest gap llama.cpp may have between its token and ours at the first
    /// step where the two pick differently, for that to count as a tie.
    pub tie: f32,
    /// Largest difference between our logits and llama.cpp's, each relative
    /// to llama.cpp's best token at that step (relative, because a uniform
    /// shift changes no probability), over llama.cpp's five best tokens of
    /// every step up to the first divergence.
    pub relative_logits: f32,
}

pub fn argmax(row: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &x) in row.iter().enumerate() {
        if x > row[best] {
            best = i;
        }
    }
    best as u32
}

/// Greedy tokens of one sequence decoded alone (prompt prefilled in chunks of
/// `chunk` tokens), and each step's logits.
pub fn greedy(
    m: &LlmModel,
    prompt: &[u32],
    steps: usize,
    chunk: usize,
) -> (Vec<u32>, Vec<Vec<f32>>) {
    let mut cache = m.new_sequence_cache();
    let row = |m: &LlmModel, tokens: &[u32], cache: &mut SeqCache| -> Vec<f32> {
        m.step(&mut [BatchItem { tokens, cache }])
            .expect("step")
            .i(0)
            .expect("row")
            .to_vec1::<f32>()
            .expect("vec")
    };
    let mut last = Vec::new();
    for part in prompt.chunks(chunk) {
        last = row(m, part, &mut cache);
    }
    let (mut out, mut logits) = (Vec::new(), Vec::new());
    for _ in 0..steps {
        let t = argmax(&last);
        out.push(t);
        logits.push(std::mem::take(&mut last));
        last = row(m, &[t], &mut cache);
    }
    (out, logits)
}

/// Checks `model` against every reference in `file`: identical tokenization
/// (by `Tokenizer::encode_prompt`, which adds BOS where the model asks for it,
/// as llama.cpp does), the same greedy tokens or a first divergence at a tie,
/// and relative logits within `bounds`. Prompts are prefilled in chunks of
/// 512 tokens, as the worker does. Prints what it measured.
pub fn check(model: &LlmModel, tok: &Tokenizer, file: &str, bounds: &Bounds) {
    for r in references(file) {
        let ids = tok.encode_prompt(&r.text).expect("encode");
        assert_eq!(ids, r.prompt_ids, "tokenization of {:?}", r.text);
        let (ours, logits) = greedy(model, &ids, r.tokens.len(), 512);
        let label = format!("{file}, {} prompt tokens", ids.len());
        eprintln!(
            "{label}: ours {:?}\n  llama.cpp {:?}",
            tok.decode(&ours, false).expect("decode"),
            tok.decode(&r.tokens, false).expect("decode")
        );
        let diverge = ours.iter().zip(&r.tokens).position(|(a, b)| a != b);
        let worst = r
            .top5
            .iter()
            .zip(&logits)
            .take(diverge.map_or(usize::MAX, |i| i + 1))
            .flat_map(|(top, row)| {
                let (best, best_logit) = top[0];
                top.iter().map(move |&(t, l)| {
                    ((row[t as usize] - row[best as usize]) - (l - best_logit)).abs()
                })
            })
            .fold(0f32, f32::max);
        eprintln!(
            "{label}: largest difference in logits relative to the best, on llama.cpp's \
             top five: {worst:.3}"
        );
        assert!(
            worst < bounds.relative_logits,
            "{label}: logits differ by {worst}"
        );
        let Some(i) = diverge else {
            eprintln!("{label}: all {} tokens equal", ours.len());
            continue;
        };
        let theirs = &r.top5[i];
        let ours_in_theirs = theirs.iter().find(|(t, _)| *t == ours[i]).map(|(_, l)| *l);
        let our_margin = logits[i][ours[i] as usize] - logits[i][r.tokens[i] as usize];
        let gap = ours_in_theirs.map(|l| theirs[0].1 - l);
        eprintln!(
            "{label}: diverges at step {i}: ours {:?} (ahead by {our_margin:.3} in our \
             logits), llama.cpp {:?} (ahead by {gap:?} in its logits)",
            tok.id_to_token(ours[i]),
            tok.id_to_token(r.tokens[i]),
        );
        assert!(
            gap.is_some_and(|g| g <= bounds.tie),
            "{label}: step {i} is no tie: llama.cpp's gap {gap:?} > {}",
            bounds.tie
        );
    }
}
