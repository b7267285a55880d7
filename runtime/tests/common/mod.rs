//! Helpers shared by the LLM engine integration tests.
#![allow(dead_code)] // each test binary uses a different subset

use std::sync::OnceLock;

use candle_core::{Device, Tensor};
use surge_runtime::llm::test_support::test_gguf_path;
use surge_runtime::llm::*;

pub fn gguf() -> GgufFile {
    GgufFile::open(test_gguf_path()).expect("open test GGUF (set SURGE_TEST_GGUF)")
}

pub fn tokenizer() -> &'static Tokenizer {
    static T: OnceLock<Tokenizer> = OnceLock::new();
    T.get_or_init(|| Tokenizer::from_gguf(&gguf()).expect("tokenizer"))
}

/// One model shared by the tests of this binary; loading is the slow part.
pub fn model() -> &'static LlmModel {
    static M: OnceLock<LlmModel> = OnceLock::new();
    M.get_or_init(|| {
        LlmModel::load(test_gguf_path(), &Device::Cpu, &LoadOptions::default()).expect("load")
    })
}

pub fn load(weight_format: WeightFormat, k_padding: KPadding) -> LlmModel {
    let opts = LoadOptions {
        weight_format,
        k_padding,
        // Format comparisons measure candle's quantized paths.
        cpu_kernels: false,
        ..LoadOptions::default()
    };
    LlmModel::load(test_gguf_path(), &Device::Cpu, &opts).expect("load")
}

pub fn chat_ids(user: &str) -> Vec<u32> {
    let tmpl = ChatTemplate::from_gguf(&gguf(), None).expect("template");
    let prompt = tmpl
        .render(&[ChatMessage::new("user", user)], true)
        .expect("render");
    tokenizer().encode(&prompt).expect("encode")
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

pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

pub fn rows(t: &Tensor) -> Vec<Vec<f32>> {
    logits_rows(t).expect("logits")
}

pub fn prompts() -> Vec<Vec<u32>> {
    vec![
        chat_ids("What is the capital of France?"),
        chat_ids("Write a haiku about the sea."),
        tokenizer().encode("The quick brown fox").expect("encode"),
        chat_ids("Explain in one long sentence why the sky is blue, mentioning Rayleigh scattering and the wavelengths of light involved."),
    ]
}
