//! Layout of the *plane* formats — `Q5_0`, `Q5_1`, `Q4_K`, `Q5_K`, `Q6_K` —
//! shared by every level.
//!
//! All five store unsigned integers of 4, 5 or 6 bits per weight with a scale
//! (and maybe a minimum or an integer offset) per 32 or 16 values. We split
//! each value into its low 4 bits and its 0–2 high bits and store, per 32
//! values × 16 rows (a *unit*, one activation block wide):
//!
//! * a 256-byte nibble plane, exactly `Q4_1`'s interleaving (`matrix.rs`):
//!   in 64-byte chunk `c`, byte `4r + i` holds row `r`'s value `8c + i` in its
//!   low nibble and `8c + 4 + i` in its high nibble;
//! * 5-bit formats: a 64-byte high plane, byte `4r + i` holding bit 4 of
//!   value `8c + i` at bit `2c` and of value `8c + 4 + i` at bit `2c + 1`;
//! * `Q6_K`: two 64-byte high planes (chunks 0–1, then 2–3), byte `4r + i` of
//!   plane `c / 2` holding bits 4–5 of value `8c + i` at bits `4(c % 2)..+2`
//!   and of value `8c + 4 + i` at bits `4(c % 2) + 2..+2`.
//!
//! So a kernel rebuilds a value vector with a shift, a mask and an or, and
//! the byte at `4r + i` of any plane belongs to the same row and values as in
//! the nibble plane (AVX2 reads 32-byte halves = 8 rows of every plane).
//!
//! Per *group super-block* (one GGML block × 16 rows; 32 values for
//! `Q5_0`/`Q5_1`, 256 = 8 units for k-quants):
//!
//! | format | bytes | layout | bits/weight (file) |
//! |---|---|---|---|
//! | `Q5_0` | 352 | unit (256 + 64), 16 f16 `d` | 5.5 (5.5) |
//! | `Q5_1` | 384 | unit, 16 f16 `d`, 16 f16 `m` | 6.0 (6.0) |
//! | `Q4_K` | 2304 | header 256, 8 units of 256 | 4.5 (4.5) |
//! | `Q5_K` | 2816 | header 256, 8 units of 320 | 5.5 (5.5) |
//! | `Q6_K` | 3392 | header 320, 8 units of 384 | 6.625 (6.5625) |
//!
//! The k-quant header: 16 f16 super-block `d` (bytes 0..32), then
//! * `Q4_K`/`Q5_K`: 16 f16 `dmin` (32..64) and GGML's 12 bytes of packed
//!   6-bit scales and minimums transposed into 12 *byte planes* of 16 rows
//!   (plane `i` at `64 + 16i`), so a kernel rebuilds unit `u`'s 16 scales or
//!   minimums with a few 128-bit ops ([`k_scale_bytes`]) and the layout is
//!   exactly the file's size;
//! * `Q6_K`: 32 zero bytes (units stay 64-byte aligned, +0.0625 bits/weight),
//!   then per unit `u` at `64 + 32u` the 16 rows' i8 scales of values 0..16,
//!   then of 16..32.
//!
//! The kernels multiply scales by the f16 `d`/`dmin` in f32, which is exact
//! (an 11-bit mantissa times ≤ 8 bits), as in candle's `to_float`.
//!
//! Value `e` of a unit, row `r`: `d_h · (q − offset) + min`, with `q` the
//! stored unsigned integer and (see [`params`]):
//!
//! * `Q5_0`: `d_h = d`, offset 16, no min; `Q5_1`: `d_h = d`, min `m`;
//! * `Q4_K`/`Q5_K`: `d_h = d·sc_u`, min `−dmin·m_u`;
//! * `Q6_K`: `d_h = d·sc` of values `16h..16h + 16`, offset 32.

use super::f16::read_f16;
use super::ROWS_PER_GROUP;

/// Plane-format ids, used as const generic parameters of the kernels.
pub(crate) const Q5_0: u8 = 0;
pub(crate) const Q5_1: u8 = 1;
pub(crate) const Q4K: u8 = 2;
pub(crate) const Q5K: u8 = 3;
pub(crate) const Q6K: u8 = 4;

/// Values per unit (one activation block).
pub(crate) const UNIT: usize = 32;
/// Bytes of a unit's nibble plane.
pub(crate) const NIBBLES: usize = UNIT * ROWS_PER_GROUP / 2;
/// Offset of the scale byte planes (`Q4_K`/`Q5_K`) or per-unit scale bytes
/// (`Q6_K`) in a k-quant header.
pub(crate) const K_SCALES: usize = 64;
/// Offset of the `dmin` row vector in a `Q4_K`/`Q5_K` header.
pub(crate) const K_DMIN: usize = 32;
/// Offset of the 16 f16 `d` in a `Q5_0`/`Q5_1` super-block.
pub(crate) const Q5_D: usize = 320;
/// Offset of the 16 f16 `m` in a `Q5_1` super-block.
pub(crate) const Q5_1_M: usize = 352;

