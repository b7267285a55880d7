//! AVX2 kernels of the plane formats (`Q5_0`, `Q5_1`, `Q4_K`, `Q5_K`,
//! `Q6_K`; layout in `planes.rs`), on 8-row halves like `Q4_1`.
//!
//! Values are unsigned (0..63) for `vpmaddubsw`; how many of its saturating
//! i16 pair sums can be added before widening with `vpmaddwd` depends on the
//! width: a pair is ≤ 2·15·127 = 3810 for 4 bits (8 per unit fit i16, one
//! widening per unit, as `Q4_1`), ≤ 7874 for 5 bits (widen every 2 chunks),
//! ≤ 16002 for 6 bits (every chunk). Offsets (16 for `Q5_0`, 32 for `Q6_K`)
//! start the i32 sums at `−offset · Σq_x`, and `Q6_K` scales its two 16-value
//! halves separately.

use std::arch::x86_64::*;

use super::{bcast4, store, HALF, MAX_COLS};
use crate::kernels::acts::Q8Acts;
use crate::kernels::matrix::{QuantMatrix, BLOCK};
use crate::kernels::planes::{
    geometry, k_scale_bytes, K_DMIN, K_SCALES, NIBBLES, Q4K, Q5K, Q5_0, Q5_1, Q5_1_M, Q5_D, Q6K,
};
use crate::kernels::prefetch_ahead;
use crate::kernels::OutPtr;

/// Runs plane format `p` for half `h` of group `g`, activation rows
/// `col0..col0 + c` (`c` in 1..=4).
///
/// # Safety
/// As `super::run_groups`, with `col0 + c <= a.n` and `p` the matrix's format.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
pub(super) unsafe fn half(
    p: u8,
    c: usize,
    w: &QuantMatrix,
    a: &Q8Acts,
    g: usize,
    h: usize,
    col0: usize,
    out: OutPtr,
) {
    // SAFETY: forwarded contract.
    unsafe {
        match p {
            Q5_0 => by_cols::<Q5_0>(c, w, a, g, h, col0, out),
            Q5_1 => by_cols::<Q5_1>(c, w, a, g, h, col0, out),
            Q4K => by_cols::<Q4K>(c, w, a, g, h, col0, out),
            Q5K => by_cols::<Q5K>(c, w, a, g, h, col0, out),
            _ => by_cols::<Q6K>(c, w, a, g, h, col0, out),
        }
    }
}

#[inline(always)]
unsafe fn by_cols<const P: u8>(
    c: usize,
    w: &QuantMatrix,
    a: &Q8Acts,
    g: usize,
    h: usize,
    col0: usize,
    out: OutPtr,
) {
    // SAFETY: forwarded contract.
    unsafe {
        match c {
            1 => plane_half::<P, 1>(w, a, g, h, col0, out),
            2 => plane_half::<P, 2>(w, a, g, h, col0, out),
            3 => plane_half::<P, 3>(w, a, g, h, col0, out),
            _ => plane_half::<P, 4>(w, a, g, h, col0, out),
        }
    }
}

/// The low- and high-nibble value vectors of chunk `CH` with the high bits
/// of `hp` or-ed in at bit 4 (and 5); see the AVX-512 version.
#[inline(always)]
unsafe fn values<const P: u8, const CH: usize>(v: __m256i, hp: [__m256i; 2]) -> (__m256i, __m256i) {
    let nib = _mm256_set1_epi8(0x0f);
    let lo = _mm256_and_si256(v, nib);
    let hi = _mm256_and_si256(_mm256_srli_epi16::<4>(v), nib);
    let (sl, sh, mask) = match (geometry(P).high_bits, CH) {
        (0, _) => return (lo, hi),
        (1, 0) => (
            _mm256_slli_epi16::<4>(hp[0]),
            _mm256_slli_epi16::<3>(hp[0]),
            0x10,
        ),
        (1, 1) => (
            _mm256_slli_epi16::<2>(hp[0]),
            _mm256_slli_epi16::<1>(hp[0]),
            0x10,
        ),
        (1, 2) => (hp[0], _mm256_srli_epi16::<1>(hp[0]), 0x10),
        (1, _) => (
            _mm256_srli_epi16::<2>(hp[0]),
            _mm256_srli_epi16::<3>(hp[0]),
            0x10,
        ),
        (_, 0) => (
            _mm256_slli_epi16::<4>(hp[0]),
            _mm256_slli_epi16::<2>(hp[0]),
            0x30,
        ),
        (_, 1) => (hp[0], _mm256_srli_epi16::<2>(hp[0]), 0x30),
        (_, 2) => (
            _mm256_slli_epi16::<4>(hp[1]),
            _mm256_slli_epi16::<2>(hp[1]),
            0x30,
        ),
        (_, _) => (hp[1], _mm256_srli_epi16::<2>(hp[1]), 0x30),
    };
    let mask = _mm256_set1_epi8(mask);
    (
        _mm256_or_si256(lo, _mm256_and_si256(sl, mask)),
        _mm256_or_si256(hi, _mm256_and_si256(sh, mask)),
    )
}

