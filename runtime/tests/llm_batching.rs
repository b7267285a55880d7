//! Continuous-batching properties of the LLM engine on the real model:
//! packing sequences together, joining mid-flight and chunking prompts must
//! not change what each sequence generates.

use candle_core::Device;
use surge_runtime::llm::test_support::test_gguf_path;
use surge_runtime::llm::*;

mod common;
use common::*;

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
        let mut batch = BatchItem::pack(&inputs, &mut caches);
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

/// Next-token logits after feeding `prompt` whole and in chunks of `chunk`.
fn whole_and_chunked(m: &LlmModel, prompt: &[u32], chunk: usize) -> (Vec<f32>, Vec<f32>) {
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
    for chunk in prompt.chunks(chunk) {
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

/// The fused attention computes every row the same way whatever chunk it arrives in,
/// and our matmul kernels are row-wise, so a prompt fed whole, in chunks, or token by
/// token (the decode path) gives bit-identical logits: what lets the prefix cache
/// reuse a cache filled by other chunk shapes without changing a token.
#[test]
fn chunked_prefill_matches_single_prefill_exactly() {
    let prompt = prompts().pop().expect("prompt");
    assert!(prompt.len() > 30, "prompt of {} tokens", prompt.len());
    for chunk in [1, 7, 16, 33] {
        let (single, chunked) = whole_and_chunked(model(), &prompt, chunk);
        assert!(single == chunked, "chunks of {chunk}");
    }
    // Dense f32 weights go through candle's matmul, which takes another path for a
    // single row: token by token agrees only to float rounding there.
    let dense = LlmModel::load(
        test_gguf_path(),
        &Device::Cpu,
        &LoadOptions {
            weight_format: WeightFormat::F32,
            ..LoadOptions::default()
        },
    )
    .expect("load");
    for chunk in [1, 7] {
        let (single, chunked) = whole_and_chunked(&dense, &prompt, chunk);
        let diff = max_abs_diff(&single, &chunked);
        assert_eq!(argmax(&chunked), argmax(&single));
        assert!(diff < 1e-3, "dense, chunks of {chunk}: diff {diff}");
    }
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
/// weights) and the 8-bit activation rounding of the quantized matmuls
/// (measured with Q4_1 as stored and with unpadded Q8_0, which both match
/// candle's quantized_llama exactly) flips it to "L'Étoile, la
/// Marseillaise..."; this is the 135M model at a tie, not an engine error.
/// So the exact question is checked with dense weights, and the default
/// weights are checked with an explicit system prompt.
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
