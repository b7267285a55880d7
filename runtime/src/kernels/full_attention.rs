//! Fused full (non-causal) attention for long sequences: Whisper's encoder, 1500 frames
//! attending to each other in every head and layer.
//!
//! Per task (one head, a tile of 8 queries): scores of the tile against every key (keys
//! transposed once per call so 16 keys fill a 512-bit register), softmax in place, then
//! the weighted sum of values — all in a tile-sized scratch buffer that stays in L2,
//! instead of three passes over a 1500 × 1500 matrix per head. Tasks are shared out
//! over the [`Pool`]; each output row is written by exactly one task.
//!
//! AVX-512 only: [`full_attention`] returns `false` on other CPUs and the caller keeps its
//! portable (GEMM) path.

use std::cell::RefCell;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::{active_level, global_pool, Level, OutPtr, Pool};

/// Queries per task (rows of the score tile).
const TILE: usize = 8;

/// Shape of one call: `qkv` is `[t, 3·d]` (Q | K | V, head `h` at columns `h·hd`),
/// `out` `[t, d]`.
#[derive(Clone, Copy, Debug)]
pub struct FullShape {
    pub t: usize,
    pub n_head: usize,
    pub head_dim: usize,
}

thread_local! {
    static SCRATCH: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// `out[:, h] = softmax(Q_h·K_hᵀ / sqrt(hd))·V_h` for every head. Returns `false`
/// (having done nothing) unless the AVX-512 level is active and `head_dim` is a
/// multiple of 16.
pub fn full_attention(shape: FullShape, qkv: &[f32], out: &mut [f32]) -> bool {
    full_attention_with(active_level(), global_pool(), shape, qkv, out)
}

pub fn full_attention_with(
    level: Level,
    pool: &Pool,
    shape: FullShape,
    qkv: &[f32],
    out: &mut [f32],
) -> bool {
    let FullShape {
        t,
        n_head,
        head_dim: hd,
    } = shape;
    let d = n_head * hd;
    if level.clamp_supported() != Level::Avx512
        || hd % 16 != 0
        || qkv.len() < t * 3 * d
        || out.len() < t * d
        || t == 0
    {
        return false;
    }
    #[cfg(target_arch = "x86_64")]
    {
        // Keys transposed per head, padded to whole registers: kt[h][c][j] = K_h[j][c].
        let t_pad = t.next_multiple_of(32);
        let mut kt = vec![0f32; n_head * hd * t_pad];
        for j in 0..t {
            let row = &qkv[j * 3 * d + d..j * 3 * d + 2 * d];
            for (h, head) in row.chunks_exact(hd).enumerate() {
                for (c, &v) in head.iter().enumerate() {
                    kt[(h * hd + c) * t_pad + j] = v;
                }
            }
        }
        let tiles = t.div_ceil(TILE);
        let tasks = n_head * tiles;
        let next = AtomicUsize::new(0);
        let dst = OutPtr {
            ptr: out.as_mut_ptr(),
            len: t * d,
        };
        let scale = 1.0 / (hd as f32).sqrt();
        pool.run(&|| {
            SCRATCH.with(|cell| {
                let mut scores = cell.borrow_mut();
                scores.resize(TILE * t_pad, 0.0);
                loop {
                    let task = next.fetch_add(1, Ordering::Relaxed);
                    if task >= tasks {
                        break;
                    }
                    let (h, tile) = (task / tiles, task % tiles);
                    let rows = tile * TILE..((tile + 1) * TILE).min(t);
                    let kt_h = &kt[h * hd * t_pad..(h + 1) * hd * t_pad];
                    // SAFETY: AVX-512 is active (checked above); every slice is in
                    // bounds by construction; this task alone writes rows × head h.
                    unsafe { x86::tile(qkv, kt_h, &mut scores, dst, rows, h, shape, t_pad, scale) };
                }
            })
        });
        true
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = pool;
        false
    }
}

#[cfg(target_arch = "x86_64")]
// Register tiles read best as indexed loops over fixed-size arrays.
#[allow(clippy::needless_range_loop)]
mod x86 {
    use std::arch::x86_64::*;
    use std::ops::Range;

    use super::{FullShape, OutPtr, TILE};

    /// One head × one tile of queries, start to finish.
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx512f")]
    pub unsafe fn tile(
        qkv: &[f32],
        kt: &[f32],
        scores: &mut [f32],
        out: OutPtr,
        rows: Range<usize>,
        h: usize,
        shape: FullShape,
        t_pad: usize,
        scale: f32,
    ) {
        let FullShape {
            t,
            head_dim: hd,
            n_head,
        } = shape;
        let d = n_head * hd;
        let n = rows.len();
        let qbase = qkv.as_ptr().add(rows.start * 3 * d + h * hd);
        let sc = _mm512_set1_ps(scale);
        for kb in (0..t_pad).step_by(32) {
            let dst = scores.as_mut_ptr().add(kb);
            if n == TILE {
                qk::<TILE>(qbase, 3 * d, kt.as_ptr().add(kb), t_pad, hd, dst, sc);
            } else {
                for r in 0..n {
                    let dst = dst.add(r * t_pad);
                    qk::<1>(
                        qbase.add(r * 3 * d),
                        3 * d,
                        kt.as_ptr().add(kb),
                        t_pad,
                        hd,
                        dst,
                        sc,
                    );
                }
            }
        }
        // Softmax over the t real keys of each row (padding excluded).
        for r in 0..n {
            softmax(&mut scores[r * t_pad..r * t_pad + t]);
        }
        // Weighted sum of values, 64 dims at a time.
        let vbase = qkv.as_ptr().add(2 * d + h * hd);
        for c0 in (0..hd).step_by(64) {
            let mut r0 = 0;
            while r0 < n {
                let o = out.ptr.add((rows.start + r0) * d + h * hd + c0);
                let p = scores.as_ptr().add(r0 * t_pad);
                let v = vbase.add(c0);
                let take = if n - r0 >= 4 { 4 } else { 1 };
                match (take, (hd - c0).min(64) / 16) {
                    (4, 4) => pv::<4, 4>(p, t_pad, v, 3 * d, t, o, d),
                    (1, 4) => pv::<1, 4>(p, t_pad, v, 3 * d, t, o, d),
                    (4, 2) => pv::<4, 2>(p, t_pad, v, 3 * d, t, o, d),
                    (1, 2) => pv::<1, 2>(p, t_pad, v, 3 * d, t, o, d),
                    (4, 1) => pv::<4, 1>(p, t_pad, v, 3 * d, t, o, d),
                    (1, 1) => pv::<1, 1>(p, t_pad, v, 3 * d, t, o, d),
                    (4, 3) => pv::<4, 3>(p, t_pad, v, 3 * d, t, o, d),
                    _ => pv::<1, 3>(p, t_pad, v, 3 * d, t, o, d),
                }
                r0 += take;
            }
        }
    }

    /// Scores of `R` queries (rows `q`, `q + q_stride`, …) against 32 keys: `hd` steps
    /// of 2 key loads, `R` broadcasts and `2R` FMAs, accumulators in registers.
    #[inline(always)]
    unsafe fn qk<const R: usize>(
        q: *const f32,
        q_stride: usize,
        kt: *const f32,
        kt_stride: usize,
        hd: usize,
        dst: *mut f32,
        scale: __m512,
    ) {
        let mut acc = [[_mm512_setzero_ps(); 2]; R];
        for c in 0..hd {
            let k0 = _mm512_loadu_ps(kt.add(c * kt_stride));
            let k1 = _mm512_loadu_ps(kt.add(c * kt_stride + 16));
            for r in 0..R {
                let qv = _mm512_set1_ps(*q.add(r * q_stride + c));
                acc[r][0] = _mm512_fmadd_ps(qv, k0, acc[r][0]);
                acc[r][1] = _mm512_fmadd_ps(qv, k1, acc[r][1]);
            }
        }
        for r in 0..R {
            _mm512_storeu_ps(dst.add(r * kt_stride), _mm512_mul_ps(acc[r][0], scale));
            _mm512_storeu_ps(dst.add(r * kt_stride + 16), _mm512_mul_ps(acc[r][1], scale));
        }
    }

    /// `out[r][0..16W] = Σ_j p[r][j] · v[j][0..16W]` for `R` rows.
    #[inline(always)]
    unsafe fn pv<const R: usize, const W: usize>(
        p: *const f32,
        p_stride: usize,
        v: *const f32,
        v_stride: usize,
        t: usize,
        out: *mut f32,
        out_stride: usize,
    ) {
        let mut acc = [[_mm512_setzero_ps(); W]; R];
        for j in 0..t {
            let vj = v.add(j * v_stride);
            let mut vv = [_mm512_setzero_ps(); W];
            for i in 0..W {
                vv[i] = _mm512_loadu_ps(vj.add(16 * i));
            }
            for r in 0..R {
                let pr = _mm512_set1_ps(*p.add(r * p_stride + j));
                for i in 0..W {
                    acc[r][i] = _mm512_fmadd_ps(pr, vv[i], acc[r][i]);
                }
            }
        }
        for r in 0..R {
            for i in 0..W {
                _mm512_storeu_ps(out.add(r * out_stride + 16 * i), acc[r][i]);
            }
        }
    }

    #[target_feature(enable = "avx512f")]
    unsafe fn softmax(row: &mut [f32]) {
        crate::kernels::softmax::softmax_row_avx512(row);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Against a straightforward f64 reference, including a ragged last tile.
    #[test]
    fn matches_reference() {
        // The active level, not the CPU's: `SURGE_KERNEL=avx2` runs the kernels
        // tests without AVX-512, where this kernel declines.
        if active_level() != Level::Avx512 {
            eprintln!("SKIP: AVX-512 not the active level");
            return;
        }
        let (t, n_head, hd) = (45, 2, 32);
        let d = n_head * hd;
        let qkv: Vec<f32> = (0..t * 3 * d)
            .map(|i| ((i * 7919 % 1013) as f32 / 1013.0 - 0.5) * 2.0)
            .collect();
        let mut out = vec![0f32; t * d];
        let shape = FullShape {
            t,
            n_head,
            head_dim: hd,
        };
        assert!(full_attention(shape, &qkv, &mut out));
        let scale = 1.0 / (hd as f64).sqrt();
        for h in 0..n_head {
            for i in 0..t {
                let q = &qkv[i * 3 * d + h * hd..][..hd];
                let s: Vec<f64> = (0..t)
                    .map(|j| {
                        let k = &qkv[j * 3 * d + d + h * hd..][..hd];
                        q.iter()
                            .zip(k)
                            .map(|(a, b)| *a as f64 * *b as f64)
                            .sum::<f64>()
                            * scale
                    })
                    .collect();
                let m = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let e: Vec<f64> = s.iter().map(|x| (x - m).exp()).collect();
                let z: f64 = e.iter().sum();
                for c in 0..hd {
                    let want: f64 = (0..t)
                        .map(|j| e[j] / z * qkv[j * 3 * d + 2 * d + h * hd + c] as f64)
                        .sum();
                    let got = out[i * d + h * hd + c] as f64;
                    assert!((got - want).abs() < 1e-5, "h{h} i{i} c{c}: {got} vs {want}");
                }
            }
        }
    }
}
