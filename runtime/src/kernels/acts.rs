//! Activations quantized to 8 bits, once per matmul call.
//!
//! Every kernel computes integer dot products, so the f32 input is quantized
//! per block of 32 values to `d · q` with `q` in -127..=127 (symmetric, like
//! llama.cpp's Q8_1; -128 is avoided so AVX2's `sign` trick cannot overflow).
//! Per block we also keep the sum of the `q`s: `Q4_1`'s min term is
//! `m · Σx = m · d · Σq`, and the AVX-512 `Q8_0` kernel uses it to undo the
//! +128 offset that makes signed weights fit `vpdpbusd`'s unsigned operand.
//! Scales stay f32 (llama.cpp rounds them to f16), which only adds accuracy.
//! The added error is ~0.2–0.5% of a dot product for typical activations.

use super::matrix::BLOCK;
use super::Level;

/// `n` quantized rows of `k` values.
#[derive(Default)]
pub(crate) struct Q8Acts {
    pub n: usize,
    pub k: usize,
    /// `n × k` quantized values, row-major.
    pub qs: Vec<i8>,
    /// `n × k/32` block scales.
    pub d: Vec<f32>,
    /// `n × k/32` `d · Σq` (the block's dequantized sum).
    pub s: Vec<f32>,
    /// `n × k/32` `Σq`.
    pub sum: Vec<i32>,
}

impl Q8Acts {
    /// Quantizes `x` (`n × k`, `k` a multiple of 32), reusing the buffers.
    pub fn quantize(&mut self, level: Level, x: &[f32], n: usize, k: usize) {
        debug_assert_eq!(x.len(), n * k);
        debug_assert_eq!(k % BLOCK, 0);
        let nb = n * k / BLOCK;
        self.n = n;
        self.k = k;
        self.qs.resize(n * k, 0);
        self.d.resize(nb, 0.0);
        self.s.resize(nb, 0.0);
        self.sum.resize(nb, 0);
        let bufs = (
            &mut self.qs[..],
            &mut self.d[..],
            &mut self.s[..],
            &mut self.sum[..],
        );
        match level {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: callers pass a level clamped to what the CPU supports.
            Level::Avx512 => unsafe { quantize_avx512(x, bufs) },
            #[cfg(target_arch = "x86_64")]
            // SAFETY: as above.
            Level::Avx2 => unsafe { quantize_avx2(x, bufs) },
            _ => quantize_impl(x, bufs),
        }
    }

    /// The quantized values of row `i`.
    #[inline]
    pub fn row(&self, i: usize) -> &[i8] {
        &self.qs[i * self.k..(i + 1) * self.k]
    }
}

type Bufs<'a> = (&'a mut [i8], &'a mut [f32], &'a mut [f32], &'a mut [i32]);

/// Compiled with AVX-512 enabled so the block loops vectorize (otherwise
/// `round` is a libm call per value without SSE4.1 in the baseline target).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw")]
fn quantize_avx512(x: &[f32], bufs: Bufs<'_>) {
    quantize_impl(x, bufs)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn quantize_avx2(x: &[f32], bufs: Bufs<'_>) {
    quantize_impl(x, bufs)
}

#[inline(always)]
fn quantize_impl(x: &[f32], (qs, d, s, sum): Bufs<'_>) {
    let blocks = x
        .chunks_exact(BLOCK)
        .zip(qs.chunks_exact_mut(BLOCK))
        .zip(d.iter_mut().zip(s.iter_mut()).zip(sum.iter_mut()));
    for ((xb, qb), ((db, sb), sumb)) in blocks {
        let amax = xb.iter().fold(0f32, |a, v| a.max(v.abs()));
        let scale = amax / 127.0;
        let inv = if scale != 0.0 { 1.0 / scale } else { 0.0 };
        let mut total = 0i32;
        for (q, v) in qb.iter_mut().zip(xb) {
            // `as` saturates and maps NaN to 0; the clamp keeps -128 out
            // even if rounding of `v * inv` overshoots 127.
            let r = (v * inv).round().clamp(-127.0, 127.0) as i8;
            *q = r;
            total += i32::from(r);
        }
        *db = scale;
        *sumb = total;
        *sb = scale * total as f32;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernels_acts_quantize_levels_agree() {
        let k = 96;
        let x: Vec<f32> = (0..2 * k)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) * 0.013)
            .collect();
        let mut reference = Q8Acts::default();
        reference.quantize(Level::Scalar, &x, 2, k);
        for level in Level::ALL.into_iter().filter(|l| l.is_supported()) {
            let mut a = Q8Acts::default();
            a.quantize(level, &x, 2, k);
            assert_eq!(a.qs, reference.qs, "{level:?}");
            assert_eq!(a.sum, reference.sum);
            assert_eq!(a.d, reference.d);
        }
        // Dequantized values are within half a step of the input.
        for (i, v) in x.iter().enumerate() {
            let d = reference.d[i / BLOCK];
            let q = f32::from(reference.qs[i]);
            assert!((q * d - v).abs() <= 0.5 * d + 1e-7, "{i}: {v} vs {}", q * d);
            assert!(q.abs() <= 127.0);
        }
        let zeros = vec![0f32; 32];
        reference.quantize(Level::Scalar, &zeros, 1, 32);
        assert!(reference.qs.iter().all(|&q| q == 0) && reference.d[0] == 0.0);
    }
}
