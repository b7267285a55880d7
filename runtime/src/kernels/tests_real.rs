//! Parity on the default model's real tensors (SmolLM2-135M Q4_1 GGUF; point
//! `$SURGE_TEST_GGUF` at a Q4_K_M file, e.g. Qwen2.5-Coder-0.5B's, for the
//! k-quants, `Q5_0` and `Q8_0` tensors it mixes).
//!
//! Skipped, with a note on stderr, when the file is absent (`$SURGE_TEST_GGUF`
//! or /tmp/models/smollm2.gguf), so the suite passes on machines without it.
//! Tolerances as in `tests.rs`; the head test additionally requires the same
//! argmax as the exact f32 product and a cosine similarity > 0.9999.

use std::borrow::Cow;
use std::fs::File;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use candle_core::quantized::{gguf_file, QStorage, QTensor};
use candle_core::Device;

use super::tests::{
    check_all_levels, dense_reference, gaussian, max_abs, max_abs_diff, supported_levels,
};
use super::*;

fn gguf_path() -> PathBuf {
    std::env::var_os("SURGE_TEST_GGUF")
        .map_or_else(|| PathBuf::from("/tmp/models/smollm2.gguf"), PathBuf::from)
}

struct Gguf {
    content: gguf_file::Content,
    file: File,
}

impl Gguf {
    fn open() -> Option<Gguf> {
        let path = gguf_path();
        let Ok(mut file) = File::open(&path) else {
            eprintln!("skipping: {} not found", path.display());
            return None;
        };
        let content = gguf_file::Content::read(&mut file).unwrap();
        Some(Gguf { content, file })
    }

    fn tensor(&mut self, name: &str) -> Option<QTensor> {
        if !self.content.tensor_infos.contains_key(name) {
            return None;
        }
        Some(
            self.content
                .tensor(&mut self.file, name, &Device::Cpu)
                .unwrap(),
        )
    }
}

#[test]
fn kernels_real_layer_tensors_match_candle() {
    let Some(mut g) = Gguf::open() else { return };
    for name in [
        "blk.0.attn_q.weight",
        "blk.0.attn_k.weight",
        "blk.0.attn_output.weight",
        "blk.0.ffn_gate.weight",
        "blk.0.ffn_down.weight",
        "blk.0.attn_v.weight",
        "blk.23.ffn_down.weight",
        "blk.29.ffn_up.weight",
    ] {
        // Models differ in depth (SmolLM2 has 30 layers, Qwen2.5-0.5B 24).
        let Some(q) = g.tensor(name) else {
            eprintln!("{name}: not in this file, skipped");
            continue;
        };
        let q = Arc::new(q);
        let Some(w) = QuantMatrix::from_qtensor(&q).unwrap() else {
            eprintln!(
                "{name}: {:?} not supported by the kernels, skipped",
                q.dtype()
            );
            continue;
        };
        let k = w.cols();
        for n in [1, 3, 4, 16, 37] {
            let x = gaussian(n * k, 77 + n as u64);
            let what = format!("{name} {:?} {}x{k}", q.dtype(), w.rows());
            let (e_dense, e_candle) = check_all_levels(&q, &w, &x, n, &what);
            eprintln!("{what} n={n}: rel L2 vs dense {e_dense:.2e}, vs candle {e_candle:.2e}");
        }
    }
}

/// The first `rows` rows of a 2-D quantized tensor as a new tensor.
fn head_rows(q: &QTensor, rows: usize) -> Arc<QTensor> {
    let (all, k) = q.shape().dims2().unwrap();
    let data = q.data().unwrap();
    let bytes = data.len() / all * rows;
    let storage =
        QStorage::from_data(Cow::Owned(data[..bytes].to_vec()), &Device::Cpu, q.dtype()).unwrap();
    Arc::new(QTensor::new(storage, (rows, k)).unwrap())
}