/// Where things are in a group super-block of format `f`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Geometry {
    /// Units per super-block (1 or 8).
    pub units: usize,
    /// High bits per value (0, 1 or 2): 64 bytes of high plane per bit
    /// follow each unit's nibble plane.
    pub high_bits: usize,
    /// Offset of unit 0.
    pub unit0: usize,
    /// Bytes from one unit to the next.
    pub unit_stride: usize,
    pub sb_bytes: usize,
}

pub(crate) const fn geometry(f: u8) -> Geometry {
    let (units, high_bits, unit0) = match f {
        Q5_0 | Q5_1 => (1, 1, 0),
        Q4K => (8, 0, 256),
        Q5K => (8, 1, 256),
        _ => (8, 2, 320),
    };
    let unit_stride = NIBBLES + 64 * high_bits;
    let tail = match f {
        Q5_0 => 32,
        Q5_1 => 64,
        _ => 0,
    };
    Geometry {
        units,
        high_bits,
        unit0,
        unit_stride,
        sb_bytes: unit0 + units * unit_stride + tail,
    }
}

/// GGML's 6-bit (scale, min) `j` of a `Q4_K`/`Q5_K` block (`get_scale_min_k4`).
fn scale_min_k4(j: usize, q: &[u8]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        (
            (q[j + 4] & 0xf) | ((q[j - 4] >> 6) << 4),
            (q[j + 4] >> 4) | ((q[j] >> 6) << 4),
        )
    }
}

/// Writes one GGML block `src` of row `lane` into group super-block `dst`
/// (zeroed before the first row is written: planes are or-ed in).
pub(crate) fn pack(f: u8, src: &[u8], dst: &mut [u8], lane: usize) {
    let g = geometry(f);
    // The block's unsigned integers in value order.
    let mut q = [0u8; 256];
    match f {
        Q5_0 | Q5_1 => {
            let (qh, qs) = if f == Q5_0 { (2, 6) } else { (4, 8) };
            let qh = u32::from_le_bytes([src[qh], src[qh + 1], src[qh + 2], src[qh + 3]]);
            for j in 0..16 {
                let b = src[qs + j];
                q[j] = (b & 0xf) | (((qh >> j) & 1) << 4) as u8;
                q[j + 16] = (b >> 4) | (((qh >> (j + 16)) & 1) << 4) as u8;
            }
            dst[Q5_D + 2 * lane..][..2].copy_from_slice(&src[..2]);
            if f == Q5_1 {
                dst[Q5_1_M + 2 * lane..][..2].copy_from_slice(&src[2..4]);
            }
        }
        Q4K | Q5K => {
            dst[2 * lane..][..2].copy_from_slice(&src[..2]);
            dst[K_DMIN + 2 * lane..][..2].copy_from_slice(&src[2..4]);
            for i in 0..12 {
                dst[K_SCALES + 16 * i + lane] = src[4 + i];
            }
            let (qs, qh) = if f == Q4K {
                (&src[16..144], None)
            } else {
                (&src[48..176], Some(&src[16..48]))
            };
            // Each 32 bytes hold 64 values: low nibbles first, then high.
            for j in 0..4 {
                for l in 0..32 {
                    let b = qs[32 * j + l];
                    let (h0, h1) = qh.map_or((0, 0), |qh| {
                        ((qh[l] >> (2 * j)) & 1, (qh[l] >> (2 * j + 1)) & 1)
                    });
                    q[64 * j + l] = (b & 0xf) | (h0 << 4);
                    q[64 * j + 32 + l] = (b >> 4) | (h1 << 4);
                }
            }
        }
        _ => {
            let (ql, qh, sc) = (&src[..128], &src[128..192], &src[192..208]);
            dst[2 * lane..][..2].copy_from_slice(&src[208..210]);
            for u in 0..8 {
                dst[K_SCALES + 32 * u + lane] = sc[2 * u];
                dst[K_SCALES + 32 * u + 16 + lane] = sc[2 * u + 1];
            }
            for half in 0..2 {
                for l in 0..32 {
                    let (a, b) = (ql[64 * half + l], ql[64 * half + 32 + l]);
                    let h = qh[32 * half + l];
                    let v = &mut q[128 * half..];
                    v[l] = (a & 0xf) | ((h & 3) << 4);
                    v[l + 32] = (b & 0xf) | (((h >> 2) & 3) << 4);
                    v[l + 64] = (a >> 4) | (((h >> 4) & 3) << 4);
                    v[l + 96] = (b >> 4) | (((h >> 6) & 3) << 4);
                }
            }
        }
    }
    for u in 0..g.units {
        let unit = &mut dst[g.unit0 + u * g.unit_stride..][..g.unit_stride];
        pack_unit(unit, g.high_bits, lane, &q[UNIT * u..][..UNIT]);
    }
}

