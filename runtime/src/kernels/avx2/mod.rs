//! AVX2 kernels (no VNNI): `vpmaddubsw` + `vpmaddwd` integer dots.
//!
//! Same interleaved layout as the AVX-512 kernels, read as two halves of 8
//! rows (the 64-byte chunk's first and second 32 bytes), each half one pass
//! over the group's blocks; the second pass hits L1, since a group is at
//! most a few KiB per 576 inputs.
//!
//! `vpmaddubsw` multiplies unsigned by signed bytes and adds pairs into
//! saturating i16. For `Q4_1` (nibbles ≤ 15, |q_x| ≤ 127) a pair is at most
//! 3810, so a whole block's 8 products per lane sum in i16 without saturation
//! (≤ 30480) and need one `vpmaddwd` per block. Signed `Q8_0` weights use the
//! usual sign trick (`|w|` × `sign(x, w)`, pair ≤ 32512) and widen per chunk.
//!
//! The plane formats (`Q5_0`, `Q5_1`, `Q4_K`, `Q5_K`, `Q6_K`) are in
//! `planes.rs`.

use std::arch::x86_64::*;
use std::ops::Range;
use std::ptr;

use super::acts::Q8Acts;
use super::matrix::{QuantFormat, QuantMatrix, Q4_1_M_OFFSET, ROWS_PER_GROUP};
use super::{prefetch_ahead, OutPtr};

mod planes;

/// Activation rows per pass: 4 accumulators + 4 block sums + 6 constants and
/// temporaries fit the 16 ymm registers.
const MAX_COLS: usize = 4;
const HALF: usize = ROWS_PER_GROUP / 2;

macro_rules! dispatch {
    ($f:ident, $c:expr, $($arg:expr),*) => {
        match $c {
            1 => $f::<1>($($arg),*),
            2 => $f::<2>($($arg),*),
            3 => $f::<3>($($arg),*),
            _ => $f::<4>($($arg),*),
        }
    };
}

/// Computes all columns of `a` for the row groups in `groups`.
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C; `a.k == w.cols()`, `out` is an
/// `a.n × w.rows()` buffer per [`OutPtr`]'s contract and `groups` is within
/// `w.groups()`.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn run_groups(w: &QuantMatrix, a: &Q8Acts, groups: Range<usize>, out: OutPtr) {
    for g in groups {
        for h in 0..2 {
            // Skip a half made only of padding rows.
            if g * ROWS_PER_GROUP + h * HALF >= w.rows() {
                break;
            }
            let mut col = 0;
            while col < a.n {
                let c = (a.n - col).min(MAX_COLS);
                // SAFETY: forwarded contract; `col + c <= a.n`.
                unsafe {
                    match w.format() {
                        QuantFormat::Q4_1 => dispatch!(q4_1_half, c, w, a, g, h, col, out),
                        QuantFormat::Q8_0 => dispatch!(q8_0_half, c, w, a, g, h, col, out),
                        f => {
                            let p = f.plane().unwrap_or_default();
                            planes::half(p, c, w, a, g, h, col, out)
                        }
                    }
                }
                col += c;
            }
        }
    }
}

/// Broadcasts the 4 activation bytes at `p` to all 8 lanes.
#[inline(always)]
unsafe fn bcast4(p: *const i8) -> __m256i {
    // SAFETY: callers pass a pointer with 4 readable bytes.
    _mm256_set1_epi32(unsafe { ptr::read_unaligned(p.cast::<i32>()) })
}

/// Stores the 8 results of half `h` of group `g` for activation row `col`,
/// dropping padding rows.
#[inline(always)]
unsafe fn store(w: &QuantMatrix, g: usize, h: usize, col: usize, v: __m256, out: OutPtr) {
    let r0 = g * ROWS_PER_GROUP + h * HALF;
    let valid = (w.rows() - r0).min(HALF);
    debug_assert!(col * w.rows() + r0 + valid <= out.len);
    // SAFETY: rows r0..r0+valid of output row `col` are inside `out` and
    // owned by this task.
    unsafe {
        let dst = out.ptr.add(col * w.rows() + r0);
        if valid == HALF {
            _mm256_storeu_ps(dst, v);
        } else {
            let mut tmp = [0f32; HALF];
            _mm256_storeu_ps(tmp.as_mut_ptr(), v);
            ptr::copy_nonoverlapping(tmp.as_ptr(), dst, valid);
        }
    }
}

