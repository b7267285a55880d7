//! Portable reference kernel: the definition the SIMD kernels must match.
//!
//! Written for clarity, not speed (it decodes the interleaved layout value by
//! value through [`QuantMatrix::decode`]); it is the only level on non-x86
//! targets and the baseline of the parity tests. Per row, column and block:
//! `acc += d_w · d_x · Σ q_w q_x + m_w · d_x · Σ q_x`, the integer sum exact.
//! Plane formats (`planes.rs`) per row, column and unit of 32 values:
//! `acc += d_x · d · Σ (q_w − offset) q_x + min · d_x · Σ q_x`, except
//! `Q6_K`: `acc += d_x · (d_0 · Σ_0 + d_1 · Σ_1)` over the two 16-value halves.

use std::ops::Range;

use super::acts::Q8Acts;
use super::matrix::{QuantMatrix, BLOCK, ROWS_PER_GROUP};
use super::planes;
use super::OutPtr;

pub(crate) fn run_groups(w: &QuantMatrix, a: &Q8Acts, groups: Range<usize>, out: OutPtr) {
    if let Some(p) = w.format().plane() {
        return plane_groups(p, w, a, groups, out);
    }
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

fn plane_groups(p: u8, w: &QuantMatrix, a: &Q8Acts, groups: Range<usize>, out: OutPtr) {
    let (rows, nb) = (w.rows(), w.blocks_per_row());
    let (gbb, units) = (w.format().group_block_bytes(), planes::geometry(p).units);
    let bytes = w.bytes();
    for g in groups {
        let group = &bytes[g * w.group_bytes()..][..w.group_bytes()];
        let lanes = ROWS_PER_GROUP.min(rows - g * ROWS_PER_GROUP);
        for col in 0..a.n {
            let x = a.row(col);
            let (dx, sx) = (&a.d[col * nb..][..nb], &a.s[col * nb..][..nb]);
            for lane in 0..lanes {
                let mut acc = 0f32;
                for b in 0..nb {
                    let (sb, u) = (&group[b / units * gbb..][..gbb], b % units);
                    let prm = planes::params(p, sb, u, lane);
                    let xb = &x[b * BLOCK..][..BLOCK];
                    let mut half = [0i32; 2];
                    for (e, &xv) in xb.iter().enumerate() {
                        half[e / 16] += (planes::q(p, sb, u, lane, e) - prm.offset) * i32::from(xv);
                    }
                    acc += if p == planes::Q6K {
                        dx[b] * (prm.d[0] * half[0] as f32 + prm.d[1] * half[1] as f32)
                    } else {
                        prm.d[0] * dx[b] * (half[0] + half[1]) as f32 + prm.min * sx[b]
                    };
                }
                let idx = col * rows + g * ROWS_PER_GROUP + lane;
                assert!(idx < out.len);
                // SAFETY: as in `run_groups`.
                unsafe { *out.ptr.add(idx) = acc };
            }
        }
    }
}
