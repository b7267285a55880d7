//! Row-wise softmax and GELU in place, for attention over long sequences (Whisper's encoder:
//! 1500 × 1500 scores per head and layer), where a scalar `exp` alone would cost
//! more than the two matmuls around it. Rows are shared out over the [`Pool`].

use std::sync::atomic::{AtomicUsize, Ordering};

use super::{active_level, global_pool, Level, OutPtr, Pool};

/// Rows handed to a thread at a time.
const ROWS_PER_TASK: usize = 16;

/// `row = softmax(row)` for every `row_len`-long row of `data`.
pub fn softmax_rows(data: &mut [f32], row_len: usize) {
    softmax_rows_with(active_level(), global_pool(), data, row_len)
}

/// [`softmax_rows`] with an explicit level (clamped to the CPU) and pool.
pub fn softmax_rows_with(level: Level, pool: &Pool, data: &mut [f32], row_len: usize) {
    if row_len == 0 || data.is_empty() {
        return;
    }
    let rows = data.len() / row_len;
    let level = level.clamp_supported();
    let out = OutPtr {
        ptr: data.as_mut_ptr(),
        len: rows * row_len,
    };
    let next = AtomicUsize::new(0);
    let tasks = rows.div_ceil(ROWS_PER_TASK);
    pool.run(&|| loop {
        let t = next.fetch_add(1, Ordering::Relaxed);
        if t >= tasks {
            break;
        }
        let lo = t * ROWS_PER_TASK * row_len;
        let hi = ((t + 1) * ROWS_PER_TASK).min(rows) * row_len;
        // SAFETY: tasks cover disjoint row ranges inside `data`, which outlives the call.
        let chunk = unsafe { out.range_mut(lo, hi) };
        for row in chunk.chunks_exact_mut(row_len) {
            softmax_row(level, row);
        }
    });
}

fn softmax_row(level: Level, row: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if level == Level::Avx512 {
        // SAFETY: the level is clamped to what the CPU supports.
        return unsafe { softmax_row_avx512(row) };
    }
    let _ = level;
    let max = row.iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x));
    for x in row.iter_mut() {
        *x = (*x - max).exp();
    }
    let inv = 1.0 / row.iter().sum::<f32>();
    row.iter_mut().for_each(|x| *x *= inv);
}

/// `row = softmax(row)` with AVX-512.
///
/// # Safety
/// The CPU must support AVX-512F.
#[cfg(target_arch = "x86_64")]
pub(crate) unsafe fn softmax_row_avx512(row: &mut [f32]) {
    x86::softmax_avx512(row)
}

/// Exact (erf) GELU in place, as Whisper's `nn.GELU()`; erf to ~1.5e-7.
pub fn gelu(x: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if active_level() == Level::Avx512 {
        // SAFETY: the level is clamped to what the CPU supports.
        return unsafe { x86::gelu_avx512(x) };
    }
    x.iter_mut().for_each(|v| *v = gelu_scalar(*v));
}

fn gelu_scalar(v: f32) -> f32 {
    0.5 * v * (1.0 + erf(v * std::f32::consts::FRAC_1_SQRT_2))
}

/// GELU with the tanh approximation in place (Gemma's gate, as llama.cpp and candle's
/// `gelu` compute it): candle's scalar path spends most of a Gemma prefill step in libm's
/// `tanhf` otherwise. tanh from the vectorised `exp`, to ~2e-7.
pub fn gelu_tanh(x: &mut [f32]) {
    gelu_tanh_with(active_level(), x)
}

/// [`gelu_tanh`] at `level`, which must be supported by the CPU.
#[cfg_attr(not(target_arch = "x86_64"), allow(unused_variables))]
fn gelu_tanh_with(level: Level, x: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    match level {
        // SAFETY (both): the caller passes a level the CPU supports.
        Level::Avx512 => return unsafe { x86::gelu_tanh_avx512(x) },
        Level::Avx2 => return unsafe { x86::gelu_tanh_avx2(x) },
        Level::Scalar => {}
    }
    x.iter_mut().for_each(|v| *v = gelu_tanh_scalar(*v));
}

const SQRT_2_OVER_PI: f32 = 0.797_884_6;
const GELU_COEF: f32 = 0.044_715;

fn gelu_tanh_scalar(v: f32) -> f32 {
    0.5 * v * (1.0 + (SQRT_2_OVER_PI * v * (1.0 + GELU_COEF * v * v)).tanh())
}

/// erf with |error| < 1.5e-7 (Abramowitz & Stegun 7.1.26).
pub fn erf(x: f32) -> f32 {
    let s = x.signum();
    let x = x.abs();
    let t = 1.0 / (1.0 + ERF_P * x);
    let poly = (((ERF_A[4] * t + ERF_A[3]) * t + ERF_A[2]) * t + ERF_A[1]) * t + ERF_A[0];
    s * (1.0 - poly * t * (-x * x).exp())
}

