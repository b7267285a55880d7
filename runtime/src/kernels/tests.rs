//! Parity tests on random matrices quantized by candle.
//!
//! Tolerances (why these numbers): the kernels quantize activations to 8 bits
//! per block of 32, which alone moves a dot product by ~0.3–0.6% of the output
//! norm for Gaussian inputs; candle's Q8_1/Q8_0 activation quantization does
//! the same independently. So against the exact product of the dequantized
//! weights we require a relative L2 error < 1.5e-2, and the same against
//! candle's `QMatMul::forward`. All levels compute identical integer sums and
//! differ only in float summation order, so they must agree with the scalar
//! reference to 1e-5 of the output's largest magnitude.

use std::sync::Arc;
use std::time::Duration;

use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
use candle_core::{Device, Module, Tensor};

use super::*;

pub(super) const REL_L2_TOL: f32 = 1.5e-2;
pub(super) const LEVEL_TOL: f32 = 1e-5;

/// Deterministic pseudo-Gaussian values (sum of uniforms), no RNG crate state.
pub(super) fn gaussian(len: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut uniform = || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        (s >> 40) as f32 / (1u64 << 24) as f32
    };
    (0..len)
        .map(|_| (0..4).map(|_| uniform()).sum::<f32>() - 2.0)
        .collect()
}

pub(super) fn rel_l2(a: &[f32], reference: &[f32]) -> f32 {
    let num: f64 = a
        .iter()
        .zip(reference)
        .map(|(x, y)| f64::from(x - y).powi(2))
        .sum();
    let den: f64 = reference.iter().map(|y| f64::from(*y).powi(2)).sum();
    (num / den.max(1e-30)).sqrt() as f32
}

pub(super) fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

pub(super) fn max_abs(a: &[f32]) -> f32 {
    a.iter().map(|x| x.abs()).fold(0.0, f32::max)
}

pub(super) fn supported_levels() -> Vec<Level> {
    Level::ALL
        .into_iter()
        .filter(|l| l.is_supported())
        .collect()
}

/// Exact `x · wᵀ` of candle's dequantized weights (candle's f32 matmul).
pub(super) fn dense_reference(q: &QTensor, x: &[f32], n: usize) -> Vec<f32> {
    let (_, k) = q.shape().dims2().unwrap();
    let w = q.dequantize(&Device::Cpu).unwrap();
    let x = Tensor::from_slice(x, (n, k), &Device::Cpu).unwrap();
    x.matmul(&w.t().unwrap())
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap()
}

pub(super) fn candle_forward(q: &Arc<QTensor>, x: &[f32], n: usize) -> Vec<f32> {
    let (_, k) = q.shape().dims2().unwrap();
    let mm = QMatMul::from_arc(Arc::clone(q)).unwrap();
    let x = Tensor::from_slice(x, (n, k), &Device::Cpu).unwrap();
    mm.forward(&x)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap()
}

/// Checks every supported level (pooled and single-threaded) against the
/// scalar level, the dense reference and candle. Returns the worst errors.
pub(super) fn check_all_levels(
    q: &Arc<QTensor>,
    w: &QuantMatrix,
    x: &[f32],
    n: usize,
    what: &str,
) -> (f32, f32) {
    let pool = Pool::new(2, Duration::from_micros(20));
    let single = Pool::new(1, Duration::ZERO);
    let rows = w.rows();
    let dense = dense_reference(q, x, n);
    let candle = candle_forward(q, x, n);
    let mut scalar = vec![0f32; n * rows];
    matmul_with(Level::Scalar, &single, w, x, n, &mut scalar).unwrap();
    let scale = max_abs(&dense).max(1e-6);
    let (mut worst_dense, mut worst_candle) = (0f32, 0f32);
    for level in supported_levels() {
        for p in [&pool, &single] {
            let mut out = vec![f32::NAN; n * rows];
            matmul_with(level, p, w, x, n, &mut out).unwrap();
            let e_dense = rel_l2(&out, &dense);
            let e_candle = rel_l2(&out, &candle);
            let e_level = max_abs_diff(&out, &scalar) / scale;
            assert!(
                e_dense < REL_L2_TOL && e_candle < REL_L2_TOL && e_level < LEVEL_TOL,
                "{what} n={n} {level:?} threads={}: rel L2 vs dense {e_dense:.2e}, vs candle \
                 {e_candle:.2e}, vs scalar {e_level:.2e}",
                p.threads()
            );
            worst_dense = worst_dense.max(e_dense);
            worst_candle = worst_candle.max(e_candle);
        }
    }
    (worst_dense, worst_candle)
}

