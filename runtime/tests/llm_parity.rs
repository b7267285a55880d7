//! End-to-end checks of the LLM engine against the real default model.
//!
//! The reference is candle-transformers' `quantized_llama::ModelWeights`, the
//! forward known to answer coherently with this GGUF; ours must agree with it
//! on the same weights, and batching or chunking must not change results.

use std::io::BufWriter;
use std::path::Path;
use std::sync::OnceLock;

use candle_core::quantized::{gguf_file, GgmlDType, QTensor};
use candle_core::{Device, IndexOp, Tensor};
use candle_transformers::models::quantized_llama::ModelWeights;
use surge_runtime::llm::test_support::test_gguf_path;
use surge_runtime::llm::weights::{convert, converted};
use surge_runtime::llm::*;

fn gguf() -> GgufFile {
    GgufFile::open(test_gguf_path()).expect("open test GGUF (set SURGE_TEST_GGUF)")
}

fn tokenizer() -> &'static Tokenizer {
    static T: OnceLock<Tokenizer> = OnceLock::new();
    T.get_or_init(|| Tokenizer::from_gguf(&gguf()).expect("tokenizer"))
}

/// One model shared by the tests of this binary; loading is the slow part.
fn model() -> &'static LlmModel {
    static M: OnceLock<LlmModel> = OnceLock::new();
    M.get_or_init(|| {
        LlmModel::load(test_gguf_path(), &Device::Cpu, &LoadOptions::default()).expect("load")
    })
}

