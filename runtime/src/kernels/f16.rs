//! IEEE half → single conversion for the scalar path.
//!
//! The SIMD kernels convert scales with `vcvtph2ps`; the scalar reference
//! needs the same conversion without depending on the `half` crate (not a
//! direct dependency of this crate) or on F16C.

/// Converts IEEE 754 binary16 bits to `f32`, exactly (every half is
/// representable as a single), including subnormals, infinities and NaN.
pub(crate) fn f16_to_f32(h: u16) -> f32 {
    let sign = u32::from(h & 0x8000) << 16;
    let exp = u32::from((h >> 10) & 0x1f);
    let man = u32::from(h & 0x3ff);
    let bits = match (exp, man) {
        (0, 0) => sign,
        // Subnormal half: value = man · 2^-24, a normal single (exact).
        (0, _) => {
            let v = man as f32 * (1.0 / 16_777_216.0);
            return if sign != 0 { -v } else { v };
        }
        (0x1f, 0) => sign | 0x7f80_0000,
        (0x1f, _) => sign | 0x7fc0_0000 | (man << 13),
        _ => sign | ((exp + 127 - 15) << 23) | (man << 13),
    };
    f32::from_bits(bits)
}

/// Reads the little-endian f16 at `bytes[i..i + 2]`.
#[inline]
pub(crate) fn read_f16(bytes: &[u8], i: usize) -> f32 {
    f16_to_f32(u16::from_le_bytes([bytes[i], bytes[i + 1]]))
}

#[cfg(test)]
mod tests {
    use super::f16_to_f32;

    #[test]
    fn kernels_f16_all_bit_patterns() {
        for b in 0..=u16::MAX {
            let ours = f16_to_f32(b);
            let reference = reference_f16(b);
            assert!(
                ours.to_bits() == reference.to_bits() || (ours.is_nan() && reference.is_nan()),
                "{b:#06x}: {ours} vs {reference}"
            );
        }
    }

    /// Straightforward definition: (-1)^s · 2^(e-15) · (1 + m/1024), or
    /// 2^-14 · m/1024 for subnormals.
    fn reference_f16(h: u16) -> f32 {
        let s = if h & 0x8000 != 0 { -1.0f64 } else { 1.0 };
        let e = i32::from((h >> 10) & 0x1f);
        let m = f64::from(h & 0x3ff);
        let v = match e {
            0 => s * m / 1024.0 * 2f64.powi(-14),
            31 if m == 0.0 => s * f64::INFINITY,
            31 => f64::NAN,
            _ => s * (1.0 + m / 1024.0) * 2f64.powi(e - 15),
        };
        v as f32
    }
}
