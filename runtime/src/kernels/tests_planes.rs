//! Parity tests of the plane formats (`Q5_0`, `Q5_1`, `Q4_K`, `Q5_K`,
//! `Q6_K`) on random matrices quantized by candle; tolerances as in
//! `tests.rs` (the exact product of candle's `dequantize`, candle's own
//! `QMatMul`, and every level against the scalar reference).

use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Tensor};

use super::tests::{check_all_levels, gaussian, random_matrix};
use super::*;

const PLANE_DTYPES: [GgmlDType; 5] = [
    GgmlDType::Q5_0,
    GgmlDType::Q5_1,
    GgmlDType::Q4K,
    GgmlDType::Q5K,
    GgmlDType::Q6K,
];

#[test]
fn kernels_planes_repack_is_lossless() {
    for dtype in PLANE_DTYPES {
        // 37 rows: a padded last group; 512 columns: two k-quant super-blocks.
        let (q, w) = random_matrix(37, 512, dtype, 17);
        assert_eq!((w.rows(), w.cols(), w.groups()), (37, 512, 3));
        let theirs: Vec<f32> = q
            .dequantize(&Device::Cpu)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        assert_eq!(w.dequantize(), theirs, "{dtype:?}");
        let f = w.format();
        assert_eq!(f.ggml_dtype(), dtype);
        assert_eq!(
            w.size_in_bytes(),
            3 * 512 / f.block_values() * f.group_block_bytes()
        );
        let file_bpw = 8.0 * f.ggml_block_bytes() as f64 / f.block_values() as f64;
        let ours = f.bits_per_weight();
        eprintln!("{dtype:?}: {ours} bits/weight (file {file_bpw})");
        assert!(ours >= file_bpw && ours <= file_bpw + 0.13, "{dtype:?}");
    }
}

/// Every format × level × column count 1..=20 (so every batched body, and
/// the tails after full passes of 8 or 4), pooled and single-threaded.
#[test]
fn kernels_planes_match_candle_on_every_level() {
    for dtype in PLANE_DTYPES {
        // Padded groups, one super-block, and a model-like width split
        // over the pool.
        for (rows, k) in [(37, 256), (50, 512), (200, 1536)] {
            let (q, w) = random_matrix(rows, k, dtype, rows as u64 * 17 + k as u64);
            let what = format!("{dtype:?} {rows}x{k}");
            let mut worst = (0f32, 0f32);
            for n in 1..=20 {
                let x = gaussian(n * k, 500 + n as u64);
                let (d, c) = check_all_levels(&q, &w, &x, n, &what);
                worst = (worst.0.max(d), worst.1.max(c));
            }
            eprintln!(
                "{what} n=1..=20: rel L2 vs dense {:.2e}, vs candle {:.2e}",
                worst.0, worst.1
            );
        }
    }
}

/// Weights at their format's largest integer and activations all ±127 fill
/// the i16 budget of the AVX2 kernels to the brim (a widening too late
/// overflows and shows as a difference from the scalar reference). Per 16
/// values one anchor of the opposite sign and larger magnitude sets the
/// scale (and minimum), which puts the 15 others at the top of the range
/// for one of the two signs, whichever way each format rounds.
#[test]
fn kernels_planes_extreme_values_do_not_saturate() {
    let (rows, k) = (32, 512);
    for dtype in PLANE_DTYPES {
        for sign in [1f32, -1.0] {
            let w: Vec<f32> = (0..rows * k)
                .map(|i| if i % 16 == 0 { -sign } else { 0.97 * sign })
                .collect();
            let t = Tensor::from_vec(w, (rows, k), &Device::Cpu).unwrap();
            let q = std::sync::Arc::new(QTensor::quantize(&t, dtype).unwrap());
            let m = QuantMatrix::from_qtensor(&q).unwrap().unwrap();
            for x_sign in [1f32, -1.0] {
                let x = vec![x_sign; 3 * k];
                let what = format!("{dtype:?} extremes w {sign} x {x_sign}");
                check_all_levels(&q, &m, &x, 3, &what);
            }
        }
    }
}

#[test]
fn kernels_planes_parts_equal_concatenation_and_shapes_are_checked() {
    for dtype in PLANE_DTYPES {
        let (a, _) = random_matrix(37, 256, dtype, 21);
        let (b, _) = random_matrix(21, 256, dtype, 22);
        let (da, db) = (a.data().unwrap(), b.data().unwrap());
        let format = QuantFormat::from_ggml_dtype(dtype).unwrap();
        let parts = QuantMatrix::from_ggml_parts(format, 256, &[&da, &db]).unwrap();
        let whole =
            QuantMatrix::from_ggml_bytes(format, 58, 256, &[&da[..], &db[..]].concat()).unwrap();
        assert_eq!((parts.rows(), parts.cols()), (58, 256));
        assert_eq!(parts.bytes(), whole.bytes(), "{dtype:?}");
        assert!(QuantMatrix::from_ggml_parts(format, 256, &[&da[..da.len() - 1]]).is_err());
    }
    // K-quants need whole 256-value super-blocks per row.
    let row = vec![0u8; 144];
    assert!(QuantMatrix::from_ggml_bytes(QuantFormat::Q4K, 1, 256, &row).is_ok());
    assert!(QuantMatrix::from_ggml_parts(QuantFormat::Q4K, 128, &[&row]).is_err());
    // Zero input gives exact zeros on every level.
    let (_, w) = random_matrix(20, 256, GgmlDType::Q6K, 5);
    for level in super::tests::supported_levels() {
        let mut out = vec![f32::NAN; 3 * 20];
        matmul_with(level, global_pool(), &w, &[0.0; 3 * 256], 3, &mut out).unwrap();
        assert!(out.iter().all(|&v| v == 0.0), "{level:?}");
    }
}
