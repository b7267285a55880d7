//! The `gemma3` architecture (Gemma 3 270M base, Q4_K_M) on the real model,
//! pulled into the shared cache by the project's own code.
//!
//! candle-transformers' `quantized_gemma3` is no reference here (it gates the
//! MLP with SiLU where Gemma uses GELU, and applies no sliding window when
//! decoding), so the references are llama.cpp's greedy tokens for the same
//! file (`testdata/llm/gemma3-llama-cpp.json`, written by
//! `scripts/peers/llama-cpp-greedy.py`), our own kernels against candle's
//! matmuls, and batching against decoding alone.

use std::sync::OnceLock;

use candle_core::{Device, IndexOp};
use surge_runtime::llm::test_support::gemma_test_gguf_path;
use surge_runtime::llm::*;

fn gguf() -> &'static GgufFile {
    static F: OnceLock<GgufFile> = OnceLock::new();
    F.get_or_init(|| GgufFile::open(gemma_test_gguf_path()).expect("open gemma GGUF"))
}

fn tokenizer() -> &'static Tokenizer {
    static T: OnceLock<Tokenizer> = OnceLock::new();
    T.get_or_init(|| Tokenizer::from_gguf(gguf()).expect("tokenizer"))
}

fn load(cpu_kernels: bool) -> LlmModel {
    LlmModel::load_gguf(
        gguf(),
        &Device::Cpu,
        &LoadOptions {
            max_context: Some(4096),
            cpu_kernels,
            ..LoadOptions::default()
        },
    )
    .expect("load")
}

/// Default load options: what the worker runs.
fn model() -> &'static LlmModel {
    static M: OnceLock<LlmModel> = OnceLock::new();
    M.get_or_init(|| load(true))
}

fn argmax(row: &[f32]) -> u32 {
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
fn greedy(m: &LlmModel, prompt: &[u32], steps: usize, chunk: usize) -> (Vec<u32>, Vec<Vec<f32>>) {
    let mut cache = m.new_sequence_cache();
    let (mut out, mut logits) = (Vec::new(), Vec::new());
    let mut rest = prompt;
    let mut last = Vec::new();
    while !rest.is_empty() {
        let (now, later) = rest.split_at(chunk.min(rest.len()));
        last = m
            .step(&mut [BatchItem {
                tokens: now,
                cache: &mut cache,
            }])
            .expect("prefill")
            .i(0)
            .expect("row")
            .to_vec1::<f32>()
            .expect("vec");
        rest = later;
    }
    for _ in 0..steps {
        let t = argmax(&last);
        out.push(t);
        logits.push(last);
        last = m
            .step(&mut [BatchItem {
                tokens: &[t],
                cache: &mut cache,
            }])
            .expect("step")
            .i(0)
            .expect("row")
            .to_vec1::<f32>()
            .expect("vec");
    }
    (out, logits)
}

fn prompt(text: &str) -> Vec<u32> {
    tokenizer().encode_prompt(text).expect("encode")
}

/// llama.cpp's record for one prompt (see `scripts/peers/llama_cpp_greedy.py`).
#[derive(serde::Deserialize)]
struct Reference {
    text: String,
    prompt_ids: Vec<u32>,
    tokens: Vec<u32>,
    /// Per step, llama.cpp's five best `(token, logit)`.
    top5: Vec<Vec<(u32, f32)>>,
}

fn llama_cpp_reference() -> Vec<Reference> {
    #[derive(serde::Deserialize)]
    struct File {
        prompts: Vec<Reference>,
    }
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../testdata/llm/gemma3-llama-cpp.json"
    );
    let f: File = serde_json::from_str(&std::fs::read_to_string(path).expect("read fixture"))
        .expect("parse fixture");
    f.prompts
}

/// Largest logit gap llama.cpp may have between its token and ours at a step
/// where we pick differently for the divergence to count as a tie (logits
/// here span roughly ±30; both sides quantize activations to 8 bits).
const TIE: f32 = 0.3;

/// Largest difference allowed between our relative logits and llama.cpp's
/// (see `greedy_matches_llama_cpp`; logits here are 10-30). llama.cpp keeps
/// the KV cache in f16, evaluates GELU from an f16 table and quantizes
/// activations in blocks of 256 for k-quant weights, and Gemma's activations
/// are large (embeddings scaled by 25), which magnifies such rounding.
const LOGIT_TOLERANCE: f32 = 1.5;