/// Hidden states shaped like the model's final ones: RMS-normalised mixtures
/// of a few token embeddings times `output_norm.weight`.
fn hidden_states(g: &mut Gguf, embed: &QTensor, n: usize) -> Vec<f32> {
    let (vocab, k) = embed.shape().dims2().unwrap();
    let norm: Vec<f32> = g
        .tensor("output_norm.weight")
        .map(|t| t.dequantize(&Device::Cpu).unwrap().to_vec1().unwrap())
        .unwrap_or_else(|| vec![1.0; k]);
    let e = embed.dequantize(&Device::Cpu).unwrap();
    let coeffs = gaussian(n * 3, 5);
    let mut out = Vec::with_capacity(n * k);
    for i in 0..n {
        let mut h = vec![0f32; k];
        for t in 0..3 {
            let tok = (i * 7919 + t * 104_729 + 17) % vocab;
            let row: Vec<f32> = e.get(tok).unwrap().to_vec1().unwrap();
            for (a, b) in h.iter_mut().zip(row) {
                *a += coeffs[i * 3 + t] * b;
            }
        }
        let rms = (h.iter().map(|v| v * v).sum::<f32>() / k as f32 + 1e-5).sqrt();
        out.extend(h.iter().zip(&norm).map(|(v, w)| v / rms * w));
    }
    out
}

fn argmax(v: &[f32]) -> usize {
    v.iter()
        .enumerate()
        .fold((0, f32::NEG_INFINITY), |best, (i, &x)| {
            if x > best.1 {
                (i, x)
            } else {
                best
            }
        })
        .0
}

fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a
        .iter()
        .zip(b)
        .map(|(x, y)| f64::from(*x) * f64::from(*y))
        .sum();
    let na: f64 = a.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
    dot / (na * nb)
}

#[test]
fn kernels_real_head_matches_candle_and_keeps_argmax() {
    let Some(mut g) = Gguf::open() else { return };
    let head = g
        .tensor("output.weight")
        .or_else(|| g.tensor("token_embd.weight"))
        .unwrap();
    eprintln!("head: {:?} {:?}", head.dtype(), head.shape());
    let Some(w) = QuantMatrix::from_qtensor(&head).unwrap() else {
        eprintln!("head dtype {:?} not supported, skipped", head.dtype());
        return;
    };
    // Every n on a 2048-row slice (the scalar level is slow in test builds).
    let slice = head_rows(&head, 2048);
    let ws = QuantMatrix::from_qtensor(&slice).unwrap().unwrap();
    for n in [1, 3, 4, 16, 37] {
        let x = gaussian(n * ws.cols(), 300 + n as u64);
        let (e_dense, e_candle) = check_all_levels(&slice, &ws, &x, n, "head[..2048]");
        eprintln!("head[..2048] n={n}: rel L2 vs dense {e_dense:.2e}, vs candle {e_candle:.2e}");
    }
    // Full head on model-like hidden states: same argmax as the exact product.
    let n = 8;
    let h = hidden_states(&mut g, &head, n);
    let dense = dense_reference(&head, &h, n);
    let pool = Pool::new(2, Duration::from_micros(20));
    let mut reference: Option<Vec<f32>> = None;
    for level in supported_levels()
        .into_iter()
        .filter(|&l| l != Level::Scalar)
    {
        let mut out = vec![0f32; n * w.rows()];
        matmul_with(level, &pool, &w, &h, n, &mut out).unwrap();
        for (i, (ours, exact)) in out.chunks(w.rows()).zip(dense.chunks(w.rows())).enumerate() {
            let (a, b) = (argmax(ours), argmax(exact));
            let cos = cosine(ours, exact);
            eprintln!("{level:?} state {i}: argmax {a} vs exact {b}, cosine {cos:.7}");
            assert_eq!(a, b, "{level:?} state {i}");
            assert!(cos > 0.9999, "{level:?} state {i}: cosine {cos}");
        }
        if let Some(r) = &reference {
            assert!(max_abs_diff(&out, r) <= super::tests::LEVEL_TOL * max_abs(r));
        }
        reference = Some(out);
    }
}