const ERF_P: f32 = 0.327_591_1;
const ERF_A: [f32; 5] = [
    0.254_829_6,
    -0.284_496_74,
    1.421_413_7,
    -1.453_152_1,
    1.061_405_4,
];

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use crate::kernels::attention::x86::{exp256, exp512};

    use super::{gelu_scalar, gelu_tanh_scalar, ERF_A, ERF_P, GELU_COEF, SQRT_2_OVER_PI};

    /// [`super::gelu_tanh`], 16 lanes at a time: tanh|y| = (1 − t) / (1 + t) with
    /// t = exp(−2|y|), which cannot overflow, and y's sign copied back.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn gelu_tanh_avx512(x: &mut [f32]) {
        let mut chunks = x.chunks_exact_mut(16);
        let one = _mm512_set1_ps(1.0);
        let abs_mask = _mm512_set1_epi32(0x7fff_ffff);
        for c in &mut chunks {
            // SAFETY: the chunk holds 16 floats.
            let v = unsafe { _mm512_loadu_ps(c.as_ptr()) };
            let inner = _mm512_fmadd_ps(_mm512_mul_ps(v, v), _mm512_set1_ps(GELU_COEF), one);
            let y = _mm512_mul_ps(_mm512_mul_ps(v, _mm512_set1_ps(SQRT_2_OVER_PI)), inner);
            let a = _mm512_castsi512_ps(_mm512_and_si512(_mm512_castps_si512(y), abs_mask));
            let t = exp512(_mm512_mul_ps(a, _mm512_set1_ps(-2.0)));
            let tanh_abs = _mm512_div_ps(_mm512_sub_ps(one, t), _mm512_add_ps(one, t));
            let sign = _mm512_andnot_si512(abs_mask, _mm512_castps_si512(y));
            let tanh = _mm512_castsi512_ps(_mm512_or_si512(_mm512_castps_si512(tanh_abs), sign));
            let g = _mm512_mul_ps(
                _mm512_mul_ps(_mm512_set1_ps(0.5), v),
                _mm512_add_ps(one, tanh),
            );
            // SAFETY: as above.
            unsafe { _mm512_storeu_ps(c.as_mut_ptr(), g) };
        }
        for v in chunks.into_remainder() {
            *v = gelu_tanh_scalar(*v);
        }
    }

    /// [`gelu_tanh_avx512`] with 8 lanes (same formula).
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn gelu_tanh_avx2(x: &mut [f32]) {
        let mut chunks = x.chunks_exact_mut(8);
        let one = _mm256_set1_ps(1.0);
        let abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fff_ffff));
        for c in &mut chunks {
            // SAFETY: the chunk holds 8 floats.
            let v = unsafe { _mm256_loadu_ps(c.as_ptr()) };
            let inner = _mm256_fmadd_ps(_mm256_mul_ps(v, v), _mm256_set1_ps(GELU_COEF), one);
            let y = _mm256_mul_ps(_mm256_mul_ps(v, _mm256_set1_ps(SQRT_2_OVER_PI)), inner);
            let a = _mm256_and_ps(y, abs_mask);
            let t = exp256(_mm256_mul_ps(a, _mm256_set1_ps(-2.0)));
            let tanh_abs = _mm256_div_ps(_mm256_sub_ps(one, t), _mm256_add_ps(one, t));
            let tanh = _mm256_or_ps(tanh_abs, _mm256_andnot_ps(abs_mask, y));
            let g = _mm256_mul_ps(
                _mm256_mul_ps(_mm256_set1_ps(0.5), v),
                _mm256_add_ps(one, tanh),
            );
            // SAFETY: as above.
            unsafe { _mm256_storeu_ps(c.as_mut_ptr(), g) };
        }
        for v in chunks.into_remainder() {
            *v = gelu_tanh_scalar(*v);
        }
    }

    /// `row = softmax(row)`: max, exp and sum, scale — each one vector pass.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn softmax_avx512(row: &mut [f32]) {
        let split = row.len() / 16 * 16;
        let (body, tail) = row.split_at_mut(split);
        let mut m = _mm512_set1_ps(f32::NEG_INFINITY);
        for c in body.chunks_exact(16) {
            m = _mm512_max_ps(m, _mm512_loadu_ps(c.as_ptr()));
        }
        let max = tail.iter().fold(_mm512_reduce_max_ps(m), |a, &b| a.max(b));
        let mv = _mm512_set1_ps(max);
        let mut sum = _mm512_setzero_ps();
        for c in body.chunks_exact_mut(16) {
            let e = exp512(_mm512_sub_ps(_mm512_loadu_ps(c.as_ptr()), mv));
            sum = _mm512_add_ps(sum, e);
            _mm512_storeu_ps(c.as_mut_ptr(), e);
        }
        let mut total = _mm512_reduce_add_ps(sum);
        for x in tail.iter_mut() {
            *x = (*x - max).exp();
            total += *x;
        }
        let inv = _mm512_set1_ps(1.0 / total);
        for c in body.chunks_exact_mut(16) {
            _mm512_storeu_ps(
                c.as_mut_ptr(),
                _mm512_mul_ps(_mm512_loadu_ps(c.as_ptr()), inv),
            );
        }
        let inv = 1.0 / total;
        tail.iter_mut().for_each(|x| *x *= inv);
    }

    /// [`super::gelu`], 16 lanes at a time (same formula as the scalar path).
    #[target_feature(enable = "avx512f")]
    pub unsafe fn gelu_avx512(x: &mut [f32]) {
        let mut chunks = x.chunks_exact_mut(16);
        let one = _mm512_set1_ps(1.0);
        let half = _mm512_set1_ps(0.5);
        let abs_mask = _mm512_set1_epi32(0x7fff_ffff);
        for c in &mut chunks {
            let v = _mm512_loadu_ps(c.as_ptr());
            let z = _mm512_mul_ps(v, _mm512_set1_ps(std::f32::consts::FRAC_1_SQRT_2));
            let a = _mm512_castsi512_ps(_mm512_and_si512(_mm512_castps_si512(z), abs_mask));
            let t = _mm512_div_ps(one, _mm512_fmadd_ps(_mm512_set1_ps(ERF_P), a, one));
            let mut p = _mm512_set1_ps(ERF_A[4]);
            for &k in ERF_A[..4].iter().rev() {
                p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(k));
            }
            let e = exp512(_mm512_sub_ps(_mm512_setzero_ps(), _mm512_mul_ps(a, a)));
            let erf_abs = _mm512_fnmadd_ps(_mm512_mul_ps(p, t), e, one);
            // erf is odd: copy z's sign onto |erf|.
            let sign = _mm512_andnot_si512(abs_mask, _mm512_castps_si512(z));
            let erf = _mm512_castsi512_ps(_mm512_or_si512(_mm512_castps_si512(erf_abs), sign));
            let y = _mm512_mul_ps(_mm512_mul_ps(half, v), _mm512_add_ps(one, erf));
            _mm512_storeu_ps(c.as_mut_ptr(), y);
        }
        for v in chunks.into_remainder() {
            *v = gelu_scalar(*v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn erf_is_accurate() {
        for (x, e) in [
            (0.0f32, 0.0f32),
            (0.5, 0.520_499_9),
            (1.0, 0.842_700_8),
            (-2.0, -0.995_322_3),
        ] {
            assert!((erf(x) - e).abs() < 3e-7, "erf({x}) = {} vs {e}", erf(x));
        }
    }

    #[test]
    fn vector_gelu_matches_scalar() {
        let mut x: Vec<f32> = (0..1000).map(|i| (i as f32 - 500.0) / 60.0).collect();
        let want: Vec<f32> = x.iter().map(|&v| gelu_scalar(v)).collect();
        gelu(&mut x);
        for (a, b) in x.iter().zip(&want) {
            assert!((a - b).abs() <= 1e-6 * (1.0 + b.abs()), "{a} vs {b}");
        }
    }

    #[test]
    fn vector_gelu_tanh_matches_scalar() {
        let mut x: Vec<f32> = (0..2003).map(|i| (i as f32 - 1000.0) / 40.0).collect();
        x.extend([0.0, -0.0, 1e-6, -1e-6, 80.0, -80.0, 1e4, -1e4]);
        let want: Vec<f32> = x.iter().map(|&v| gelu_tanh_scalar(v)).collect();
        for level in [Level::Avx512, Level::Avx2] {
            if !level.is_supported() {
                continue;
            }
            let mut got = x.clone();
            gelu_tanh_with(level, &mut got);
            for (a, b) in got.iter().zip(&want) {
                assert!(
                    (a - b).abs() <= 1e-6 * (1.0 + b.abs()),
                    "{level:?}: {a} vs {b}"
                );
            }
        }
    }

    #[test]
    fn matches_scalar_reference() {
        let row_len = 1500;
        let data: Vec<f32> = (0..row_len * 37)
            .map(|i| ((i * 7919) % 1000) as f32 / 50.0 - 10.0)
            .collect();
        let mut reference = data.clone();
        for row in reference.chunks_exact_mut(row_len) {
            softmax_row(Level::Scalar, row);
        }
        let mut fast = data;
        softmax_rows(&mut fast, row_len);
        for (a, b) in fast.iter().zip(&reference) {
            assert!((a - b).abs() <= 2e-6 * b.abs().max(1e-6), "{a} vs {b}");
        }
        for row in fast.chunks_exact(row_len) {
            assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-4);
        }
    }
}
