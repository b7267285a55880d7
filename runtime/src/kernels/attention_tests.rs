//! Tests of the fused decode attention against a naive reference.

use super::*;
use crate::kernels::tests::rand_vec;
use std::time::Duration;

/// Naive f64 reference.
fn reference(shape: AttnShape, q: &[f32], seqs: &[DecodeKv<'_>]) -> Vec<f32> {
    let AttnShape {
        n_head,
        n_kv_head,
        head_dim: hd,
    } = shape;
    let group = n_head / n_kv_head;
    let mut out = vec![0.0f32; seqs.len() * n_head * hd];
    for (s, kv) in seqs.iter().enumerate() {
        for h in 0..n_head {
            let base = (h / group) * kv.head_stride;
            let qh = &q[(s * n_head + h) * hd..][..hd];
            let sc: Vec<f64> = (0..kv.len)
                .map(|t| {
                    let kr = &kv.k[base + t * hd..][..hd];
                    qh.iter()
                        .zip(kr)
                        .map(|(&a, &b)| a as f64 * b as f64)
                        .sum::<f64>()
                        / (hd as f64).sqrt()
                })
                .collect();
            let m = sc.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let e: Vec<f64> = sc.iter().map(|x| (x - m).exp()).collect();
            let sum: f64 = e.iter().sum();
            for d in 0..hd {
                let y: f64 = (0..kv.len)
                    .map(|t| e[t] * kv.v[base + t * hd + d] as f64)
                    .sum();
                out[(s * n_head + h) * hd + d] = (y / sum) as f32;
            }
        }
    }
    out
}

#[test]
fn kernels_decode_attention_matches_reference() {
    let pool = Pool::new(2, Duration::from_micros(20));
    let mut seed = 7u64;
    for &(n_head, n_kv_head, hd) in &[(9, 3, 64), (4, 4, 40), (6, 2, 16), (2, 1, 7)] {
        let shape = AttnShape {
            n_head,
            n_kv_head,
            head_dim: hd,
        };
        let lens = [1usize, 2, 15, 17, 33, 64, 100, 257];
        let caps: Vec<usize> = lens.iter().map(|&l| l + 5).collect();
        let ks: Vec<Vec<f32>> = caps
            .iter()
            .map(|&c| rand_vec(n_kv_head * c * hd, &mut seed, 2.0))
            .collect();
        let vs: Vec<Vec<f32>> = caps
            .iter()
            .map(|&c| rand_vec(n_kv_head * c * hd, &mut seed, 1.0))
            .collect();
        let seqs: Vec<DecodeKv<'_>> = (0..lens.len())
            .map(|i| DecodeKv {
                k: &ks[i],
                v: &vs[i],
                head_stride: caps[i] * hd,
                len: lens[i],
            })
            .collect();
        let q = rand_vec(lens.len() * n_head * hd, &mut seed, 2.0);
        let want = reference(shape, &q, &seqs);
        for level in Level::ALL {
            if !level.is_supported() {
                continue;
            }
            let mut got = vec![f32::NAN; want.len()];
            decode_attention_with(level, &pool, shape, &q, &seqs, &mut got).unwrap();
            let diff = got
                .iter()
                .zip(&want)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0f32, f32::max);
            assert!(got.iter().all(|x| x.is_finite()), "{level:?} {shape:?}");
            assert!(diff < 1e-4, "{level:?} {shape:?}: max abs diff {diff}");
            // A sequence alone gives bit-identical results (batch invariance).
            for (i, s) in seqs.iter().enumerate() {
                let row = n_head * hd;
                let mut solo = vec![0.0f32; row];
                let qs = &q[i * row..(i + 1) * row];
                decode_attention_with(level, &pool, shape, qs, &[*s], &mut solo).unwrap();
                assert_eq!(solo, got[i * row..(i + 1) * row], "{level:?} seq {i}");
            }
        }
    }
}

/// The vectorised exp's relative error over the softmax input range.
#[cfg(target_arch = "x86_64")]
#[test]
fn kernels_attention_exp_is_accurate() {
    use std::arch::x86_64::*;
    let xs: Vec<f32> = (0..=87_000).map(|i| -(i as f32) * 1e-3).collect();
    let mut worst = 0.0f64;
    for chunk in xs.chunks_exact(16) {
        let mut got = [0.0f32; 16];
        if Level::Avx512.is_supported() {
            // SAFETY: AVX-512F is present; 16-lane buffers.
            unsafe {
                let e = x86::exp512(_mm512_loadu_ps(chunk.as_ptr()));
                _mm512_storeu_ps(got.as_mut_ptr(), e);
            }
            for (&x, &g) in chunk.iter().zip(&got) {
                let want = (x as f64).exp();
                worst = worst.max((g as f64 - want).abs() / want);
            }
        }
        if Level::Avx2.is_supported() {
            // SAFETY: AVX2 and FMA are present; 8-lane halves.
            unsafe {
                for h in 0..2 {
                    let e = x86::exp256(_mm256_loadu_ps(chunk.as_ptr().add(h * 8)));
                    _mm256_storeu_ps(got.as_mut_ptr().add(h * 8), e);
                }
            }
            for (&x, &g) in chunk.iter().zip(&got) {
                let want = (x as f64).exp();
                worst = worst.max((g as f64 - want).abs() / want);
            }
        }
    }
    assert!(worst < 1e-6, "max relative error {worst}");
}

#[test]
fn kernels_decode_attention_rejects_bad_shapes() {
    let pool = Pool::new(1, Duration::ZERO);
    let shape = AttnShape {
        n_head: 2,
        n_kv_head: 1,
        head_dim: 4,
    };
    let k = vec![0.0f32; 8];
    let kv = DecodeKv {
        k: &k,
        v: &k,
        head_stride: 8,
        len: 3,
    };
    let q = vec![0.0f32; 8];
    let mut out = vec![0.0f32; 8];
    assert!(decode_attention_with(Level::Scalar, &pool, shape, &q, &[kv], &mut out).is_err());
}
