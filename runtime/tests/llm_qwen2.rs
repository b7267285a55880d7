//! The `qwen2` architecture (Qwen2.5-Coder-0.5B-Instruct, Q4_K_M) on the real
//! model, pulled into the shared cache by the project's own code.
//!
//! The reference is candle-transformers' `quantized_qwen2::ModelWeights` on
//! the same file: with the file's quantization kept and candle's matmuls,
//! ours must produce the same greedy tokens and near-identical logits; the
//! default options (our Q8_0 kernels where the file has Q8_0, candle's
//! QMatMul for Q4_K/Q6_K/Q5_0) must produce the same greedy tokens; and
//! continuous batching must not change what each sequence generates.

use std::sync::OnceLock;

use candle_core::quantized::gguf_file;
use candle_core::{Device, Tensor};
use candle_transformers::models::quantized_qwen2::ModelWeights;
use surge_runtime::llm::test_support::qwen_test_gguf_path;
use surge_runtime::llm::*;

mod llama_cpp;
use llama_cpp::argmax;

fn gguf() -> &'static GgufFile {
    static F: OnceLock<GgufFile> = OnceLock::new();
    F.get_or_init(|| GgufFile::open(qwen_test_gguf_path()).expect("open qwen GGUF"))
}

fn tokenizer() -> &'static Tokenizer {
    static T: OnceLock<Tokenizer> = OnceLock::new();
    T.get_or_init(|| Tokenizer::from_gguf(gguf()).expect("tokenizer"))
}

/// Default load options: what the worker runs.
fn model() -> &'static LlmModel {
    static M: OnceLock<LlmModel> = OnceLock::new();
    M.get_or_init(|| {
        LlmModel::load_gguf(
            gguf(),
            &Device::Cpu,
            &LoadOptions {
                max_context: Some(4096),
                ..LoadOptions::default()
            },
        )
        .expect("load")
    })
}

/// The file's quantization on candle's matmuls, as the reference runs it.
fn model_as_stored() -> LlmModel {
    LlmModel::load_gguf(
        gguf(),
        &Device::Cpu,
        &LoadOptions {
            weight_format: WeightFormat::AsStored,
            k_padding: KPadding::Off,
            max_context: Some(4096),
            cpu_kernels: false,
            packed_weights: None,
        },
    )
    .expect("load as stored")
}

fn reference() -> ModelWeights {
    let path = qwen_test_gguf_path();
    let mut f = std::fs::File::open(&path).expect("open");
    let ct = gguf_file::Content::read(&mut f).expect("read");
    ModelWeights::from_gguf(ct, &mut f, &Device::Cpu).expect("reference load")
}

fn render(messages: &[ChatMessage]) -> String {
    let tmpl = ChatTemplate::from_gguf(gguf(), None).expect("template");
    tmpl.render(messages, true).expect("render")
}

fn chat_ids(user: &str) -> Vec<u32> {
    tokenizer()
        .encode(&render(&[ChatMessage::new("user", user)]))
        .expect("encode")
}

fn rows(t: &Tensor) -> Vec<Vec<f32>> {
    logits_rows(t).expect("logits")
}

/// Greedy tokens of one sequence decoded alone (prompt in one chunk), and each
/// step's logits.
fn greedy(m: &LlmModel, prompt: &[u32], steps: usize) -> (Vec<u32>, Vec<Vec<f32>>) {
    llama_cpp::greedy(m, prompt, steps, prompt.len().max(1))
}

/// The reference's greedy tokens and per-step logits.
fn reference_greedy(
    r: &mut ModelWeights,
    prompt: &[u32],
    steps: usize,
) -> (Vec<u32>, Vec<Vec<f32>>) {
    r.clear_kv_cache();
    let (mut out, mut logits) = (Vec::new(), Vec::new());
    let mut input = prompt.to_vec();
    let mut pos = 0;
    for _ in 0..steps {
        let ids = Tensor::new(input.as_slice(), &Device::Cpu)
            .and_then(|t| t.unsqueeze(0))
            .expect("ids");
        let l = r.forward(&ids, pos).expect("reference forward");
        // quantized_qwen2 returns the last position's logits, [1, vocab].
        let l = l
            .flatten_all()
            .expect("flat")
            .to_vec1::<f32>()
            .expect("vec");
        pos += input.len();
        let t = argmax(&l);
        out.push(t);
        logits.push(l);
        input = vec![t];
    }
    (out, logits)
}

fn parity_prompts() -> Vec<Vec<u32>> {
    vec![
        chat_ids("What is the capital of France?"),
        chat_ids("Write a Python function that checks whether a number is prime."),
        tokenizer().encode("def fibonacci(n):").expect("encode"),
    ]
}