/// Deterministic pseudo-random floats in [-r, r].
pub(super) fn rand_vec(n: usize, seed: &mut u64, r: f32) -> Vec<f32> {
    (0..n)
        .map(|_| {
            *seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((*seed >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * r
        })
        .collect()
}

pub(super) fn random_matrix(
    rows: usize,
    k: usize,
    dtype: GgmlDType,
    seed: u64,
) -> (Arc<QTensor>, QuantMatrix) {
    let t = Tensor::from_vec(gaussian(rows * k, seed), (rows, k), &Device::Cpu).unwrap();
    let q = Arc::new(QTensor::quantize(&t, dtype).unwrap());
    let w = QuantMatrix::from_qtensor(&q)
        .unwrap()
        .expect("supported dtype");
    (q, w)
}

#[test]
fn kernels_repack_is_lossless() {
    for dtype in [GgmlDType::Q4_1, GgmlDType::Q8_0] {
        // 37 rows: a padded last group; 96 columns: 3 blocks.
        let (q, w) = random_matrix(37, 96, dtype, 7);
        assert_eq!((w.rows(), w.cols(), w.groups()), (37, 96, 3));
        let ours = w.dequantize();
        let theirs: Vec<f32> = q
            .dequantize(&Device::Cpu)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        assert_eq!(ours, theirs, "{dtype:?}");
        assert_eq!(
            w.size_in_bytes(),
            48 / 16 * 3 * w.format().group_block_bytes()
        );
    }
}

#[test]
fn kernels_random_matrices_match_candle_on_every_level() {
    for dtype in [GgmlDType::Q4_1, GgmlDType::Q8_0] {
        // Shapes: padded groups (50 rows), the model's k/v and down shapes.
        for (rows, k) in [(50, 64), (192, 576), (64, 1536)] {
            let (q, w) = random_matrix(rows, k, dtype, rows as u64 * 31 + k as u64);
            for n in [1, 3, 4, 16, 37] {
                let x = gaussian(n * k, 1000 + n as u64);
                let (e_dense, e_candle) =
                    check_all_levels(&q, &w, &x, n, &format!("{dtype:?} {rows}x{k}"));
                eprintln!("{dtype:?} {rows}x{k} n={n}: rel L2 vs dense {e_dense:.2e}, vs candle {e_candle:.2e}");
            }
        }
    }
}

#[test]
fn kernels_threads_do_not_change_results() {
    let (_, w) = random_matrix(400, 576, GgmlDType::Q4_1, 3);
    let x = gaussian(5 * 576, 4);
    for level in supported_levels() {
        let mut a = vec![0f32; 5 * 400];
        let mut b = vec![0f32; 5 * 400];
        matmul_with(level, &Pool::new(1, Duration::ZERO), &w, &x, 5, &mut a).unwrap();
        matmul_with(
            level,
            &Pool::new(3, Duration::from_micros(10)),
            &w,
            &x,
            5,
            &mut b,
        )
        .unwrap();
        assert_eq!(a, b, "{level:?}");
    }
}

#[test]
fn kernels_shapes_and_edge_cases() {
    let (q, w) = random_matrix(20, 64, GgmlDType::Q8_0, 5);
    let mut out = vec![0f32; 40];
    assert!(matmul(&w, &[0.0; 64], 2, &mut out).is_err());
    assert!(matmul(&w, &[0.0; 128], 2, &mut out[..39]).is_err());
    assert!(matmul(&w, &[], 0, &mut []).is_ok());
    // Zero input gives exact zeros (no NaN from a zero scale).
    matmul(&w, &[0.0; 128], 2, &mut out).unwrap();
    assert!(out.iter().all(|&v| v == 0.0));
    // Unsupported dtypes and ranks are declined, not errors.
    let t = Tensor::from_vec(gaussian(64 * 32, 1), (64, 32), &Device::Cpu).unwrap();
    let q4_0 = QTensor::quantize(
        &Tensor::zeros((4, 256), candle_core::DType::F32, &Device::Cpu).unwrap(),
        GgmlDType::Q4_0,
    )
    .unwrap();
    assert!(QuantMatrix::from_qtensor(&q4_0).unwrap().is_none());
    let q1d = QTensor::quantize(&t.flatten_all().unwrap(), GgmlDType::Q8_0).unwrap();
    assert!(QuantMatrix::from_qtensor(&q1d).unwrap().is_none());
    assert!(QuantMatrix::from_ggml_bytes(QuantFormat::Q8_0, 2, 32, &[0; 10]).is_err());
    assert!(QuantMatrix::from_ggml_bytes(QuantFormat::Q8_0, 2, 33, &[0; 68]).is_err());
    // The forward helper matches matmul, with leading dims kept.
    let x = gaussian(3 * 2 * 64, 9);
    let xt = Tensor::from_slice(&x, (3, 2, 64), &Device::Cpu).unwrap();
    let y = w.forward(&xt).unwrap();
    assert_eq!(y.dims(), &[3, 2, 20]);
    let mut direct = vec![0f32; 6 * 20];
    matmul(&w, &x, 6, &mut direct).unwrap();
    assert_eq!(y.flatten_all().unwrap().to_vec1::<f32>().unwrap(), direct);
    // Non-contiguous input takes the copying path and agrees.
    let xt2 = Tensor::from_slice(&x, (64, 6), &Device::Cpu)
        .unwrap()
        .t()
        .unwrap();
    let y2 = w.forward(&xt2).unwrap();
    let flat: Vec<f32> = xt2.flatten_all().unwrap().to_vec1().unwrap();
    let mut direct2 = vec![0f32; 6 * 20];
    matmul(&w, &flat, 6, &mut direct2).unwrap();
    assert_eq!(y2.flatten_all().unwrap().to_vec1::<f32>().unwrap(), direct2);
    drop(q);
}

#[test]
fn kernels_level_names_and_clamping() {
    for l in Level::ALL {
        assert_eq!(Level::parse(l.name()), Some(l));
        assert!(l.clamp_supported() <= l && l.clamp_supported().is_supported());
    }
    assert_eq!(Level::parse("nope"), None);
    assert!(active_level().is_supported());
}

/// Our f32 → Q8_0 quantizer against candle's: the same blocks, up to a one-step
/// difference where a value sits exactly between two levels (we round ties to even,
/// ggml away from zero).
#[test]
fn kernels_q8_0_quantizer_matches_candle() {
    let (rows, cols) = (37, 96);
    let w: Vec<f32> = (0..rows * cols)
        .map(|i| ((i * 7919 % 2003) as f32 / 2003.0 - 0.5) * (1.0 + (i % 7) as f32))
        .collect();
    let ours = QuantMatrix::quantize_q8_0(rows, cols, &w).unwrap();
    let t = Tensor::from_vec(w.clone(), (rows, cols), &Device::Cpu).unwrap();
    let theirs = QTensor::quantize(&t, GgmlDType::Q8_0).unwrap();
    let theirs = QuantMatrix::from_qtensor(&theirs).unwrap().unwrap();
    let (a, b) = (ours.dequantize(), theirs.dequantize());
    for (i, ((x, y), orig)) in a.iter().zip(&b).zip(&w).enumerate() {
        let block = &w[i / 32 * 32..][..32];
        let step = block.iter().fold(0f32, |m, v| m.max(v.abs())) / 127.0;
        assert!((x - y).abs() <= step * 1.001, "{i}: {x} vs {y}");
        // Half a step of rounding, plus the scale's own rounding to f16 (2^-11
        // relative) times up to 127 steps.
        let bound = step * (0.5 + 127.0 / 2048.0) * 1.01;
        assert!((x - orig).abs() <= bound, "{i}: {x} vs exact {orig}");
    }
}

/// Fused loading repacks the parts straight from their bytes: the same matrix as
/// repacking their concatenation (37 + 21 rows, so a group straddles the seam).
#[test]
fn kernels_repack_of_parts_equals_repack_of_concatenation() {
    for dtype in [GgmlDType::Q4_1, GgmlDType::Q8_0] {
        let (a, _) = random_matrix(37, 96, dtype, 11);
        let (b, _) = random_matrix(21, 96, dtype, 12);
        let (da, db) = (a.data().unwrap(), b.data().unwrap());
        let format = QuantFormat::from_ggml_dtype(dtype).unwrap();
        let parts = QuantMatrix::from_ggml_parts(format, 96, &[&da, &db]).unwrap();
        let whole =
            QuantMatrix::from_ggml_bytes(format, 58, 96, &[&da[..], &db[..]].concat()).unwrap();
        assert_eq!((parts.rows(), parts.cols()), (58, 96));
        assert_eq!(parts.bytes(), whole.bytes(), "{dtype:?}");
        // A part that is not whole rows is refused.
        assert!(QuantMatrix::from_ggml_parts(format, 96, &[&da[..da.len() - 1]]).is_err());
    }
}

/// The f16 quantizer (Whisper's weights as stored) equals the f32 one on the widened
/// values, byte for byte.
#[test]
fn kernels_q8_0_quantizer_from_f16_equals_widened() {
    let (rows, cols) = (37, 96);
    let h: Vec<half::f16> = (0..rows * cols)
        .map(|i| half::f16::from_f32(((i * 7919 % 2003) as f32 / 2003.0 - 0.5) * 3.0))
        .collect();
    let w: Vec<f32> = h.iter().map(|v| v.to_f32()).collect();
    let from_f16 = QuantMatrix::quantize_q8_0_f16(rows, cols, &h).unwrap();
    let from_f32 = QuantMatrix::quantize_q8_0(rows, cols, &w).unwrap();
    assert_eq!(from_f16.bytes(), from_f32.bytes());
}
