//! AVX-512 and AVX2 block functions of the causal attention kernel (`causal.rs`, which
//! states the contracts and the scalar reference).

use std::arch::x86_64::*;
use std::ops::Range;

use super::attention::x86::{exp256, exp512};
use super::causal::{RowState, BLOCK};

/// The lanes of `valid` as a mask.
fn lanes(valid: &Range<usize>) -> u16 {
    let ones = |n: usize| ((1u32 << n) - 1) as u16;
    ones(valid.end) & !ones(valid.start)
}

/// The 16 horizontal sums of `a` as one vector (lane `j` = sum of `a[j]`), by a
/// transpose tree: every lane is reduced in the same order, whatever its index.
#[inline]
#[target_feature(enable = "avx512f")]
fn reduce16(a: &[__m512; 16]) -> __m512 {
    let mut b = [_mm512_setzero_ps(); 8];
    for (i, b) in b.iter_mut().enumerate() {
        let (x, y) = (a[2 * i], a[2 * i + 1]);
        *b = _mm512_add_ps(_mm512_unpacklo_ps(x, y), _mm512_unpackhi_ps(x, y));
    }
    let mut c = [_mm512_setzero_ps(); 4];
    for (i, c) in c.iter_mut().enumerate() {
        let (x, y) = (_mm512_castps_pd(b[2 * i]), _mm512_castps_pd(b[2 * i + 1]));
        *c = _mm512_add_ps(
            _mm512_castpd_ps(_mm512_unpacklo_pd(x, y)),
            _mm512_castpd_ps(_mm512_unpackhi_pd(x, y)),
        );
    }
    let halves = |x: __m512, y: __m512| {
        _mm512_add_ps(
            _mm512_shuffle_f32x4::<0x44>(x, y),
            _mm512_shuffle_f32x4::<0xEE>(x, y),
        )
    };
    let (e01, e23) = (halves(c[0], c[1]), halves(c[2], c[3]));
    _mm512_add_ps(
        _mm512_shuffle_f32x4::<0x88>(e01, e23),
        _mm512_shuffle_f32x4::<0xDD>(e01, e23),
    )
}

/// AVX-512 `block_row`: `q` is `hd` (a multiple of 16), `keys` `BLOCK * hd`.
///
/// # Safety
/// The CPU must support AVX-512F.
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn block_row_avx512(
    q: &[f32],
    keys: &[f32],
    valid: Range<usize>,
    scale: f32,
    mut row: RowState<'_>,
    weights: &mut [f32],
) {
    let hd = q.len();
    assert!(hd.is_multiple_of(16) && keys.len() >= BLOCK * hd && weights.len() >= BLOCK);
    let (qp, kp) = (q.as_ptr(), keys.as_ptr());
    let mut a = [_mm512_setzero_ps(); 16];
    let mut c = 0;
    while c < hd {
        // SAFETY: c + 16 <= hd and (j + 1) * hd <= keys.len(), asserted above.
        unsafe {
            let qv = _mm512_loadu_ps(qp.add(c));
            for (j, a) in a.iter_mut().enumerate() {
                *a = _mm512_fmadd_ps(qv, _mm512_loadu_ps(kp.add(j * hd + c)), *a);
            }
        }
        c += 16;
    }
    let mask = lanes(&valid);
    let s = _mm512_mul_ps(reduce16(&a), _mm512_set1_ps(scale));
    let s = _mm512_mask_mov_ps(_mm512_set1_ps(f32::NEG_INFINITY), mask, s);
    let m = row.raise_max(_mm512_reduce_max_ps(s));
    let e = _mm512_maskz_mov_ps(mask, exp512(_mm512_sub_ps(s, _mm512_set1_ps(m))));
    // SAFETY: weights has BLOCK = 16 entries.
    unsafe { _mm512_storeu_ps(weights.as_mut_ptr(), e) };
    row.add_sum(_mm512_reduce_add_ps(e));
}

