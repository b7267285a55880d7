//! Activations quantized to 8 bits, once per matmul call.
//!
//! Every kernel computes integer dot products, so the f32 input is quantized
//! per block of 32 values to `d · q` with `q` in -127..=127 (symmetric, like
//! llama.cpp's Q8_1; -128 is avoided so AVX2's `sign` trick cannot overflow).
//! For k-quant weights 8 blocks share one scale (llama.cpp's `Q8_K` does the
//! same), so a kernel can apply it once per 256-value super-block.
//! Per block we also keep the sum of the `q`s: `Q4_1`'s min term is
//! `m · Σx = m · d · Σq`, and the AVX-512 `Q8_0` kernel uses it to undo the
//! +128 offset that makes signed weights fit `vpdpbusd`'s unsigned operand.
//! `Q5_0`'s offset of 16 is undone the same way, and `Q6_K`'s offset of 32
//! needs the sums per 16 values, since its scales change every 16 values.
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
    /// `n × k/16` `Σq` per 16 values.
    pub sum16: Vec<i32>,
}

impl Q8Acts {
    /// Quantizes `x` (`n × k`, `k` a multiple of `32 · span`), reusing the
    /// buffers. `span` blocks share one scale (the largest of their `|x|`):
    /// 1 for the 32-value formats, 8 for the k-quants, whose AVX-512 kernels
    /// then scale each 256-value super-block's sum once instead of every
    /// block's (as llama.cpp's `Q8_K` activations do).
    pub fn quantize(&mut self, level: Level, x: &[f32], n: usize, k: usize, span: usize) {
        debug_assert_eq!(x.len(), n * k);
        debug_assert_eq!(k % (BLOCK * span), 0);
        let nb = n * k / BLOCK;
        self.n = n;
        self.k = k;
        self.qs.resize(n * k, 0);
        self.d.resize(nb, 0.0);
        self.s.resize(nb, 0.0);
        self.sum.resize(nb, 0);
        self.sum16.resize(2 * nb, 0);
        block_amax(level, x, &mut self.d);
        if span > 1 {
            // Rows are whole spans (k is a multiple of 32 · span).
            for group in self.d.chunks_mut(span) {
                let m = group.iter().fold(0f32, |a, &b| a.max(b));
                group.fill(m);
            }
        }
        self.d.iter_mut().for_each(|d| *d /= 127.0);
        let bufs = (
            &mut self.qs[..],
            &self.d[..],
            &mut self.s[..],
            &mut self.sum[..],
            &mut self.sum16[..],
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

type Bufs<'a> = (
    &'a mut [i8],
    &'a [f32],
    &'a mut [f32],
    &'a mut [i32],
    &'a mut [i32],
);

/// One block's input and scale, and where its quantized values, `d · Σq`,
/// `Σq` and the two halves' `Σq` go.
struct Block<'a> {
    x: &'a [f32],
    q: &'a mut [i8],
    d: &'a f32,
    s: &'a mut f32,
    sum: &'a mut i32,
    sum16: &'a mut [i32],
}

impl Block<'_> {
    #[inline(always)]
    fn set(self, lo: i32, hi: i32) {
        let total = lo + hi;
        (*self.sum, *self.s) = (total, *self.d * total as f32);
        (self.sum16[0], self.sum16[1]) = (lo, hi);
    }
}

fn blocks<'a>(x: &'a [f32], (qs, d, s, sum, sum16): Bufs<'a>) -> impl Iterator<Item = Block<'a>> {
    x.chunks_exact(BLOCK)
        .zip(qs.chunks_exact_mut(BLOCK))
        .zip(d.iter().zip(s.iter_mut()))
        .zip(sum.iter_mut().zip(sum16.chunks_exact_mut(2)))
        .map(|(((x, q), (d, s)), (sum, sum16))| Block {
            x,
            q,
            d,
            s,
            sum,
            sum16,
        })
}

/// `1 / scale`, or 0 for an all-zero block (its values all quantize to 0).
#[inline(always)]
fn inverse(scale: f32) -> f32 {
    if scale != 0.0 {
        1.0 / scale
    } else {
        0.0
    }
}