fn chat_ids(user: &str) -> Vec<u32> {
    let tmpl = ChatTemplate::from_gguf(&gguf(), None).expect("template");
    let prompt = tmpl
        .render(&[ChatMessage::new("user", user)], true)
        .expect("render");
    tokenizer().encode(&prompt).expect("encode")
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

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

fn rows(t: &Tensor) -> Vec<Vec<f32>> {
    logits_rows(t).expect("logits")
}

/// Writes a GGUF whose weights are exactly what our model holds in memory
/// under `WeightFormat::Auto`, so the reference forward sees identical
/// numbers: layer matmuls requantized, token embeddings dequantized to f32 (we
/// look rows up in the original quantization) and an explicit Q8_0
/// `output.weight` (our converted tied head).
fn write_auto_format_gguf(src: &Path, dst: &Path) {
    let mut reader = std::fs::File::open(src).expect("open");
    let ct = gguf_file::Content::read(&mut reader).expect("read");
    let dev = Device::Cpu;
    let mut tensors: Vec<(String, QTensor)> = Vec::new();
    for name in ct.tensor_infos.keys() {
        let q = ct.tensor(&mut reader, name, &dev).expect("tensor");
        if name == "token_embd.weight" {
            let head = converted(&q, WeightFormat::Auto, &dev).expect("convert");
            let head = head.unwrap_or(
                QTensor::quantize(&q.dequantize(&dev).expect("deq"), q.dtype()).expect("q"),
            );
            tensors.push(("output.weight".into(), head));
            let dense =
                QTensor::quantize(&q.dequantize(&dev).expect("deq"), GgmlDType::F32).expect("f32");
            tensors.push((name.clone(), dense));
        } else if name.ends_with("norm.weight") {
            tensors.push((name.clone(), q));
        } else {
            tensors.push((
                name.clone(),
                convert(q, WeightFormat::Auto, &dev).expect("convert"),
            ));
        }
    }
    let md: Vec<(&str, &gguf_file::Value)> =
        ct.metadata.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let ts: Vec<(&str, &QTensor)> = tensors.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let mut w = BufWriter::new(std::fs::File::create(dst).expect("create"));
    gguf_file::write(&mut w, &md, &ts).expect("write");
}

fn reference(path: &Path) -> ModelWeights {
    let mut f = std::fs::File::open(path).expect("open");
    let ct = gguf_file::Content::read(&mut f).expect("read");
    ModelWeights::from_gguf(ct, &mut f, &Device::Cpu).expect("reference load")
}

/// Prefill then greedy decode with both forwards, feeding the reference's
/// choice to both; returns (max abs logit diff, max |logit|) over all steps.
fn compare_greedy(
    ours: &LlmModel,
    theirs: &mut ModelWeights,
    prompt: &[u32],
    steps: usize,
) -> (f32, f32) {
    let mut cache = ours.new_sequence_cache();
    let mut worst = 0f32;
    let mut scale = 0f32;
    let mut input = prompt.to_vec();
    let mut pos = 0;
    for step in 0..=steps {
        let ids = Tensor::new(input.as_slice(), &Device::Cpu)
            .expect("ids")
            .unsqueeze(0)
            .expect("unsq");
        let want = theirs.forward(&ids, pos).expect("reference forward");
        let want: Vec<f32> = want.i(0).expect("row").to_vec1().expect("vec");
        let got = ours
            .step(&mut [BatchItem {
                tokens: &input,
                cache: &mut cache,
            }])
            .expect("step");
        let got = &rows(&got)[0];
        assert_eq!(argmax(got), argmax(&want), "argmax differs at step {step}");
        worst = worst.max(max_abs_diff(got, &want));
        scale = scale.max(want.iter().fold(0f32, |m, x| m.max(x.abs())));
        pos += input.len();
        input = vec![argmax(&want)];
    }
    (worst, scale)
}

#[test]
fn parity_with_candle_quantized_llama_as_stored() {
    let path = test_gguf_path();
    let opts = LoadOptions {
        weight_format: WeightFormat::AsStored,
        ..LoadOptions::default()
    };
    let ours = LlmModel::load(&path, &Device::Cpu, &opts).expect("load");
    let mut theirs = reference(&path);
    let (diff, scale) = compare_greedy(&ours, &mut theirs, &chat_ids("Name three colors."), 10);
    eprintln!("as-stored parity: max abs logit diff {diff:e} (max |logit| {scale})");
    assert!(diff < 1e-3 * scale.max(1.0), "diff {diff}");
}

#[test]
fn parity_with_candle_quantized_llama_requantized() {
    let dir = tempfile::tempdir().expect("tempdir");
    let requant = dir.path().join("auto.gguf");
    write_auto_format_gguf(&test_gguf_path(), &requant);
    let mut theirs = reference(&requant);
    let (diff, scale) = compare_greedy(model(), &mut theirs, &chat_ids("Name three colors."), 10);
    eprintln!("auto-format parity: max abs logit diff {diff:e} (max |logit| {scale})");
    assert!(diff < 1e-3 * scale.max(1.0), "diff {diff}");
}

/// Greedy tokens of each prompt decoded alone.
fn solo_greedy(m: &LlmModel, prompt: &[u32], steps: usize) -> Vec<u32> {
    let mut cache = m.new_sequence_cache();
    let mut out = Vec::new();
    let mut input = prompt.to_vec();
    for _ in 0..steps {
        let l = m
            .step(&mut [BatchItem {
                tokens: &input,
                cache: &mut cache,
            }])
            .expect("step");
        let t = argmax(&rows(&l)[0]);
        out.push(t);
        input = vec![t];
    }
    out
}

fn prompts() -> Vec<Vec<u32>> {
    vec![
        chat_ids("What is the capital of France?"),
        chat_ids("Write a haiku about the sea."),
        tokenizer().encode("The quick brown fox").expect("encode"),
        chat_ids("Explain in one long sentence why the sky is blue, mentioning Rayleigh scattering and the wavelengths of light involved."),
    ]
}

#[test]
fn packed_batch_matches_solo_decoding() {
    let m = model();
    let prompts = prompts();
    let steps = 8;
    let solo: Vec<Vec<u32>> = prompts.iter().map(|p| solo_greedy(m, p, steps)).collect();

    // All four prompts in one packed prefill, then decoded together.
    let mut caches: Vec<SeqCache> = prompts.iter().map(|_| m.new_sequence_cache()).collect();
    let mut inputs = prompts.clone();
    let mut batched: Vec<Vec<u32>> = vec![Vec::new(); prompts.len()];
    for _ in 0..steps {
        let mut batch: Vec<BatchItem> = inputs
            .iter()
            .zip(caches.iter_mut())
            .map(|(t, c)| BatchItem {
                tokens: t,
                cache: c,
            })
            .collect();
        let logits = rows(&m.step(&mut batch).expect("step"));
        for (i, row) in logits.iter().enumerate() {
            let t = argmax(row);
            batched[i].push(t);
            inputs[i] = vec![t];
        }
    }
    assert_eq!(batched, solo);
    for (c, p) in caches.iter().zip(&prompts) {
        assert_eq!(c.len(), p.len() + steps - 1);
    }
}

#[test]
fn staggered_joins_match_solo_decoding() {
    // Continuous batching: sequences join mid-flight, so one step mixes a
    // prefill chunk of one sequence with decode tokens of others.
    let m = model();
    let prompts = prompts();
    let steps = 6;
    let solo: Vec<Vec<u32>> = prompts.iter().map(|p| solo_greedy(m, p, steps)).collect();
    let mut caches: Vec<SeqCache> = prompts.iter().map(|_| m.new_sequence_cache()).collect();
    let mut pending: Vec<Vec<u32>> = prompts.clone();
    let mut out: Vec<Vec<u32>> = vec![Vec::new(); prompts.len()];
    for tick in 0..steps + prompts.len() {
        // Sequence i joins at tick i and leaves after `steps` tokens.
        let active: Vec<usize> = (0..prompts.len())
            .filter(|&i| i <= tick && out[i].len() < steps)
            .collect();
        let mut caches_ref: Vec<Option<&mut SeqCache>> = caches.iter_mut().map(Some).collect();
        let mut batch: Vec<BatchItem> = active
            .iter()
            .map(|&i| BatchItem {
                tokens: &pending[i],
                cache: caches_ref[i].take().expect("unique"),
            })
            .collect();
        if batch.is_empty() {
            continue;
        }
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

/// Next-token logits after feeding `prompt` whole and in chunks of 7.
fn whole_and_chunked(m: &LlmModel, prompt: &[u32]) -> (Vec<f32>, Vec<f32>) {
    let mut whole = m.new_sequence_cache();
    let mut single = rows(
        &m.step(&mut [BatchItem {
            tokens: prompt,
            cache: &mut whole,
        }])
        .expect("step"),
    );
    let mut chunked = m.new_sequence_cache();
    let mut last = Vec::new();
    for chunk in prompt.chunks(7) {
        last = rows(
            &m.step(&mut [BatchItem {
                tokens: chunk,
                cache: &mut chunked,
            }])
            .expect("step"),
        );
    }
    assert_eq!(chunked.len(), whole.len());
    (single.swap_remove(0), last.swap_remove(0))
}

#[test]
fn chunked_prefill_matches_single_prefill() {
    let prompt = prompts().pop().expect("prompt");
    assert!(prompt.len() > 30, "prompt of {} tokens", prompt.len());

    // Dense weights: chunking changes only the float summation order inside
    // attention, so logits must agree closely. This pins down masks and
    // positions of chunks that start past 0.
    let dense = LlmModel::load(
        test_gguf_path(),
        &Device::Cpu,
        &LoadOptions {
            weight_format: WeightFormat::F32,
            ..LoadOptions::default()
        },
    )
    .expect("load");
    let (single, chunked) = whole_and_chunked(&dense, &prompt);
    let diff = max_abs_diff(&single, &chunked);
    eprintln!("dense weights, chunked vs single prefill: max abs logit diff {diff:e}");
    assert_eq!(argmax(&chunked), argmax(&single));
    assert!(diff < 1e-3, "diff {diff}");

    // Quantized matmuls quantize their inputs to 8 bits, so those ~1e-7
    // differences flip some roundings and grow to a few percent of the logit
    // range; the chosen token must still agree.
    let (single, chunked) = whole_and_chunked(model(), &prompt);
    let diff = max_abs_diff(&single, &chunked);
    let scale = single.iter().fold(0f32, |m, x| m.max(x.abs()));
    eprintln!("default weights, chunked vs single prefill: max abs logit diff {diff:e} (max |logit| {scale})");
    assert_eq!(argmax(&chunked), argmax(&single));
    assert!(diff < 0.05 * scale, "diff {diff}");
}

fn greedy_answer(m: &LlmModel, messages: &[ChatMessage]) -> String {
    let tok = tokenizer();
    let tmpl = ChatTemplate::from_gguf(&gguf(), None).expect("template");
    let prompt = tmpl.render(messages, true).expect("render");
    let mut input = tok.encode(&prompt).expect("encode");
    let mut cache = m.new_sequence_cache();
    let mut sampler = Sampler::new(SamplingParams::greedy()).expect("sampler");
    let mut answer = Vec::new();
    for _ in 0..40 {
        let l = m
            .step(&mut [BatchItem {
                tokens: &input,
                cache: &mut cache,
            }])
            .expect("step");
        let t = sampler.sample(&rows(&l)[0]).expect("sample").token;
        if Some(t) == tok.eos_token_id() {
            break;
        }
        answer.push(t);
        input = vec![t];
    }
    tok.decode(&answer, true).expect("decode")
}

/// With the template's default system prompt, the first answer token is a
/// near tie in exact arithmetic ("The" 25.33 vs "L" 25.24 with dense
/// weights); the 8-bit activation rounding of quantized matmuls (candle's and
/// llama.cpp's alike) flips it and the 135M model then rambles. So the exact
/// question is checked with dense weights, and the default weights are
/// checked with an explicit system prompt.
#[test]
fn greedy_chat_answer_mentions_paris_dense_weights() {
    let dense = LlmModel::load(
        test_gguf_path(),
        &Device::Cpu,
        &LoadOptions {
            weight_format: WeightFormat::F32,
            ..LoadOptions::default()
        },
    )
    .expect("load");
    let text = greedy_answer(
        &dense,
        &[ChatMessage::new("user", "What is the capital of France?")],
    );
    eprintln!("dense answer: {text}");
    assert!(text.contains("Paris"), "{text}");
}

#[test]
fn greedy_chat_answer_mentions_paris() {
    let text = greedy_answer(
        model(),
        &[
            ChatMessage::new("system", "You are a helpful assistant."),
            ChatMessage::new("user", "What is the capital of France?"),
        ],
    );
    eprintln!("answer: {text}");
    assert!(text.contains("Paris"), "{text}");
}

#[test]
fn invalid_steps_fail_without_changing_caches() {
    let m = model();
    let mut cache = m.new_sequence_cache();
    let vocab = m.config().vocab_size as u32;
    assert!(m.step(&mut []).is_err());
    assert!(m
        .step(&mut [BatchItem {
            tokens: &[],
            cache: &mut cache
        }])
        .is_err());
    assert!(m
        .step(&mut [BatchItem {
            tokens: &[1, vocab],
            cache: &mut cache
        }])
        .is_err());
    assert_eq!(cache.len(), 0);
    m.step(&mut [BatchItem {
        tokens: &[1, 2, 3],
        cache: &mut cache,
    }])
    .expect("step");
    assert_eq!(cache.len(), 3);
    cache.truncate(1);
    assert_eq!(cache.len(), 1);

    let small = LlmModel::load(
        test_gguf_path(),
        &Device::Cpu,
        &LoadOptions {
            max_context: Some(8),
            ..LoadOptions::default()
        },
    )
    .expect("load");
    let mut c = small.new_sequence_cache();
    let err = small
        .step(&mut [BatchItem {
            tokens: &[1; 9],
            cache: &mut c,
        }])
        .expect_err("overflow");
    assert!(
        matches!(
            err,
            LlmError::ContextOverflow {
                requested: 9,
                max: 8
            }
        ),
        "{err}"
    );
    // A cache from another model instance with the same shapes is accepted,
    // but one whose shapes differ is not; here the shapes match.
    let mut other = small.new_sequence_cache();
    m.step(&mut [BatchItem {
        tokens: &[1],
        cache: &mut other,
    }])
    .expect("same shapes");
}
