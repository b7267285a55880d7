//! Portable reference kernel: the definition the SIMD kernels must match.
//!
//! Written for clarity, not speed (it decodes the interleaved layout value by
//! value through [`QuantMatrix::decode`]); it is the only level on non-x86
//! targets and the baseline of the parity tests. Per row, column and block:
//! `acc += d_w · d_x · Σ q_w q_x + m_w · d_x · Σ q_x`, the integer sum exact.

use std::ops::Range;

use super::acts::Q8Acts;
use super::matrix::{QuantMatrix, BLOCK, ROWS_PER_GROUP};
use super::OutPtr;

pub(crate) fn run_groups(w: &QuantMatrix, a: &Q8Acts, groups: Range<usize>, out: OutPtr) {
    let (format, rows, nb) = (w.format(), w.rows(), w.blocks_per_row());
    let gbb = format.group_block_bytes();
    let bytes = w.bytes();
    for g in groups {
        let group = &bytes[g * nb * gbb..(g + 1) * nb * gbb];
        let lanes = ROWS_PER_GROUP.min(rows - g * ROWS_PER_GROUP);
        for col in 0..a.n {
            let x = a.row(col);
            let (dx, sx) = (&a.d[col * nb..][..nb], &a.s[col * nb..][..nb]);
            for lane in 0..lanes {
                let mut acc = 0f32;
                for (b, gb) in group.chunks_exact(gbb).enumerate() {
                    let xb = &x[b * BLOCK..][..BLOCK];
                    let isum: i32 = (0..BLOCK)
                        .map(|e| QuantMatrix::decode(gb, format, lane, e) * i32::from(xb[e]))
                        .sum();
                    let (d, m) = QuantMatrix::scales(gb, format, lane);
                    acc += d * dx[b] * isum as f32 + m * sx[b];
                }
                let idx = col * rows + g * ROWS_PER_GROUP + lane;
                assert!(idx < out.len);
                // SAFETY: in bounds (checked above); only this task writes the
                // rows of group `g` (see `OutPtr`).
                unsafe { *out.ptr.add(idx) = acc };
            }
        }
    }
}