/// `amax[b]` = the largest `|x|` of block `b`; exact at every level (a max
/// does not round), so every level gets the same scales.
#[cfg_attr(not(target_arch = "x86_64"), allow(unused_variables))]
fn block_amax(level: Level, x: &[f32], amax: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    match level {
        // SAFETY (both): callers pass a level the CPU supports.
        Level::Avx512 => return unsafe { block_amax_avx512(x, amax) },
        Level::Avx2 => return unsafe { block_amax_avx2(x, amax) },
        Level::Scalar => {}
    }
    for (xb, a) in x.chunks_exact(BLOCK).zip(amax) {
        *a = xb.iter().fold(0f32, |m, v| m.max(v.abs()));
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn block_amax_avx512(x: &[f32], amax: &mut [f32]) {
    use std::arch::x86_64::*;
    for (xb, a) in x.chunks_exact(BLOCK).zip(amax) {
        // SAFETY: `xb` holds 32 values.
        unsafe {
            let v0 = _mm512_abs_ps(_mm512_loadu_ps(xb.as_ptr()));
            let v1 = _mm512_abs_ps(_mm512_loadu_ps(xb.as_ptr().add(16)));
            *a = _mm512_reduce_max_ps(_mm512_max_ps(v0, v1));
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn block_amax_avx2(x: &[f32], amax: &mut [f32]) {
    use std::arch::x86_64::*;
    let abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fff_ffff));
    for (xb, a) in x.chunks_exact(BLOCK).zip(amax) {
        // SAFETY: `xb` holds 32 values.
        unsafe {
            let v: [__m256; 4] = std::array::from_fn(|i| {
                _mm256_and_ps(_mm256_loadu_ps(xb.as_ptr().add(8 * i)), abs_mask)
            });
            let m = _mm256_max_ps(_mm256_max_ps(v[0], v[1]), _mm256_max_ps(v[2], v[3]));
            let m = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps::<1>(m));
            let m = _mm_max_ps(m, _mm_movehl_ps(m, m));
            *a = _mm_cvtss_f32(_mm_max_ss(m, _mm_movehdup_ps(m)));
        }
    }
}

/// Reference quantization. Rounds ties to even, as `vcvtps2dq` does in the
/// SIMD versions, so every level produces identical bytes (NaN inputs
/// aside, which give unspecified finite values at every level).
fn quantize_impl(x: &[f32], bufs: Bufs<'_>) {
    for blk in blocks(x, bufs) {
        let inv = inverse(*blk.d);
        let mut halves = [0i32; 2];
        for (i, (q, v)) in blk.q.iter_mut().zip(blk.x).enumerate() {
            // The clamp keeps -128 out even if `v * inv` overshoots 127.
            let r = (v * inv).round_ties_even().clamp(-127.0, 127.0) as i32;
            *q = r as i8;
            halves[i / 16] += r;
        }
        blk.set(halves[0], halves[1]);
    }
}

/// Explicit SIMD because the generic loop compiled to scalar code and a
/// libm `roundf` per value, which made quantization a third of the matmul
/// time at n = 16 (it runs on the calling thread before the pool starts).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw")]
fn quantize_avx512(x: &[f32], bufs: Bufs<'_>) {
    use std::arch::x86_64::*;
    const NEAREST: i32 = _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC;
    let (hi, lo) = (_mm512_set1_epi32(127), _mm512_set1_epi32(-127));
    for blk in blocks(x, bufs) {
        let (xb, qb) = (blk.x, &mut *blk.q);
        // SAFETY: `xb` and `qb` hold 32 values each (`chunks_exact`).
        unsafe {
            let v0 = _mm512_loadu_ps(xb.as_ptr());
            let v1 = _mm512_loadu_ps(xb.as_ptr().add(16));
            let inv = _mm512_set1_ps(inverse(*blk.d));
            let q = |v| {
                let r = _mm512_cvt_roundps_epi32::<NEAREST>(_mm512_mul_ps(v, inv));
                _mm512_max_epi32(_mm512_min_epi32(r, hi), lo)
            };
            let (q0, q1) = (q(v0), q(v1));
            _mm_storeu_si128(qb.as_mut_ptr().cast(), _mm512_cvtepi32_epi8(q0));
            _mm_storeu_si128(qb.as_mut_ptr().add(16).cast(), _mm512_cvtepi32_epi8(q1));
            let (lo, hi) = (_mm512_reduce_add_epi32(q0), _mm512_reduce_add_epi32(q1));
            blk.set(lo, hi);
        }
    }
}

/// AVX2 version of [`quantize_avx512`] (`vcvtps2dq` rounds to nearest even
/// under the default MXCSR, which Rust code never changes).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn quantize_avx2(x: &[f32], bufs: Bufs<'_>) {
    use std::arch::x86_64::*;
    let (hi, lo) = (_mm256_set1_epi32(127), _mm256_set1_epi32(-127));
    // `packs` interleaves 128-bit lanes; this restores value order.
    let unshuffle = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    for blk in blocks(x, bufs) {
        let (xb, qb) = (blk.x, &mut *blk.q);
        // SAFETY: `xb` and `qb` hold 32 values each (`chunks_exact`).
        unsafe {
            let v: [__m256; 4] = std::array::from_fn(|i| _mm256_loadu_ps(xb.as_ptr().add(8 * i)));
            let inv = _mm256_set1_ps(inverse(*blk.d));
            let q = v.map(|v| {
                let r = _mm256_cvtps_epi32(_mm256_mul_ps(v, inv));
                _mm256_max_epi32(_mm256_min_epi32(r, hi), lo)
            });
            let packed = _mm256_packs_epi16(
                _mm256_packs_epi32(q[0], q[1]),
                _mm256_packs_epi32(q[2], q[3]),
            );
            _mm256_storeu_si256(
                qb.as_mut_ptr().cast(),
                _mm256_permutevar8x32_epi32(packed, unshuffle),
            );
            let hsum = |a: __m256i, b: __m256i| {
                let s = _mm256_add_epi32(a, b);
                let s = _mm_add_epi32(_mm256_castsi256_si128(s), _mm256_extracti128_si256::<1>(s));
                let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b01_00_11_10>(s));
                _mm_cvtsi128_si32(_mm_add_epi32(s, _mm_shuffle_epi32::<0b10_11_00_01>(s)))
            };
            blk.set(hsum(q[0], q[1]), hsum(q[2], q[3]));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `x` quantized at the scalar level, after checking that every
    /// supported level produces the same bytes, scales and sums.
    fn quantize_every_level(x: &[f32], n: usize, k: usize, span: usize) -> Q8Acts {
        let mut reference = Q8Acts::default();
        reference.quantize(Level::Scalar, x, n, k, span);
        for level in Level::ALL.into_iter().filter(|l| l.is_supported()) {
            let mut a = Q8Acts::default();
            a.quantize(level, x, n, k, span);
            assert_eq!(a.qs, reference.qs, "{level:?}");
            assert_eq!(a.sum, reference.sum, "{level:?}");
            assert_eq!(a.sum16, reference.sum16, "{level:?}");
            assert_eq!(a.d, reference.d, "{level:?}");
            assert_eq!(a.s, reference.s, "{level:?}");
        }
        reference
    }

    #[test]
    fn kernels_acts_quantize_levels_agree() {
        let k = 96;
        let mut x: Vec<f32> = (0..2 * k)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) * 0.013)
            .collect();
        // A block with step 1 (amax 127) and exact ties (±x.5) pins the
        // rounding rule, and an all-zero block the zero scale.
        x[k] = 127.0;
        for (i, v) in x[k + 1..k + 32].iter_mut().enumerate() {
            *v = i as f32 - 15.5;
        }
        x[k + 64..].fill(0.0);
        let mut reference = quantize_every_level(&x, 2, k, 1);
        for (b, pair) in reference.sum16.chunks(2).enumerate() {
            let q = &reference.qs[32 * b..][..32];
            let sum = |h: &[i8]| h.iter().map(|&v| i32::from(v)).sum::<i32>();
            assert_eq!([pair[0], pair[1]], [sum(&q[..16]), sum(&q[16..])]);
            assert_eq!(reference.sum[b], pair[0] + pair[1]);
        }
        // Dequantized values are within half a step of the input.
        for (i, v) in x.iter().enumerate() {
            let d = reference.d[i / BLOCK];
            let q = f32::from(reference.qs[i]);
            assert!((q * d - v).abs() <= 0.5 * d + 1e-7, "{i}: {v} vs {}", q * d);
            assert!(q.abs() <= 127.0);
        }
        let zeros = vec![0f32; 32];
        reference.quantize(Level::Scalar, &zeros, 1, 32, 1);
        assert!(reference.qs.iter().all(|&q| q == 0) && reference.d[0] == 0.0);
    }

    /// k-quant activations: 8 blocks share the scale of their largest value,
    /// the same at every level.
    #[test]
    fn kernels_acts_spans_share_one_scale() {
        let k = 512;
        let mut x: Vec<f32> = (0..2 * k)
            .map(|i| ((i * 53 % 97) as f32 - 48.0) * 0.021)
            .collect();
        x[300] = 9.0; // the second span of row 0
        let reference = quantize_every_level(&x, 2, k, 8);
        for (span, d) in reference.d.chunks(8).enumerate() {
            let amax = x[256 * span..][..256]
                .iter()
                .fold(0f32, |a, v| a.max(v.abs()));
            assert!(d.iter().all(|&d| d == amax / 127.0), "span {span}: {d:?}");
        }
        for (i, v) in x.iter().enumerate() {
            let d = reference.d[i / BLOCK];
            assert!((f32::from(reference.qs[i]) * d - v).abs() <= 0.5 * d + 1e-7);
        }
    }
}