/// AVX-512 `pv`: rows in tiles of up to 4, columns in tiles of up to 64, each tile's
/// sums in registers for the whole block.
///
/// # Safety
/// The CPU must support AVX-512F; `hd % 16 == 0`.
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn pv_avx512(
    p: &[f32],
    lane0: usize,
    alpha: &[f32],
    values: &[f32],
    acc: &mut [f32],
    hd: usize,
) {
    let rows = acc.len() / hd;
    let nk = values.len() / hd;
    assert!(
        hd.is_multiple_of(16)
            && lane0 + nk <= BLOCK
            && p.len() >= rows * BLOCK
            && alpha.len() >= rows
    );
    let mut r0 = 0;
    while r0 < rows {
        let rt = (rows - r0).min(4);
        let mut c0 = 0;
        while c0 < hd {
            let w = ((hd - c0) / 16).min(4);
            let t = Tile {
                p: p[r0 * BLOCK + lane0..].as_ptr(),
                alpha: alpha[r0..].as_ptr(),
                values: values[c0..].as_ptr(),
                keys: nk,
                acc: acc[r0 * hd + c0..].as_mut_ptr(),
                hd,
            };
            // SAFETY: the tile's rows r0..r0 + rt and columns c0..c0 + 16w lie inside
            // `p`, `alpha`, `values` and `acc` (asserted and bounded above).
            unsafe {
                match (rt, w) {
                    (4, 4) => t.avx512::<4, 4>(),
                    (3, 4) => t.avx512::<3, 4>(),
                    (2, 4) => t.avx512::<2, 4>(),
                    (1, 4) => t.avx512::<1, 4>(),
                    (4, 3) => t.avx512::<4, 3>(),
                    (3, 3) => t.avx512::<3, 3>(),
                    (2, 3) => t.avx512::<2, 3>(),
                    (1, 3) => t.avx512::<1, 3>(),
                    (4, 2) => t.avx512::<4, 2>(),
                    (3, 2) => t.avx512::<3, 2>(),
                    (2, 2) => t.avx512::<2, 2>(),
                    (1, 2) => t.avx512::<1, 2>(),
                    (4, _) => t.avx512::<4, 1>(),
                    (3, _) => t.avx512::<3, 1>(),
                    (2, _) => t.avx512::<2, 1>(),
                    _ => t.avx512::<1, 1>(),
                }
            }
            c0 += w * 16;
        }
        r0 += rt;
    }
}

/// One register tile of the value update: `R` rows from `acc`, `W` vectors wide.
struct Tile {
    /// Row 0's weight for the first key; row `r` is `BLOCK` further on.
    p: *const f32,
    alpha: *const f32,
    /// Key 0's values at the tile's first column; key `j` is `hd` further on.
    values: *const f32,
    keys: usize,
    acc: *mut f32,
    hd: usize,
}

impl Tile {
    /// # Safety
    /// AVX-512F; the pointers cover `R` rows × `16W` columns × `keys` keys.
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn avx512<const R: usize, const W: usize>(&self) {
        let hd = self.hd;
        // SAFETY: (for the whole body) in bounds per the contract.
        unsafe {
            let mut t = [[_mm512_setzero_ps(); W]; R];
            for (r, tr) in t.iter_mut().enumerate() {
                let a = _mm512_set1_ps(*self.alpha.add(r));
                for (x, t) in tr.iter_mut().enumerate() {
                    *t = _mm512_mul_ps(_mm512_loadu_ps(self.acc.add(r * hd + x * 16)), a);
                }
            }
            for j in 0..self.keys {
                let vr = self.values.add(j * hd);
                let mut vs = [_mm512_setzero_ps(); W];
                for (x, v) in vs.iter_mut().enumerate() {
                    *v = _mm512_loadu_ps(vr.add(x * 16));
                }
                for (r, tr) in t.iter_mut().enumerate() {
                    let w = _mm512_set1_ps(*self.p.add(r * BLOCK + j));
                    for (t, &v) in tr.iter_mut().zip(&vs) {
                        *t = _mm512_fmadd_ps(w, v, *t);
                    }
                }
            }
            for (r, tr) in t.iter().enumerate() {
                for (x, &t) in tr.iter().enumerate() {
                    _mm512_storeu_ps(self.acc.add(r * hd + x * 16), t);
                }
            }
        }
    }

    /// AVX2 version of [`Tile::avx512`], `W` vectors of 8.
    ///
    /// # Safety
    /// AVX2+FMA; the pointers cover `R` rows × `8W` columns × `keys` keys.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn avx2<const R: usize, const W: usize>(&self) {
        let hd = self.hd;
        // SAFETY: (for the whole body) in bounds per the contract.
        unsafe {
            let mut t = [[_mm256_setzero_ps(); W]; R];
            for (r, tr) in t.iter_mut().enumerate() {
                let a = _mm256_set1_ps(*self.alpha.add(r));
                for (x, t) in tr.iter_mut().enumerate() {
                    *t = _mm256_mul_ps(_mm256_loadu_ps(self.acc.add(r * hd + x * 8)), a);
                }
            }
            for j in 0..self.keys {
                let vr = self.values.add(j * hd);
                let mut vs = [_mm256_setzero_ps(); W];
                for (x, v) in vs.iter_mut().enumerate() {
                    *v = _mm256_loadu_ps(vr.add(x * 8));
                }
                for (r, tr) in t.iter_mut().enumerate() {
                    let w = _mm256_set1_ps(*self.p.add(r * BLOCK + j));
                    for (t, &v) in tr.iter_mut().zip(&vs) {
                        *t = _mm256_fmadd_ps(w, v, *t);
                    }
                }
            }
            for (r, tr) in t.iter().enumerate() {
                for (x, &t) in tr.iter().enumerate() {
                    _mm256_storeu_ps(self.acc.add(r * hd + x * 8), t);
                }
            }
        }
    }
}

