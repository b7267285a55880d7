//! AVX-512 VNNI kernels of the plane formats (`Q5_0`, `Q5_1`, `Q4_K`,
//! `Q5_K`, `Q6_K`; layout in `planes.rs`).
//!
//! Same scheme as `Q4_1`: per 64-byte chunk of nibbles, two value vectors
//! (low and high nibbles) each feed one `vpdpbusd` per activation row. The
//! high planes add one shift and one `vpternlogd` (`v | (h & mask)`) per
//! value vector; all values are unsigned (0..63), as `vpdpbusd` wants, and
//! the formats' offsets (16 for `Q5_0`, 32 for `Q6_K`) are subtracted by
//! starting each integer sum at `−offset · Σq_x`, as `Q8_0` does.
//!
//! Per unit of 32 values the row scales are rebuilt in f32 from the stored
//! bytes (k-quants: `d · sc`, exact). `Q6_K` changes scale every 16 values,
//! so its two halves' sums are scaled separately. The k-quants' activation
//! scale is one per super-block and applied once per super-block.

use std::arch::x86_64::*;

use super::{bcast4, store, MAX_COLS};
use crate::kernels::acts::Q8Acts;
use crate::kernels::matrix::{QuantMatrix, BLOCK};
use crate::kernels::planes::{
    geometry, k_scale_bytes, K_DMIN, K_SCALES, NIBBLES, Q4K, Q5K, Q5_0, Q5_1, Q5_1_M, Q5_D, Q6K,
};
use crate::kernels::prefetch_ahead;
use crate::kernels::OutPtr;

/// Runs plane format `p` for group `g`, activation rows `col0..col0 + c`
/// (`c` in 1..=8).
///
/// # Safety
/// As `super::run_groups`, with `col0 + c <= a.n` and `p` the matrix's format.
#[inline(always)]
pub(super) unsafe fn group(
    p: u8,
    c: usize,
    w: &QuantMatrix,
    a: &Q8Acts,
    g: usize,
    col0: usize,
    out: OutPtr,
) {
    // SAFETY: forwarded contract.
    unsafe {
        match p {
            Q5_0 => by_cols::<Q5_0>(c, w, a, g, col0, out),
            Q5_1 => by_cols::<Q5_1>(c, w, a, g, col0, out),
            Q4K => by_cols::<Q4K>(c, w, a, g, col0, out),
            Q5K => by_cols::<Q5K>(c, w, a, g, col0, out),
            _ => by_cols::<Q6K>(c, w, a, g, col0, out),
        }
    }
}

#[inline(always)]
unsafe fn by_cols<const P: u8>(
    c: usize,
    w: &QuantMatrix,
    a: &Q8Acts,
    g: usize,
    col0: usize,
    out: OutPtr,
) {
    // SAFETY: forwarded contract.
    unsafe {
        match c {
            1 => plane_group::<P, 1>(w, a, g, col0, out),
            2 => plane_group::<P, 2>(w, a, g, col0, out),
            3 => plane_group::<P, 3>(w, a, g, col0, out),
            4 => plane_group::<P, 4>(w, a, g, col0, out),
            5 => plane_group::<P, 5>(w, a, g, col0, out),
            6 => plane_group::<P, 6>(w, a, g, col0, out),
            7 => plane_group::<P, 7>(w, a, g, col0, out),
            _ => plane_group::<P, 8>(w, a, g, col0, out),
        }
    }
}

