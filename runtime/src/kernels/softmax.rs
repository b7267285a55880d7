//! Row-wise softmax in place, for attention over long sequences (Whisper's encoder:
//! 1500 × 1500 scores per head and layer), where a scalar `exp` alone would cost
//! more than the two matmuls around it. Rows are shared out over the [`Pool`].

use std::sync::atomic::{AtomicUsize, Ordering};

use super::{active_level, global_pool, Level, OutPtr, Pool};

/// Rows handed to a thread at a time.
const ROWS_PER_TASK: usize = 16;

/// `row = softmax(row)` for every `row_len`-long row of `data`.
pub fn softmax_rows(data: &mut [f32], row_len: usize) {
    softmax_rows_with(active_level(), global_pool(), data, row_len)
}

/// [`softmax_rows`] with an explicit level (clamped to the CPU) and pool.
pub fn softmax_rows_with(level: Level, pool: &Pool, data: &mut [f32], row_len: usize) {
    if row_len == 0 || data.is_empty() {
        return;
    }
    let rows = data.len() / row_len;
    let level = level.clamp_supported();
    let out = OutPtr {
        ptr: data.as_mut_ptr(),
        len: rows * row_len,
    };
    let next = AtomicUsize::new(0);
    let tasks = rows.div_ceil(ROWS_PER_TASK);
    pool.run(&|| loop {
        let t = next.fetch_add(1, Ordering::Relaxed);
        if t >= tasks {
            break;
        }
        let lo = t * ROWS_PER_TASK * row_len;
        let hi = ((t + 1) * ROWS_PER_TASK).min(rows) * row_len;
        // SAFETY: tasks cover disjoint row ranges inside `data`, which outlives the call.
        let chunk = unsafe { out.range_mut(lo, hi) };
        for row in chunk.chunks_exact_mut(row_len) {
            softmax_row(level, row);
        }
    });
}

fn softmax_row(level: Level, row: &mut [f32]) {
    let max = row.iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x));
    #[cfg(target_arch = "x86_64")]
    if level == Level::Avx512 {
        // SAFETY: the level is clamped to what the CPU supports.
        unsafe { x86::exp_sub_avx512(row, max) };
        return finish(row);
    }
    let _ = level;
    for x in row.iter_mut() {
        *x = (*x - max).exp();
    }
    finish(row)
}

fn finish(row: &mut [f32]) {
    let inv = 1.0 / row.iter().sum::<f32>();
    row.iter_mut().for_each(|x| *x *= inv);
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use crate::kernels::attention::x86::exp512;

    /// `row[i] = exp(row[i] - max)`.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn exp_sub_avx512(row: &mut [f32], max: f32) {
        let m = _mm512_set1_ps(max);
        let mut chunks = row.chunks_exact_mut(16);
        for c in &mut chunks {
            let x = _mm512_loadu_ps(c.as_ptr());
            _mm512_storeu_ps(c.as_mut_ptr(), exp512(_mm512_sub_ps(x, m)));
        }
        for x in chunks.into_remainder() {
            *x = (*x - max).exp();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_scalar_reference() {
        let row_len = 1500;
        let data: Vec<f32> = (0..row_len * 37)
            .map(|i| ((i * 7919) % 1000) as f32 / 50.0 - 10.0)
            .collect();
        let mut reference = data.clone();
        for row in reference.chunks_exact_mut(row_len) {
            softmax_row(Level::Scalar, row);
        }
        let mut fast = data;
        softmax_rows(&mut fast, row_len);
        for (a, b) in fast.iter().zip(&reference) {
            assert!((a - b).abs() <= 1e-6 * b.abs().max(1e-6), "{a} vs {b}");
        }
        for row in fast.chunks_exact(row_len) {
            assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-4);
        }
    }
}
