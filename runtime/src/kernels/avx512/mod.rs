//! AVX-512 VNNI kernels: one `vpdpbusd` advances 16 rows by 4 values.
//!
//! With the interleaved layout (`matrix.rs`) a 64-byte chunk holds 4 values of
//! each of a group's 16 rows, one per 32-bit lane, and the matching 4
//! activation bytes are broadcast to every lane. `vpdpbusd` multiplies
//! unsigned by signed bytes, which suits `Q4_1` (nibbles are 0..15) directly;
//! signed `Q8_0` weights are flipped to `q + 128` with one xor and the
//! `128 · Σq_x` excess is subtracted up front by starting the block's integer
//! sum at `-128 · Σq_x` (exact, no extra instruction per value).
//!
//! Weights of a group are unpacked once per block and used for up to
//! [`MAX_COLS`] activation rows, so at batch `n` the weight stream is read
//! once and compute grows with `n` — the point of continuous batching.
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

/// Activation rows per pass over a group. 8 keeps the Q4_1 kernel's 24
/// accumulators plus 5 temporaries within the 32 zmm registers.
const MAX_COLS: usize = 8;

/// Calls `f::<C>` for the runtime column count `c` (1..=MAX_COLS), so each
/// column count gets a fully unrolled, register-allocated body.
macro_rules! dispatch {
    ($f:ident, $c:expr, $($arg:expr),*) => {
        match $c {
            1 => $f::<1>($($arg),*),
            2 => $f::<2>($($arg),*),
            3 => $f::<3>($($arg),*),
            4 => $f::<4>($($arg),*),
            5 => $f::<5>($($arg),*),
            6 => $f::<6>($($arg),*),
            7 => $f::<7>($($arg),*),
            _ => $f::<8>($($arg),*),
        }
    };
}

/// Computes all columns of `a` for the row groups in `groups`.
///
/// # Safety
/// The CPU must support AVX-512 F/BW/VNNI; `a.k == w.cols()`, `out` is an
/// `a.n × w.rows()` buffer per [`OutPtr`]'s contract and `groups` is within
/// `w.groups()`.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
pub(super) unsafe fn run_groups(w: &QuantMatrix, a: &Q8Acts, groups: Range<usize>, out: OutPtr) {
    for g in groups {
        let mut col = 0;
        while col < a.n {
            let c = (a.n - col).min(MAX_COLS);
            // SAFETY: forwarded contract; `col + c <= a.n`.
            unsafe {
                match w.format() {
                    QuantFormat::Q4_1 => dispatch!(q4_1_group, c, w, a, g, col, out),
                    QuantFormat::Q8_0 => dispatch!(q8_0_group, c, w, a, g, col, out),
                    f => planes::group(f.plane().unwrap_or_default(), c, w, a, g, col, out),
                }
            }
            col += c;
        }
    }
}

/// Broadcasts the 4 activation bytes at `p` to all 16 lanes.
#[inline(always)]
unsafe fn bcast4(p: *const i8) -> __m512i {
    // SAFETY: callers pass a pointer with 4 readable bytes.
    _mm512_set1_epi32(unsafe { ptr::read_unaligned(p.cast::<i32>()) })
}

/// Stores the 16 results of group `g` for activation row `col`, masking rows
/// past `w.rows()` (padding).
#[inline(always)]
unsafe fn store(w: &QuantMatrix, g: usize, col: usize, v: __m512, out: OutPtr) {
    let r0 = g * ROWS_PER_GROUP;
    let valid = (w.rows() - r0).min(ROWS_PER_GROUP);
    let mask: __mmask16 = if valid == ROWS_PER_GROUP {
        0xffff
    } else {
        (1u16 << valid) - 1
    };
    debug_assert!(col * w.rows() + r0 + valid <= out.len);
    // SAFETY: the unmasked lanes are rows r0..r0+valid of output row `col`,
    // inside `out` and owned by this task; masked lanes are not accessed.
    unsafe { _mm512_mask_storeu_ps(out.ptr.add(col * w.rows() + r0), mask, v) }
}