#[test]
fn metadata_and_template() {
    let cfg = LlamaConfig::from_gguf(gguf()).expect("config");
    eprintln!("{cfg:?}");
    assert_eq!(cfg.architecture, Architecture::Qwen2);
    assert_eq!((cfg.n_layer, cfg.n_head, cfg.n_kv_head), (24, 14, 2));
    assert_eq!(cfg.hidden_size, 896);
    assert_eq!(cfg.rope_freq_base, 1_000_000.0);
    // This file carries an explicit `output.weight`; tied heads (no such
    // tensor) take the same path as SmolLM2's.
    eprintln!(
        "output.weight present: {}",
        gguf().has_tensor("output.weight")
    );
    let mut types = std::collections::BTreeMap::<String, usize>::new();
    for info in gguf().content().tensor_infos.values() {
        *types.entry(format!("{:?}", info.ggml_dtype)).or_default() += 1;
    }
    eprintln!("tensor types: {types:?}");

    let text = render(&[ChatMessage::new("user", "Hello!")]);
    eprintln!("{text}");
    assert!(
        text.ends_with("<|im_start|>user\nHello!<|im_end|>\n<|im_start|>assistant\n"),
        "{text}"
    );
    // Qwen's template adds its default system prompt.
    assert!(text.starts_with("<|im_start|>system\n"), "{text}");
    let ids = tokenizer().encode(&text).expect("encode");
    let im_start = tokenizer().token_to_id("<|im_start|>").expect("im_start");
    assert_eq!(ids[0], im_start);
    assert_eq!(tokenizer().decode(&ids, false).expect("decode"), text);
}

/// Compares our greedy run with the reference's on the same prompt: the
/// tokens must agree until the end, or until a step where the reference's
/// top two candidates are a tie within the measured logit difference of that
/// step (the margin between two logits moves by at most twice the largest
/// single-logit difference). Returns the per-step max abs logit differences
/// up to and including the first divergence, and the logit scale.
fn compare_with_reference(
    label: &str,
    (a, la): (Vec<u32>, Vec<Vec<f32>>),
    (b, lb): (Vec<u32>, Vec<Vec<f32>>),
) -> (Vec<f32>, f32) {
    let tok = tokenizer();
    let diverge = a.iter().zip(&b).position(|(x, y)| x != y);
    let last = diverge.unwrap_or(a.len() - 1);
    let mut per_step = Vec::new();
    let mut scale = 0f32;
    for (x, y) in la.iter().zip(&lb).take(last + 1) {
        let mut w = 0f32;
        for (p, q) in x.iter().zip(y) {
            w = w.max((p - q).abs());
            scale = scale.max(q.abs());
        }
        per_step.push(w);
    }
    eprintln!(
        "{label}: ours {:?}\n  reference {:?}\n  per-step max abs logit diff {per_step:?} (max |logit| {scale})",
        tok.decode(&a, false).expect("decode"),
        tok.decode(&b, false).expect("decode"),
    );
    if let Some(i) = diverge {
        let (ours, theirs) = (&la[i], &lb[i]);
        let ref_margin = theirs[b[i] as usize] - theirs[a[i] as usize];
        let our_margin = ours[a[i] as usize] - ours[b[i] as usize];
        eprintln!(
            "{label}: diverges at step {i}: ours {:?} / reference {:?}; reference prefers its \
             token by {ref_margin}, ours prefers ours by {our_margin}; step logit diff {}",
            tok.id_to_token(a[i]),
            tok.id_to_token(b[i]),
            per_step[i]
        );
        assert!(
            ref_margin <= 2.0 * per_step[i],
            "{label}: step {i} is no tie: {a:?} vs {b:?}"
        );
    }
    (per_step, scale)
}

#[test]
fn as_stored_matches_candle_quantized_qwen2() {
    let ours = model_as_stored();
    let mut theirs = reference();
    let steps = 32;
    for prompt in parity_prompts() {
        let (per_step, scale) = compare_with_reference(
            "as stored",
            greedy(&ours, &prompt, steps),
            reference_greedy(&mut theirs, &prompt, steps),
        );
        // The prefill runs the same ops in the same order as the reference
        // (measured bit-identical), and so does every decode step of the short
        // raw prompt. Decode steps of the longer chat prompts differ by up to
        // ~2% of the logit range (measured 0.25-0.5 of 27): our attention folds
        // the 7 query heads sharing a kv head into one matmul (m = 7) where the
        // reference repeats k/v and runs m = 1 per head, so for longer caches
        // the gemm sums in another order, and Qwen's large activation outliers
        // turn those ~1e-7 differences into flipped 8-bit roundings of the
        // quantized matmuls' inputs. The one token that differs in 96 is a tie
        // (measured 0.05 apart in the reference, "(n" vs "(number").
        assert!(
            per_step[0] < 1e-3 * scale.max(1.0),
            "prefill diff {}",
            per_step[0]
        );
        let worst = per_step.iter().copied().fold(0f32, f32::max);
        assert!(worst < 0.05 * scale.max(1.0), "diff {worst}");
    }
}

#[test]
fn default_options_match_reference_tokens() {
    let m = model();
    eprintln!("{:?}", m.load_report());
    let mut theirs = reference();
    let steps = 32;
    for prompt in parity_prompts() {
        compare_with_reference(
            "default",
            greedy(m, &prompt, steps),
            reference_greedy(&mut theirs, &prompt, steps),
        );
    }
}