fn pack_unit(unit: &mut [u8], high_bits: usize, lane: usize, q: &[u8]) {
    for c in 0..4 {
        for i in 0..4 {
            let (a, b) = (q[8 * c + i], q[8 * c + 4 + i]);
            let p = 4 * lane + i;
            unit[64 * c + p] = (a & 0xf) | ((b & 0xf) << 4);
            match high_bits {
                1 => unit[NIBBLES + p] |= ((a >> 4) << (2 * c)) | ((b >> 4) << (2 * c + 1)),
                2 => {
                    let s = 4 * (c % 2);
                    unit[NIBBLES + 64 * (c / 2) + p] |= ((a >> 4) << s) | ((b >> 4) << (s + 2));
                }
                _ => {}
            }
        }
    }
}

/// The stored unsigned integer of value `e` (0..32) of unit `u`, row `lane`,
/// in group super-block `sb` (reference decoding for the scalar kernel).
#[inline]
pub(crate) fn q(f: u8, sb: &[u8], u: usize, lane: usize, e: usize) -> i32 {
    let g = geometry(f);
    let unit = &sb[g.unit0 + u * g.unit_stride..][..g.unit_stride];
    let (c, i) = (e / 8, e % 8);
    let (p, upper) = (4 * lane + i % 4, usize::from(i >= 4));
    let byte = unit[64 * c + p];
    let nib = if upper == 1 { byte >> 4 } else { byte & 0xf };
    let high = match g.high_bits {
        1 => (unit[NIBBLES + p] >> (2 * c + upper)) & 1,
        2 => (unit[NIBBLES + 64 * (c / 2) + p] >> (4 * (c % 2) + 2 * upper)) & 3,
        _ => 0,
    };
    i32::from(nib | (high << 4))
}

/// Row `lane`'s decoding parameters for unit `u` of group super-block `sb`:
/// value `e` is `d[e / 16] · (q − offset) + min`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Params {
    pub d: [f32; 2],
    pub offset: i32,
    pub min: f32,
}

#[inline]
pub(crate) fn params(f: u8, sb: &[u8], u: usize, lane: usize) -> Params {
    let s = K_SCALES + 32 * u;
    match f {
        Q5_0 | Q5_1 => {
            let d = read_f16(sb, Q5_D + 2 * lane);
            let (offset, min) = if f == Q5_0 {
                (16, 0.0)
            } else {
                (0, read_f16(sb, Q5_1_M + 2 * lane))
            };
            Params {
                d: [d; 2],
                offset,
                min,
            }
        }
        Q4K | Q5K => {
            let packed: [u8; 12] = std::array::from_fn(|i| sb[K_SCALES + 16 * i + lane]);
            let (sc, m) = scale_min_k4(u, &packed);
            let d = read_f16(sb, 2 * lane) * f32::from(sc);
            let m = read_f16(sb, K_DMIN + 2 * lane) * f32::from(m);
            Params {
                d: [d; 2],
                offset: 0,
                min: -m,
            }
        }
        _ => {
            let d = read_f16(sb, 2 * lane);
            let sc = |h: usize| d * f32::from(sb[s + 16 * h + lane] as i8);
            Params {
                d: [sc(0), sc(1)],
                offset: 32,
                min: 0.0,
            }
        }
    }
}

/// Unit `u`'s 6-bit (scales, minimums) of 16 rows as bytes, from the 12
/// byte planes at `planes` (`Q4_K`/`Q5_K`): GGML's `get_scale_min_k4` on
/// every row at once. The AVX2 kernels pass `planes + 8` for rows 8..16 and
/// use the low 8 bytes.
///
/// # Safety
/// `planes` must be followed by 12 × 16 readable bytes.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
pub(crate) unsafe fn k_scale_bytes(
    planes: *const u8,
    u: usize,
) -> (std::arch::x86_64::__m128i, std::arch::x86_64::__m128i) {
    use std::arch::x86_64::*;
    // SAFETY: plane `i < 12` is inside the caller's range.
    let plane = |i: usize| unsafe { _mm_loadu_si128(planes.add(16 * i).cast()) };
    if u < 4 {
        let low6 = _mm_set1_epi8(63);
        return (
            _mm_and_si128(plane(u), low6),
            _mm_and_si128(plane(u + 4), low6),
        );
    }
    // 16-bit shifts then masks: bits 6–7 to 4–5 and 4–7 to 0–3 never take a
    // bit from the neighbouring byte at these distances.
    let (nib, top) = (_mm_set1_epi8(0x0f), _mm_set1_epi8(0x30));
    let a = plane(u + 4);
    let high = |i: usize| _mm_and_si128(_mm_srli_epi16::<2>(plane(i)), top);
    (
        _mm_or_si128(_mm_and_si128(a, nib), high(u - 4)),
        _mm_or_si128(_mm_and_si128(_mm_srli_epi16::<4>(a), nib), high(u)),
    )
}