/// `Q4_1` × Q8 for rows `8h..8h + 8` of group `g`, activation rows
/// `col0..col0 + C`.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q4_1_half<const C: usize>(
    w: &QuantMatrix,
    a: &Q8Acts,
    g: usize,
    h: usize,
    col0: usize,
    out: OutPtr,
) {
    let nb = w.blocks_per_row();
    let gbb = QuantFormat::Q4_1.group_block_bytes();
    let d_off = QuantFormat::Q4_1.d_offset() + 2 * HALF * h;
    let m_off = Q4_1_M_OFFSET + 2 * HALF * h;
    let base = w.group_ptr(g);
    let low = _mm256_set1_epi8(0x0f);
    let ones = _mm256_set1_epi16(1);
    let xq: [*const i8; C] = std::array::from_fn(|j| a.qs[(col0 + j) * a.k..].as_ptr());
    let xd: [*const f32; C] = std::array::from_fn(|j| a.d[(col0 + j) * nb..].as_ptr());
    let xs: [*const f32; C] = std::array::from_fn(|j| a.s[(col0 + j) * nb..].as_ptr());
    let mut acc = [_mm256_setzero_ps(); C];
    for b in 0..nb {
        // SAFETY (whole block): `b < nb` so the group block lies inside the
        // matrix; activation pointers index `b * 32 + 0..32` of a row of
        // `k = 32 · nb` values and `b` of `nb` scales.
        unsafe {
            let blk = base.add(b * gbb);
            prefetch_ahead(C == MAX_COLS, blk, gbb);
            let dw = _mm256_cvtph_ps(_mm_loadu_si128(blk.add(d_off).cast()));
            let mw = _mm256_cvtph_ps(_mm_loadu_si128(blk.add(m_off).cast()));
            let mut s16 = [_mm256_setzero_si256(); C];
            for c in 0..4 {
                let v = _mm256_loadu_si256(blk.add(64 * c + 32 * h).cast());
                let lo = _mm256_and_si256(v, low);
                let hi = _mm256_and_si256(_mm256_srli_epi16::<4>(v), low);
                for j in 0..C {
                    let x = xq[j].add(b * 32 + 8 * c);
                    s16[j] = _mm256_add_epi16(s16[j], _mm256_maddubs_epi16(lo, bcast4(x)));
                    s16[j] = _mm256_add_epi16(s16[j], _mm256_maddubs_epi16(hi, bcast4(x.add(4))));
                }
            }
            for j in 0..C {
                let isum = _mm256_cvtepi32_ps(_mm256_madd_epi16(s16[j], ones));
                let scale = _mm256_mul_ps(dw, _mm256_set1_ps(*xd[j].add(b)));
                acc[j] = _mm256_fmadd_ps(isum, scale, acc[j]);
                acc[j] = _mm256_fmadd_ps(mw, _mm256_set1_ps(*xs[j].add(b)), acc[j]);
            }
        }
    }
    for (j, v) in acc.into_iter().enumerate() {
        // SAFETY: forwarded contract.
        unsafe { store(w, g, h, col0 + j, v, out) };
    }
}

/// `Q8_0` × Q8 for rows `8h..8h + 8` of group `g`, activation rows
/// `col0..col0 + C`.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q8_0_half<const C: usize>(
    w: &QuantMatrix,
    a: &Q8Acts,
    g: usize,
    h: usize,
    col0: usize,
    out: OutPtr,
) {
    let nb = w.blocks_per_row();
    let gbb = QuantFormat::Q8_0.group_block_bytes();
    let d_off = QuantFormat::Q8_0.d_offset() + 2 * HALF * h;
    let base = w.group_ptr(g);
    let ones = _mm256_set1_epi16(1);
    let xq: [*const i8; C] = std::array::from_fn(|j| a.qs[(col0 + j) * a.k..].as_ptr());
    let xd: [*const f32; C] = std::array::from_fn(|j| a.d[(col0 + j) * nb..].as_ptr());
    let mut acc = [_mm256_setzero_ps(); C];
    for b in 0..nb {
        // SAFETY: as in `q4_1_half`.
        unsafe {
            let blk = base.add(b * gbb);
            prefetch_ahead(C == MAX_COLS, blk, gbb);
            let dw = _mm256_cvtph_ps(_mm_loadu_si128(blk.add(d_off).cast()));
            let mut isum = [_mm256_setzero_si256(); C];
            for c in 0..8 {
                let v = _mm256_loadu_si256(blk.add(64 * c + 32 * h).cast());
                let av = _mm256_abs_epi8(v);
                for j in 0..C {
                    let xs = _mm256_sign_epi8(bcast4(xq[j].add(b * 32 + 4 * c)), v);
                    let p = _mm256_madd_epi16(_mm256_maddubs_epi16(av, xs), ones);
                    isum[j] = _mm256_add_epi32(isum[j], p);
                }
            }
            for j in 0..C {
                let scale = _mm256_mul_ps(dw, _mm256_set1_ps(*xd[j].add(b)));
                acc[j] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum[j]), scale, acc[j]);
            }
        }
    }
    for (j, v) in acc.into_iter().enumerate() {
        // SAFETY: forwarded contract.
        unsafe { store(w, g, h, col0 + j, v, out) };
    }
}