/// The low- and high-nibble value vectors of chunk `CH` with the high bits
/// of `h` (the unit's high planes) or-ed in at bit 4 (and 5).
#[inline(always)]
unsafe fn values<const P: u8, const CH: usize>(v: __m512i, h: [__m512i; 2]) -> (__m512i, __m512i) {
    let nib = _mm512_set1_epi8(0x0f);
    let lo = _mm512_and_si512(v, nib);
    let hi = _mm512_and_si512(_mm512_srli_epi16::<4>(v), nib);
    // Shifts move each wanted bit to bit 4 (5); at these distances a 16-bit
    // shift never brings a neighbouring byte's bit there, and the mask
    // drops everything else.
    let (sl, sh, mask) = match (geometry(P).high_bits, CH) {
        (0, _) => return (lo, hi),
        (1, 0) => (
            _mm512_slli_epi16::<4>(h[0]),
            _mm512_slli_epi16::<3>(h[0]),
            0x10,
        ),
        (1, 1) => (
            _mm512_slli_epi16::<2>(h[0]),
            _mm512_slli_epi16::<1>(h[0]),
            0x10,
        ),
        (1, 2) => (h[0], _mm512_srli_epi16::<1>(h[0]), 0x10),
        (1, _) => (
            _mm512_srli_epi16::<2>(h[0]),
            _mm512_srli_epi16::<3>(h[0]),
            0x10,
        ),
        (_, 0) => (
            _mm512_slli_epi16::<4>(h[0]),
            _mm512_slli_epi16::<2>(h[0]),
            0x30,
        ),
        (_, 1) => (h[0], _mm512_srli_epi16::<2>(h[0]), 0x30),
        (_, 2) => (
            _mm512_slli_epi16::<4>(h[1]),
            _mm512_slli_epi16::<2>(h[1]),
            0x30,
        ),
        (_, _) => (h[1], _mm512_srli_epi16::<2>(h[1]), 0x30),
    };
    let mask = _mm512_set1_epi8(mask);
    // 0xf8 = a | (b & c).
    (
        _mm512_ternarylogic_epi32::<0xf8>(lo, sl, mask),
        _mm512_ternarylogic_epi32::<0xf8>(hi, sh, mask),
    )
}

/// Adds chunk `CH` of the unit at `unit` (values `8CH..8CH + 8`) to the
/// integer sums; `x[j]` points at activation row `j`'s block.
#[inline(always)]
unsafe fn chunk<const P: u8, const C: usize, const CH: usize>(
    unit: *const u8,
    h: [__m512i; 2],
    x: &[*const i8; C],
    isum: &mut [__m512i; C],
) {
    // SAFETY: the unit holds 4 chunks of 64 bytes; `x[j]` 32 values.
    unsafe {
        let v = _mm512_loadu_si512(unit.add(64 * CH).cast());
        let (lo, hi) = values::<P, CH>(v, h);
        for j in 0..C {
            let x = x[j].add(8 * CH);
            isum[j] = _mm512_dpbusd_epi32(isum[j], lo, bcast4(x));
            isum[j] = _mm512_dpbusd_epi32(isum[j], hi, bcast4(x.add(4)));
        }
    }
}

/// Converts 16 row bytes (unsigned, or signed for `Q6_K`) to f32 and
/// multiplies by `d`.
#[inline(always)]
unsafe fn row_scales<const SIGNED: bool>(b: __m128i, d: __m512) -> __m512 {
    let i = if SIGNED {
        _mm512_cvtepi8_epi32(b)
    } else {
        _mm512_cvtepu8_epi32(b)
    };
    _mm512_mul_ps(_mm512_cvtepi32_ps(i), d)
}

/// The 16 bytes at `p`.
#[inline(always)]
unsafe fn bytes16(p: *const u8) -> __m128i {
    // SAFETY: callers pass 16 readable bytes.
    unsafe { _mm_loadu_si128(p.cast()) }
}