#[test]
fn batched_sequences_match_solo_decoding() {
    let m = model();
    let prompts = parity_prompts();
    let steps = 8;
    let solo: Vec<Vec<u32>> = prompts.iter().map(|p| greedy(m, p, steps).0).collect();
    // Packed prefill of all prompts, then decoded together; and a late
    // joiner whose prefill shares steps with the others' decode.
    let mut caches: Vec<SeqCache> = prompts.iter().map(|_| m.new_sequence_cache()).collect();
    let mut pending = prompts.clone();
    let mut out: Vec<Vec<u32>> = vec![Vec::new(); prompts.len()];
    for tick in 0..steps + 1 {
        let active: Vec<usize> = (0..prompts.len())
            .filter(|&i| (i < 2 || tick >= 1) && out[i].len() < steps)
            .collect();
        let mut refs: Vec<Option<&mut SeqCache>> = caches.iter_mut().map(Some).collect();
        let mut batch: Vec<BatchItem> = active
            .iter()
            .map(|&i| BatchItem {
                tokens: &pending[i],
                cache: refs[i].take().expect("unique"),
            })
            .collect();
        let logits = rows(&m.step(&mut batch).expect("step"));
        drop(batch);
        for (&i, row) in active.iter().zip(&logits) {
            let t = argmax(row);
            out[i].push(t);
            pending[i] = vec![t];
        }
    }
    assert_eq!(out, solo);
}

fn answer(user: &str, max_tokens: usize) -> String {
    let m = model();
    let tok = tokenizer();
    let eos = [
        tok.eos_token_id(),
        tok.token_to_id("<|im_end|>"),
        tok.token_to_id("<|endoftext|>"),
    ];
    let mut input = chat_ids(user);
    let mut cache = m.new_sequence_cache();
    let mut out = Vec::new();
    for _ in 0..max_tokens {
        let l = rows(
            &m.step(&mut [BatchItem {
                tokens: &input,
                cache: &mut cache,
            }])
            .expect("step"),
        );
        let t = argmax(&l[0]);
        if eos.contains(&Some(t)) {
            break;
        }
        out.push(t);
        input = vec![t];
    }
    tok.decode(&out, true).expect("decode")
}

#[test]
fn greedy_answers_are_sensible() {
    let text = answer("What is the capital of France?", 24);
    eprintln!("capital: {text}");
    assert!(text.contains("Paris"), "{text}");
    let text = answer(
        "Write a Python function `square(x)` that returns x squared. Only code.",
        48,
    );
    eprintln!("code: {text}");
    assert!(text.contains("def square("), "{text}");
}

#[test]
fn qwen2_pre_tokenizer() {
    assert_eq!(
        gguf().get_string("tokenizer.ggml.pre").expect("pre"),
        Some("qwen2")
    );
    let tok = tokenizer();
    assert_eq!(tok.encode("Hello world").expect("encode"), [9707, 1879]);
    let code = "def is_prime(n):\n    if n < 2:\n        return False\n\n\n    return all(n % d for d in range(2, 12345))\n";
    let ids = tok.encode(code).expect("encode");
    assert_eq!(tok.decode(&ids, false).expect("decode"), code);
    let pieces: Vec<String> = ids
        .iter()
        .map(|&i| tok.id_to_token(i).expect("tok"))
        .collect();
    eprintln!("{pieces:?}");
    // Qwen2's regex keeps one leading non-letter with the word (`_prime`,
    // `(n`) and splits numbers into single digits.
    assert!(pieces.iter().any(|p| p == "(n"), "{pieces:?}");
    assert!(pieces
        .iter()
        .all(|p| p.chars().filter(char::is_ascii_digit).count() <= 1));
}

/// Tokenization and the first 32 greedy tokens equal llama.cpp's on the same
/// file, or the first difference is a tie in llama.cpp's logits
/// (`testdata/llm/qwen2-llama-cpp.json`).
#[test]
fn greedy_matches_llama_cpp() {
    let bounds = llama_cpp::Bounds {
        tie: 0.3,
        relative_logits: 1.5,
    };
    llama_cpp::check(model(), tokenizer(), "qwen2-llama-cpp.json", &bounds);
}

/// The same check on Qwen2.5-Coder-1.5B (the benchmark model, ~1.1 GB, which CI does
/// not download): `cargo test -p surge-runtime --test llm_qwen2 -- --ignored`
/// (pulls it into the cache; `SURGE_TEST_QWEN15_GGUF` points at a copy instead).
#[test]
#[ignore = "downloads the 1.1 GB benchmark model"]
fn greedy_matches_llama_cpp_on_the_1_5b() {
    let path = surge_runtime::llm::test_support::catalog_gguf_path(
        "qwen2.5-coder-1.5b-instruct",
        "SURGE_TEST_QWEN15_GGUF",
    );
    let file = GgufFile::open(path).expect("open");
    let tok = Tokenizer::from_gguf(&file).expect("tokenizer");
    let m = LlmModel::load_gguf(&file, &Device::Cpu, &LoadOptions::default()).expect("load");
    let bounds = llama_cpp::Bounds {
        tie: 0.3,
        relative_logits: 1.5,
    };
    llama_cpp::check(&m, &tok, "qwen2-1.5b-llama-cpp.json", &bounds);
}
