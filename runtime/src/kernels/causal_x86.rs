//! AVX-512 and AVX2 block functions of the causal attention kernel (`causal.rs`, which
//! states the contracts and the scalar reference).

use std::arch::x86_64::*;
use std::ops::Range;

use super::attention::x86::{exp256, exp512};
use super::causal::{Rows, BLOCK, SCORE_ROWS};

/// The lanes of `valid` as a mask.
fn lanes(valid: &Range<usize>) -> u16 {
    let ones = |n: usize| ((1u32 << n) - 1) as u16;
    ones(valid.end) & !ones(valid.start)
}

/// AVX-512 `block_rows`: per row two FMA chains over the even and odd dimensions (each
/// a broadcast of the query times the block's 16 keys), their sum scaled, then the
/// softmax update — the rows of the group side by side, so their dependency chains
/// (FMAs, the max, `exp`) overlap.
///
/// # Safety
/// The CPU must support AVX-512F; `hd % 16 == 0`.
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn block_rows_avx512(
    qs: &[&[f32]],
    group: &[(usize, usize, usize)],
    keys: &[f32],
    scale: f32,
    rows: &mut Rows<'_>,
) {
    // SAFETY: same contract as this function.
    unsafe {
        match qs.len() {
            4 => rows_avx512::<4>(qs, group, keys, scale, rows),
            3 => rows_avx512::<3>(qs, group, keys, scale, rows),
            2 => rows_avx512::<2>(qs, group, keys, scale, rows),
            _ => rows_avx512::<1>(qs, group, keys, scale, rows),
        }
    }
}

#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn rows_avx512<const R: usize>(
    qs: &[&[f32]],
    group: &[(usize, usize, usize)],
    keys: &[f32],
    scale: f32,
    rows: &mut Rows<'_>,
) {
    let hd = qs[0].len();
    assert!(qs.len() == R && group.len() == R && R <= SCORE_ROWS && hd.is_multiple_of(2));
    assert!(qs.iter().all(|q| q.len() == hd) && keys.len() >= BLOCK * hd);
    let kp = keys.as_ptr();
    let mut a = [[_mm512_setzero_ps(); 2]; R];
    let mut c = 0;
    while c < hd {
        // SAFETY: c + 1 < hd, so both key vectors and query entries are in bounds.
        unsafe {
            let k0 = _mm512_loadu_ps(kp.add(c * BLOCK));
            let k1 = _mm512_loadu_ps(kp.add((c + 1) * BLOCK));
            for (a, q) in a.iter_mut().zip(qs) {
                let q = q.as_ptr().add(c);
                a[0] = _mm512_fmadd_ps(_mm512_set1_ps(*q), k0, a[0]);
                a[1] = _mm512_fmadd_ps(_mm512_set1_ps(*q.add(1)), k1, a[1]);
            }
        }
        c += 2;
    }
    let vs = _mm512_set1_ps(scale);
    let mut s = [_mm512_setzero_ps(); R];
    let mut masks = [0u16; R];
    let mut block_max = [0f32; R];
    for i in 0..R {
        let (_, j0, j1) = group[i];
        masks[i] = lanes(&(j0..j1));
        let x = _mm512_mul_ps(_mm512_add_ps(a[i][0], a[i][1]), vs);
        s[i] = _mm512_mask_mov_ps(_mm512_set1_ps(f32::NEG_INFINITY), masks[i], x);
        block_max[i] = _mm512_reduce_max_ps(s[i]);
    }
    let mut m = [0f32; R];
    for i in 0..R {
        m[i] = rows.raise_max(group[i].0, block_max[i]);
    }
    for i in 0..R {
        let r = group[i].0;
        let e = _mm512_maskz_mov_ps(masks[i], exp512(_mm512_sub_ps(s[i], _mm512_set1_ps(m[i]))));
        let alpha = _mm512_set1_ps(rows.alpha[r]);
        let l = &mut rows.l[r * BLOCK..(r + 1) * BLOCK];
        // SAFETY: l and the row's weights hold BLOCK = 16 floats.
        unsafe {
            let sum = _mm512_fmadd_ps(_mm512_loadu_ps(l.as_ptr()), alpha, e);
            _mm512_storeu_ps(l.as_mut_ptr(), sum);
            _mm512_storeu_ps(rows.weights(r).as_mut_ptr(), e);
        }
    }
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
    for_each_tile(p, lane0, alpha, values, acc, hd, 16, 4, |t, rt, w| {
        // SAFETY: `for_each_tile` hands out tiles inside the slices; AVX-512F as above.
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
    });
}