/// Adds chunk `CH` of half `h` of the unit at `unit` to the i16 sums `s16`,
/// widening them into `isum` when the format's i16 budget is used up.
#[inline(always)]
unsafe fn chunk<const P: u8, const C: usize, const CH: usize>(
    unit: *const u8,
    h: usize,
    hp: [__m256i; 2],
    x: &[*const i8; C],
    s16: &mut [__m256i; C],
    isum: &mut [__m256i; C],
) {
    let widen_every = match geometry(P).high_bits {
        0 => 4,
        1 => 2,
        _ => 1,
    };
    // SAFETY: the unit holds 4 chunks of 64 bytes; `x[j]` 32 values.
    unsafe {
        let v = _mm256_loadu_si256(unit.add(64 * CH + 32 * h).cast());
        let (lo, hi) = values::<P, CH>(v, hp);
        for j in 0..C {
            let x = x[j].add(8 * CH);
            s16[j] = _mm256_add_epi16(s16[j], _mm256_maddubs_epi16(lo, bcast4(x)));
            s16[j] = _mm256_add_epi16(s16[j], _mm256_maddubs_epi16(hi, bcast4(x.add(4))));
            if (CH + 1).is_multiple_of(widen_every) {
                let p = _mm256_madd_epi16(s16[j], _mm256_set1_epi16(1));
                isum[j] = _mm256_add_epi32(isum[j], p);
                s16[j] = _mm256_setzero_si256();
            }
        }
    }
}

/// The low 8 row bytes of `b` (unsigned, or signed for `Q6_K`) as f32
/// times `d`.
#[inline(always)]
unsafe fn row_scales<const SIGNED: bool>(b: __m128i, d: __m256) -> __m256 {
    let i = if SIGNED {
        _mm256_cvtepi8_epi32(b)
    } else {
        _mm256_cvtepu8_epi32(b)
    };
    _mm256_mul_ps(_mm256_cvtepi32_ps(i), d)
}

/// The 8 bytes at `p`.
#[inline(always)]
unsafe fn bytes8(p: *const u8) -> __m128i {
    // SAFETY: callers pass 8 readable bytes.
    unsafe { _mm_loadl_epi64(p.cast()) }
}

/// 8 f16 at `p` as f32.
#[inline(always)]
unsafe fn halfs(p: *const u8) -> __m256 {
    // SAFETY: callers pass 16 readable bytes.
    _mm256_cvtph_ps(unsafe { _mm_loadu_si128(p.cast()) })
}

