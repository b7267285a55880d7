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

fn bos_and(text: &str) -> Vec<u32> {
    let mut ids = vec![tokenizer().bos_token_id().expect("bos")];
    ids.extend(tokenizer().encode(text).expect("encode"));
    ids
}

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
    let (tokens, _) = greedy(model(), &bos_and("The capital of France is"), 8, 512);
    let text = tokenizer().decode(&tokens, true).expect("decode");
    eprintln!("{text:?}");
    assert!(text.contains("Paris"), "{text:?}");
}