/// Cuts the value update into register tiles of up to 4 rows × `max_w` vectors of
/// `lanes` columns and calls `run(tile, rows, vectors)` for each.
#[allow(clippy::too_many_arguments)]
fn for_each_tile(
    p: &[f32],
    lane0: usize,
    alpha: &[f32],
    values: &[f32],
    acc: &mut [f32],
    hd: usize,
    lanes: usize,
    max_w: usize,
    mut run: impl FnMut(Tile, usize, usize),
) {
    let rows = acc.len() / hd;
    let nk = values.len() / hd;
    assert!(
        hd.is_multiple_of(lanes)
            && lane0 + nk <= BLOCK
            && p.len() >= rows * BLOCK
            && alpha.len() >= rows
    );
    let mut r0 = 0;
    while r0 < rows {
        let rt = (rows - r0).min(4);
        let mut c0 = 0;
        while c0 < hd {
            let w = ((hd - c0) / lanes).min(max_w);
            // The tile's rows r0..r0 + rt and columns c0..c0 + lanes·w lie inside `p`,
            // `alpha`, `values` and `acc` (asserted and bounded above).
            run(
                Tile {
                    p: p[r0 * BLOCK + lane0..].as_ptr(),
                    alpha: alpha[r0..].as_ptr(),
                    values: values[c0..].as_ptr(),
                    keys: nk,
                    acc: acc[r0 * hd + c0..].as_mut_ptr(),
                    hd,
                },
                rt,
                w,
            );
            c0 += w * lanes;
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
            // Late in a long prompt the running max rarely moves: skip multiplying by 1.
            let rescale = (0..R).any(|r| *self.alpha.add(r) != 1.0);
            for (r, tr) in t.iter_mut().enumerate() {
                let a = _mm512_set1_ps(*self.alpha.add(r));
                for (x, t) in tr.iter_mut().enumerate() {
                    *t = _mm512_loadu_ps(self.acc.add(r * hd + x * 16));
                    if rescale {
                        *t = _mm512_mul_ps(*t, a);
                    }
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

/// AVX2 `block_scores`: per row and half block (8 keys) one FMA chain over the
/// dimensions.
///
/// # Safety
/// The CPU must support AVX2 and FMA; `hd % 8 == 0`.
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn scores_avx2(
    qs: &[&[f32]],
    keys: &[f32],
    scale: f32,
    out: &mut [[f32; BLOCK]; SCORE_ROWS],
) {
    let hd = qs.first().map_or(0, |q| q.len());
    assert!(qs.len() <= SCORE_ROWS && qs.iter().all(|q| q.len() == hd));
    assert!(keys.len() >= BLOCK * hd);
    let kp = keys.as_ptr();
    let mut a = [[_mm256_setzero_ps(); 2]; SCORE_ROWS];
    for c in 0..hd {
        // SAFETY: c < hd, so the block's row c and the query entries are in bounds.
        unsafe {
            let k0 = _mm256_loadu_ps(kp.add(c * BLOCK));
            let k1 = _mm256_loadu_ps(kp.add(c * BLOCK + 8));
            for (a, q) in a.iter_mut().zip(qs) {
                let x = _mm256_set1_ps(*q.as_ptr().add(c));
                a[0] = _mm256_fmadd_ps(x, k0, a[0]);
                a[1] = _mm256_fmadd_ps(x, k1, a[1]);
            }
        }
    }
    let vs = _mm256_set1_ps(scale);
    for (a, o) in a.iter().zip(out.iter_mut()).take(qs.len()) {
        // SAFETY: o holds 16 floats.
        unsafe {
            _mm256_storeu_ps(o.as_mut_ptr(), _mm256_mul_ps(a[0], vs));
            _mm256_storeu_ps(o.as_mut_ptr().add(8), _mm256_mul_ps(a[1], vs));
        }
    }
}

/// AVX2 `exp_weights`.
///
/// # Safety
/// The CPU must support AVX2 and FMA.
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn exp_weights_avx2(scores: &[f32; BLOCK], m: f32, weights: &mut [f32]) {
    let vm = _mm256_set1_ps(m);
    for (half, w) in scores.chunks_exact(8).zip(weights.chunks_exact_mut(8)) {
        // SAFETY: both chunks hold 8 floats.
        unsafe {
            let e = exp256(_mm256_sub_ps(_mm256_loadu_ps(half.as_ptr()), vm));
            _mm256_storeu_ps(w.as_mut_ptr(), e);
        }
    }
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
    for_each_tile(p, lane0, alpha, values, acc, hd, 8, 2, |t, rt, w| {
        // SAFETY: `for_each_tile` hands out tiles inside the slices; AVX2+FMA as above.
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
    });
}