#[test]
fn metadata_tokenizer_and_template() {
    let cfg = LlamaConfig::from_gguf(gguf()).expect("config");
    eprintln!("{cfg:?}");
    assert_eq!(cfg.architecture, Architecture::Gemma3);
    assert_eq!((cfg.n_layer, cfg.n_head, cfg.n_kv_head), (18, 4, 1));
    assert_eq!((cfg.hidden_size, cfg.head_dim), (640, 256));
    assert_eq!(cfg.sliding_window, Some(512));
    let global: Vec<usize> = (0..cfg.n_layer)
        .filter(|&i| !cfg.is_sliding_layer(i))
        .collect();
    assert_eq!(global, [5, 11, 17]);

    let tok = tokenizer();
    for text in [
        "Hello, world!",
        "  two spaces, tabs\tand\nnewlines\n\n",
        "Ünïcödé — 日本語 🙂",
        "def f(x):\n    return x * 2",
    ] {
        let ids = tok.encode(text).expect("encode");
        assert_eq!(tok.decode(&ids, false).expect("decode"), text);
    }
    let tmpl = ChatTemplate::from_gguf(gguf(), None).expect("built-in template");
    let text = tmpl
        .render(
            &[
                ChatMessage::new("system", "Be brief."),
                ChatMessage::new("user", "Hi!"),
            ],
            true,
        )
        .expect("render");
    assert_eq!(
        text,
        "<bos><start_of_turn>user\nBe brief.\n\nHi!<end_of_turn>\n<start_of_turn>model\n"
    );
    let ids = tok.encode(&text).expect("encode");
    assert_eq!(ids[0], 2, "<bos>");
    assert_eq!(ids[1], tok.token_to_id("<start_of_turn>").expect("turn"));
}

#[test]
fn completes_sensibly() {
    let (tokens, _) = greedy(model(), &prompt("def fibonacci(n):"), 12, 512);
    let text = tokenizer().decode(&tokens, true).expect("decode");
    eprintln!("{text:?}");
    assert!(text.contains("return"), "{text:?}");
}

/// Tokenization equals llama.cpp's, and the first 32 greedy tokens too, or the
/// first difference is a tie in llama.cpp's own logits. The last prompt is
/// 1,194 tokens, prefilled in chunks of 512, so the sliding-window layers'
/// masks and the decode kernel's window both matter.
#[test]
fn greedy_matches_llama_cpp() {
    let tok = tokenizer();
    for r in llama_cpp_reference() {
        let ids = prompt(&r.text);
        assert_eq!(ids, r.prompt_ids, "tokenization of {:?}", r.text);
        let (ours, logits) = greedy(model(), &ids, r.tokens.len(), 512);
        let label = format!("{} prompt tokens", ids.len());
        eprintln!(
            "{label}: ours {:?}\n  llama.cpp {:?}",
            tok.decode(&ours, false).expect("decode"),
            tok.decode(&r.tokens, false).expect("decode")
        );
        let diverge = ours.iter().zip(&r.tokens).position(|(a, b)| a != b);
        // llama.cpp's five best tokens, their logits relative to its best one,
        // ours vs theirs, up to the divergence (relative, because a uniform
        // shift changes no probability; measured shifts reach 5 on the long
        // prompt). A wrong window, norm or RoPE base moves these by whole units.
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
        assert!(worst < LOGIT_TOLERANCE, "{label}: logits differ by {worst}");
        let Some(i) = diverge else {
            continue;
        };
        let theirs = &r.top5[i];
        let their_best = theirs[0].1;
        let ours_in_theirs = theirs.iter().find(|(t, _)| *t == ours[i]).map(|(_, l)| *l);
        let our_margin = logits[i][ours[i] as usize] - logits[i][r.tokens[i] as usize];
        eprintln!(
            "{label}: diverges at step {i}: ours {:?} (by {our_margin:.3} in our logits), \
             llama.cpp {:?}; llama.cpp's top five {theirs:?}",
            tok.id_to_token(ours[i]),
            tok.id_to_token(r.tokens[i]),
        );
        let gap = ours_in_theirs.map(|l| their_best - l);
        assert!(
            gap.is_some_and(|g| g <= TIE),
            "{label}: step {i} is no tie: llama.cpp's gap {gap:?} > {TIE}"
        );
    }
}

/// Sequences decoded together in one batch (different lengths, one of them
/// past the sliding window) produce what each produces alone.
#[test]
fn batching_matches_alone() {
    let m = model();
    let refs = llama_cpp_reference();
    let prompts: Vec<Vec<u32>> = refs.iter().map(|r| prompt(&r.text)).collect();
    let steps = 12;
    let alone: Vec<Vec<u32>> = prompts.iter().map(|p| greedy(m, p, steps, 512).0).collect();
    let mut caches: Vec<SeqCache> = prompts.iter().map(|_| m.new_sequence_cache()).collect();
    let mut outs: Vec<Vec<u32>> = vec![Vec::new(); prompts.len()];
    let mut inputs = prompts.clone();
    for _ in 0..steps {
        let logits = m
            .step(&mut BatchItem::pack(&inputs, &mut caches))
            .expect("batched step");
        for (i, out) in outs.iter_mut().enumerate() {
            let row = logits.i(i).expect("row").to_vec1::<f32>().expect("vec");
            let t = argmax(&row);
            out.push(t);
            inputs[i] = vec![t];
        }
    }
    assert_eq!(outs, alone);
}