/// Plane format `P` × Q8 for group `g`, activation rows `col0..col0 + C`.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
unsafe fn plane_group<const P: u8, const C: usize>(
    w: &QuantMatrix,
    a: &Q8Acts,
    g: usize,
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
    let zero = _mm512_setzero_ps();
    let mut acc = [zero; C];
    // k-quants: the activations share one scale per super-block (`Q8Acts`
    // span 8), so each unit's sums are scaled by the row scales only, into
    // `sb`, and by the activation scale once per super-block: 2 float ops
    // per unit and row instead of 3, which share `vpdpbusd`'s pipes.
    let k_quant = matches!(P, Q4K | Q5K | Q6K);
    for s in 0..nb / geo.units {
        let mut sb = [zero; C];
        // SAFETY (whole super-block): `s < nb / units`, so the group
        // super-block lies inside the matrix; activation pointers index
        // block `b < nb` of rows of `k = 32 · nb` values.
        unsafe {
            let sbp = base.add(s * geo.sb_bytes);
            let (dsb, msb) = match P {
                Q4K | Q5K => (
                    _mm512_cvtph_ps(_mm256_loadu_si256(sbp.cast())),
                    _mm512_cvtph_ps(_mm256_loadu_si256(sbp.add(K_DMIN).cast())),
                ),
                Q6K => (_mm512_cvtph_ps(_mm256_loadu_si256(sbp.cast())), zero),
                _ => (zero, zero),
            };
            for u in 0..geo.units {
                let b = s * geo.units + u;
                let unit = sbp.add(geo.unit0 + u * geo.unit_stride);
                prefetch_ahead(C == MAX_COLS, unit, geo.unit_stride);
                let sc = sbp.add(K_SCALES + 32 * u);
                let (d0, d1, mw) = match P {
                    Q5_0 | Q5_1 => {
                        let d = _mm512_cvtph_ps(_mm256_loadu_si256(sbp.add(Q5_D).cast()));
                        let m = if P == Q5_1 {
                            _mm512_cvtph_ps(_mm256_loadu_si256(sbp.add(Q5_1_M).cast()))
                        } else {
                            zero
                        };
                        (d, d, m)
                    }
                    Q4K | Q5K => {
                        let (scb, mb) = k_scale_bytes(sbp.add(K_SCALES), u);
                        let d = row_scales::<false>(scb, dsb);
                        (d, d, row_scales::<false>(mb, msb))
                    }
                    _ => (
                        row_scales::<true>(bytes16(sc), dsb),
                        row_scales::<true>(bytes16(sc.add(16)), dsb),
                        zero,
                    ),
                };
                // Only the planes the format has (reading more could pass
                // the matrix's end).
                let plane = |i: usize| {
                    if geo.high_bits > i {
                        _mm512_loadu_si512(unit.add(NIBBLES + 64 * i).cast())
                    } else {
                        _mm512_setzero_si512()
                    }
                };
                let h = [plane(0), plane(1)];
                let x: [*const i8; C] = std::array::from_fn(|j| xq[j].add(b * BLOCK));
                let mut isum: [__m512i; C] = std::array::from_fn(|j| match P {
                    Q5_0 => _mm512_set1_epi32(-16 * *xsum[j].add(b)),
                    Q6K => _mm512_set1_epi32(-32 * *xsum16[j].add(2 * b)),
                    _ => _mm512_setzero_si512(),
                });
                chunk::<P, C, 0>(unit, h, &x, &mut isum);
                chunk::<P, C, 1>(unit, h, &x, &mut isum);
                // Q6_K: values 0..16 done; scale them and restart for 16..32.
                if P == Q6K {
                    for j in 0..C {
                        sb[j] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum[j]), d0, sb[j]);
                        isum[j] = _mm512_set1_epi32(-32 * *xsum16[j].add(2 * b + 1));
                    }
                }
                chunk::<P, C, 2>(unit, h, &x, &mut isum);
                chunk::<P, C, 3>(unit, h, &x, &mut isum);
                for j in 0..C {
                    let sum = _mm512_cvtepi32_ps(isum[j]);
                    if k_quant {
                        sb[j] = _mm512_fmadd_ps(sum, d1, sb[j]);
                        if P != Q6K {
                            let sx = _mm512_cvtepi32_ps(_mm512_set1_epi32(*xsum[j].add(b)));
                            sb[j] = _mm512_fnmadd_ps(mw, sx, sb[j]);
                        }
                        continue;
                    }
                    let dx = _mm512_set1_ps(*xd[j].add(b));
                    acc[j] = _mm512_fmadd_ps(sum, _mm512_mul_ps(d0, dx), acc[j]);
                    let sx = _mm512_set1_ps(*xs[j].add(b));
                    if P == Q5_1 {
                        acc[j] = _mm512_fmadd_ps(mw, sx, acc[j]);
                    }
                }
            }
            if k_quant {
                for j in 0..C {
                    let dx = _mm512_set1_ps(*xd[j].add(s * geo.units));
                    acc[j] = _mm512_fmadd_ps(sb[j], dx, acc[j]);
                }
            }
        }
    }
    for (j, v) in acc.into_iter().enumerate() {
        // SAFETY: forwarded contract.
        unsafe { store(w, g, col0 + j, v, out) };
    }
}