/// Plane format `P` × Q8 for rows `8h..8h + 8` of group `g`, activation
/// rows `col0..col0 + C`.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn plane_half<const P: u8, const C: usize>(
    w: &QuantMatrix,
    a: &Q8Acts,
    g: usize,
    h: usize,
    col0: usize,
    out: OutPtr,
) {
    let geo = geometry(P);
    let nb = w.blocks_per_row();
    let base = w.group_ptr(g);
    let row = |j: usize| col0 + j;
    let xq: [*const i8; C] = std::array::from_fn(|j| a.qs[row(j) * a.k..].as_ptr());
    let xd: [*const f32; C] = std::array::from_fn(|j| a.d[row(j) * nb..].as_ptr());
    let xs: [*const f32; C] = std::array::from_fn(|j| a.s[row(j) * nb..].as_ptr());
    let xsum: [*const i32; C] = std::array::from_fn(|j| a.sum[row(j) * nb..].as_ptr());
    let xsum16: [*const i32; C] = std::array::from_fn(|j| a.sum16[2 * row(j) * nb..].as_ptr());
    let zero = _mm256_setzero_ps();
    // Byte offset of this half's 8 f16 / 8 scale bytes in a row vector.
    let (f16_off, byte_off) = (2 * HALF * h, HALF * h);
    let mut acc = [zero; C];
    for s in 0..nb / geo.units {
        // SAFETY (whole super-block): as in the AVX-512 version.
        unsafe {
            let sbp = base.add(s * geo.sb_bytes);
            let (dsb, msb) = match P {
                Q4K | Q5K => (halfs(sbp.add(f16_off)), halfs(sbp.add(K_DMIN + f16_off))),
                Q6K => (halfs(sbp.add(f16_off)), zero),
                _ => (zero, zero),
            };
            for u in 0..geo.units {
                let b = s * geo.units + u;
                let unit = sbp.add(geo.unit0 + u * geo.unit_stride);
                prefetch_ahead(C == MAX_COLS, unit, geo.unit_stride);
                let sc = sbp.add(K_SCALES + 32 * u + byte_off);
                let (d0, d1, mw) = match P {
                    Q5_0 | Q5_1 => {
                        let d = halfs(sbp.add(Q5_D + f16_off));
                        let m = if P == Q5_1 {
                            halfs(sbp.add(Q5_1_M + f16_off))
                        } else {
                            zero
                        };
                        (d, d, m)
                    }
                    Q4K | Q5K => {
                        // Reads 8 bytes past plane 11 for h = 1: the first
                        // unit's nibbles, inside the super-block.
                        let (scb, mb) = k_scale_bytes(sbp.add(K_SCALES + byte_off), u);
                        let d = row_scales::<false>(scb, dsb);
                        (d, d, row_scales::<false>(mb, msb))
                    }
                    _ => (
                        row_scales::<true>(bytes8(sc), dsb),
                        row_scales::<true>(bytes8(sc.add(16)), dsb),
                        zero,
                    ),
                };
                let plane = |i: usize| {
                    if geo.high_bits > i {
                        _mm256_loadu_si256(unit.add(NIBBLES + 64 * i + 32 * h).cast())
                    } else {
                        _mm256_setzero_si256()
                    }
                };
                let hp = [plane(0), plane(1)];
                let x: [*const i8; C] = std::array::from_fn(|j| xq[j].add(b * BLOCK));
                let mut isum: [__m256i; C] = std::array::from_fn(|j| match P {
                    Q5_0 => _mm256_set1_epi32(-16 * *xsum[j].add(b)),
                    Q6K => _mm256_set1_epi32(-32 * *xsum16[j].add(2 * b)),
                    _ => _mm256_setzero_si256(),
                });
                let mut s16 = [_mm256_setzero_si256(); C];
                chunk::<P, C, 0>(unit, h, hp, &x, &mut s16, &mut isum);
                chunk::<P, C, 1>(unit, h, hp, &x, &mut s16, &mut isum);
                if P == Q6K {
                    // Values 0..16 done (6-bit sums are widened every chunk).
                    for j in 0..C {
                        let scale = _mm256_mul_ps(d0, _mm256_set1_ps(*xd[j].add(b)));
                        acc[j] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum[j]), scale, acc[j]);
                        isum[j] = _mm256_set1_epi32(-32 * *xsum16[j].add(2 * b + 1));
                    }
                }
                chunk::<P, C, 2>(unit, h, hp, &x, &mut s16, &mut isum);
                chunk::<P, C, 3>(unit, h, hp, &x, &mut s16, &mut isum);
                for j in 0..C {
                    let scale = _mm256_mul_ps(d1, _mm256_set1_ps(*xd[j].add(b)));
                    acc[j] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum[j]), scale, acc[j]);
                    let sx = _mm256_set1_ps(*xs[j].add(b));
                    match P {
                        Q5_1 => acc[j] = _mm256_fmadd_ps(mw, sx, acc[j]),
                        Q4K | Q5K => acc[j] = _mm256_fnmadd_ps(mw, sx, acc[j]),
                        _ => {}
                    }
                }
            }
        }
    }
    for (j, v) in acc.into_iter().enumerate() {
        // SAFETY: forwarded contract.
        unsafe { store(w, g, h, col0 + j, v, out) };
    }
}