/// `Q4_1` × Q8 for group `g`, activation rows `col0..col0 + C`.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
unsafe fn q4_1_group<const C: usize>(
    w: &QuantMatrix,
    a: &Q8Acts,
    g: usize,
    col0: usize,
    out: OutPtr,
) {
    let nb = w.blocks_per_row();
    let gbb = QuantFormat::Q4_1.group_block_bytes();
    let d_off = QuantFormat::Q4_1.d_offset();
    let base = w.group_ptr(g);
    let low = _mm512_set1_epi8(0x0f);
    let xq: [*const i8; C] = std::array::from_fn(|j| a.qs[(col0 + j) * a.k..].as_ptr());
    let xd: [*const f32; C] = std::array::from_fn(|j| a.d[(col0 + j) * nb..].as_ptr());
    let xs: [*const f32; C] = std::array::from_fn(|j| a.s[(col0 + j) * nb..].as_ptr());
    let mut acc_d = [_mm512_setzero_ps(); C];
    let mut acc_m = [_mm512_setzero_ps(); C];
    for b in 0..nb {
        // SAFETY (whole block): `b < nb` so the group block lies inside the
        // matrix; activation pointers index `b * 32 + 0..32` of a row of
        // `k = 32 · nb` values and `b` of `nb` scales.
        unsafe {
            let blk = base.add(b * gbb);
            prefetch_ahead(C == MAX_COLS, blk, gbb);
            let dw = _mm512_cvtph_ps(_mm256_loadu_si256(blk.add(d_off).cast()));
            let mw = _mm512_cvtph_ps(_mm256_loadu_si256(blk.add(Q4_1_M_OFFSET).cast()));
            let mut isum = [_mm512_setzero_si512(); C];
            for c in 0..4 {
                let v = _mm512_loadu_si512(blk.add(64 * c).cast());
                let lo = _mm512_and_si512(v, low);
                let hi = _mm512_and_si512(_mm512_srli_epi16::<4>(v), low);
                for j in 0..C {
                    let x = xq[j].add(b * 32 + 8 * c);
                    isum[j] = _mm512_dpbusd_epi32(isum[j], lo, bcast4(x));
                    isum[j] = _mm512_dpbusd_epi32(isum[j], hi, bcast4(x.add(4)));
                }
            }
            for j in 0..C {
                let scale = _mm512_mul_ps(dw, _mm512_set1_ps(*xd[j].add(b)));
                acc_d[j] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum[j]), scale, acc_d[j]);
                acc_m[j] = _mm512_fmadd_ps(mw, _mm512_set1_ps(*xs[j].add(b)), acc_m[j]);
            }
        }
    }
    for j in 0..C {
        // SAFETY: forwarded contract.
        unsafe { store(w, g, col0 + j, _mm512_add_ps(acc_d[j], acc_m[j]), out) };
    }
}

/// `Q8_0` × Q8 for group `g`, activation rows `col0..col0 + C`.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
unsafe fn q8_0_group<const C: usize>(
    w: &QuantMatrix,
    a: &Q8Acts,
    g: usize,
    col0: usize,
    out: OutPtr,
) {
    let nb = w.blocks_per_row();
    let gbb = QuantFormat::Q8_0.group_block_bytes();
    let d_off = QuantFormat::Q8_0.d_offset();
    let base = w.group_ptr(g);
    let flip = _mm512_set1_epi8(-128);
    let xq: [*const i8; C] = std::array::from_fn(|j| a.qs[(col0 + j) * a.k..].as_ptr());
    let xd: [*const f32; C] = std::array::from_fn(|j| a.d[(col0 + j) * nb..].as_ptr());
    let xsum: [*const i32; C] = std::array::from_fn(|j| a.sum[(col0 + j) * nb..].as_ptr());
    let mut acc = [_mm512_setzero_ps(); C];
    for b in 0..nb {
        // SAFETY: as in `q4_1_group`.
        unsafe {
            let blk = base.add(b * gbb);
            prefetch_ahead(C == MAX_COLS, blk, gbb);
            let dw = _mm512_cvtph_ps(_mm256_loadu_si256(blk.add(d_off).cast()));
            // Σ (q_w + 128) q_x − 128 Σ q_x = Σ q_w q_x.
            let mut isum: [__m512i; C] =
                std::array::from_fn(|j| _mm512_set1_epi32(-128 * *xsum[j].add(b)));
            for c in 0..8 {
                let v = _mm512_xor_si512(_mm512_loadu_si512(blk.add(64 * c).cast()), flip);
                for j in 0..C {
                    isum[j] = _mm512_dpbusd_epi32(isum[j], v, bcast4(xq[j].add(b * 32 + 4 * c)));
                }
            }
            for j in 0..C {
                let scale = _mm512_mul_ps(dw, _mm512_set1_ps(*xd[j].add(b)));
                acc[j] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum[j]), scale, acc[j]);
            }
        }
    }
    for (j, v) in acc.into_iter().enumerate() {
        // SAFETY: forwarded contract.
        unsafe { store(w, g, col0 + j, v, out) };
    }
}