/// Horizontal sum of 8 lanes, in a fixed order.
#[inline]
#[target_feature(enable = "avx2")]
fn hsum256(x: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(x), _mm256_extractf128_ps::<1>(x));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_add_ss(s, _mm_shuffle_ps::<1>(s, s));
    _mm_cvtss_f32(s)
}

/// AVX2 `block_row`: `q` is `hd` (a multiple of 8), `keys` `BLOCK * hd`.
///
/// # Safety
/// The CPU must support AVX2 and FMA.
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn block_row_avx2(
    q: &[f32],
    keys: &[f32],
    valid: Range<usize>,
    scale: f32,
    mut row: RowState<'_>,
    weights: &mut [f32],
) {
    let hd = q.len();
    assert!(hd.is_multiple_of(8) && keys.len() >= BLOCK * hd && weights.len() >= BLOCK);
    let mut s = [f32::NEG_INFINITY; BLOCK];
    for j in valid.clone() {
        let mut a = _mm256_setzero_ps();
        let mut c = 0;
        while c < hd {
            // SAFETY: c + 8 <= hd and (j + 1) * hd <= keys.len(), asserted above.
            unsafe {
                a = _mm256_fmadd_ps(
                    _mm256_loadu_ps(q.as_ptr().add(c)),
                    _mm256_loadu_ps(keys.as_ptr().add(j * hd + c)),
                    a,
                );
            }
            c += 8;
        }
        s[j] = hsum256(a) * scale;
    }
    let m = row.raise_max(s.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b)));
    let vm = _mm256_set1_ps(m);
    let mut sum = _mm256_setzero_ps();
    for (half, w) in s.chunks_exact(8).zip(weights.chunks_exact_mut(8)) {
        // SAFETY: both chunks hold 8 floats.
        unsafe {
            let e = exp256(_mm256_sub_ps(_mm256_loadu_ps(half.as_ptr()), vm));
            _mm256_storeu_ps(w.as_mut_ptr(), e);
        }
    }
    for (j, w) in weights.iter_mut().enumerate().take(BLOCK) {
        if !valid.contains(&j) {
            *w = 0.0;
        }
    }
    for w in weights.chunks_exact(8).take(2) {
        // SAFETY: the chunk holds 8 floats.
        sum = _mm256_add_ps(sum, unsafe { _mm256_loadu_ps(w.as_ptr()) });
    }
    row.add_sum(hsum256(sum));
}

/// AVX2 `pv`: tiles of up to 4 rows × 16 columns.
///
/// # Safety
/// The CPU must support AVX2 and FMA; `hd % 8 == 0`.
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn pv_avx2(
    p: &[f32],
    lane0: usize,
    alpha: &[f32],
    values: &[f32],
    acc: &mut [f32],
    hd: usize,
) {
    let rows = acc.len() / hd;
    let nk = values.len() / hd;
    assert!(
        hd.is_multiple_of(8)
            && lane0 + nk <= BLOCK
            && p.len() >= rows * BLOCK
            && alpha.len() >= rows
    );
    let mut r0 = 0;
    while r0 < rows {
        let rt = (rows - r0).min(4);
        let mut c0 = 0;
        while c0 < hd {
            let w = ((hd - c0) / 8).min(2);
            let t = Tile {
                p: p[r0 * BLOCK + lane0..].as_ptr(),
                alpha: alpha[r0..].as_ptr(),
                values: values[c0..].as_ptr(),
                keys: nk,
                acc: acc[r0 * hd + c0..].as_mut_ptr(),
                hd,
            };
            // SAFETY: as in `pv_avx512`.
            unsafe {
                match (rt, w) {
                    (4, 2) => t.avx2::<4, 2>(),
                    (3, 2) => t.avx2::<3, 2>(),
                    (2, 2) => t.avx2::<2, 2>(),
                    (1, 2) => t.avx2::<1, 2>(),
                    (4, _) => t.avx2::<4, 1>(),
                    (3, _) => t.avx2::<3, 1>(),
                    (2, _) => t.avx2::<2, 1>(),
                    _ => t.avx2::<1, 1>(),
                }
            }
            c0 += w * 8;
        }
        r0 += rt;
    }
}
