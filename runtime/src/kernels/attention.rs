//! Fused CPU attention for decode steps (one new token per sequence), used by Whisper's
//! decoder; the LLM's attention, prompt chunks included, is `causal.rs`.
//!
//! For every sequence and query head `h` (kv head `h / group`), computes
//! `softmax(q·Kᵀ / sqrt(head_dim)) · V` over the sequence's `len` cached
//! tokens in one pass per head, reading keys and values straight from the
//! head-major cache (`[n_kv_head, capacity, head_dim]`, see
//! `llm::kv_cache`). candle's path for the same maths runs half a dozen ops
//! (matmul, scale, softmax, matmul, reshapes) per sequence and layer, which
//! is mostly dispatch overhead at decode sizes.
//!
//! Work is split over the [`Pool`] by (sequence, head) task; each task is
//! computed entirely by one thread in a fixed order, so a sequence's result
//! does not depend on the batch it runs in or on the thread count (batched
//! decoding stays bit-identical to solo decoding).
//!
//! Levels: AVX-512F and AVX2+FMA vector loops (dots, a vectorised `exp` with
//! ~1e-7 relative error, weighted sums) and a scalar reference using `f32::exp`.

use std::cell::RefCell;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::{check, global_pool, Level, OutPtr, Pool, Result};

/// One sequence's cached keys and values for one layer.
#[derive(Clone, Copy)]
pub struct DecodeKv<'a> {
    /// Keys, head-major: kv head `g`, token `t` starts at `g * head_stride + t * head_dim`.
    pub k: &'a [f32],
    /// Values, same layout as `k`.
    pub v: &'a [f32],
    /// Distance between kv heads in elements (`capacity * head_dim`).
    pub head_stride: usize,
    /// Valid tokens (the new one included); must be at least 1.
    pub len: usize,
}

/// Shapes shared by every sequence of a call.
#[derive(Clone, Copy, Debug)]
pub struct AttnShape {
    pub n_head: usize,
    pub n_kv_head: usize,
    pub head_dim: usize,
}

/// `out[s, h, :] = softmax(q[s, h]·K_s[g]ᵀ / sqrt(head_dim)) · V_s[g]` with
/// `g = h / (n_head / n_kv_head)`, for every sequence `s` of `seqs`.
/// `q` and `out` are `[seqs.len(), n_head, head_dim]` row-major.
/// Uses [`super::active_level`] and the [`global_pool`].
pub fn decode_attention(
    shape: AttnShape,
    q: &[f32],
    seqs: &[DecodeKv<'_>],
    out: &mut [f32],
) -> Result<()> {
    decode_attention_with(super::active_level(), global_pool(), shape, q, seqs, out)
}

/// Below this many multiply-adds (`Σ n_head * len * head_dim * 2`) a call runs
/// on the caller alone: waking a worker costs about a microsecond.
const MIN_PARALLEL_WORK: usize = 32 * 1024;

/// [`decode_attention`] with an explicit level (clamped to the CPU) and pool.
pub fn decode_attention_with(
    level: Level,
    pool: &Pool,
    shape: AttnShape,
    q: &[f32],
    seqs: &[DecodeKv<'_>],
    out: &mut [f32],
) -> Result<()> {
    let AttnShape {
        n_head,
        n_kv_head,
        head_dim: hd,
    } = shape;
    let n = seqs.len();
    let row = n_head.saturating_mul(hd);
    check(
        "q.len() = seqs * n_head * head_dim",
        n.saturating_mul(row),
        q.len(),
    )?;
    check(
        "out.len() = seqs * n_head * head_dim",
        n.saturating_mul(row),
        out.len(),
    )?;
    ensure(
        "n_head a multiple of n_kv_head",
        n_kv_head > 0 && n_head % n_kv_head == 0,
    )?;
    for s in seqs {
        ensure("len >= 1", s.len >= 1)?;
        ensure("head_stride >= len * head_dim", s.head_stride >= s.len * hd)?;
        // Last element read: kv head n_kv_head - 1, token len - 1.
        let need = (n_kv_head - 1) * s.head_stride + s.len * hd;
        ensure("k.len() covers the cache", s.k.len() >= need)?;
        ensure("v.len() covers the cache", s.v.len() >= need)?;
    }
    if n == 0 || n_head == 0 || hd == 0 {
        return Ok(());
    }
    let level = level.clamp_supported();
    let group = n_head / n_kv_head;
    let scale = 1.0 / (hd as f32).sqrt();
    let out = OutPtr {
        ptr: out.as_mut_ptr(),
        len: out.len(),
    };
    let tasks = n * n_head;
    let task = |t: usize, scores: &mut Vec<f32>| {
        // Capture the whole `OutPtr` (it is `Sync`), not its raw field.
        let out: OutPtr = out;
        let (s, h) = (t / n_head, t % n_head);
        let kv = &seqs[s];
        let base = (h / group) * kv.head_stride;
        let k = &kv.k[base..base + kv.len * hd];
        let v = &kv.v[base..base + kv.len * hd];
        let qh = &q[t * hd..(t + 1) * hd];
        debug_assert!((t + 1) * hd <= out.len);
        // SAFETY: task `t` is run exactly once and writes only row `t` of
        // `out`, which is alive for the whole call (see `OutPtr`).
        let o = unsafe { std::slice::from_raw_parts_mut(out.ptr.add(t * hd), hd) };
        scores.clear();
        scores.resize(kv.len, 0.0);
        head(level, qh, k, v, hd, scale, scores, o);
    };
    let work: usize = seqs.iter().map(|s| s.len).sum::<usize>() * n_head * hd * 2;
    if pool.threads() == 1 || work < MIN_PARALLEL_WORK {
        SCORES.with(|c| {
            let mut fresh = Vec::new();
            let mut b = c.try_borrow_mut();
            let scores = b.as_deref_mut().unwrap_or(&mut fresh);
            (0..tasks).for_each(|t| task(t, scores));
        });
        return Ok(());
    }
    let next = AtomicUsize::new(0);
    pool.run(&|| {
        SCORES.with(|c| {
            let mut fresh = Vec::new();
            let mut b = c.try_borrow_mut();
            let scores = b.as_deref_mut().unwrap_or(&mut fresh);
            loop {
                let t = next.fetch_add(1, Ordering::Relaxed);
                if t >= tasks {
                    break;
                }
                task(t, scores);
            }
        })
    });
    Ok(())
}

/// A failed shape condition as a [`super::KernelError::Shape`] (1 expected, 0 got).
fn ensure(what: &'static str, ok: bool) -> Result<()> {
    check(what, 1, usize::from(ok))
}

thread_local! {
    /// Per-thread score buffer, reused across calls.
    static SCORES: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// One head: `scores` has `len` entries (scratch), `k`/`v` are `len * hd`.
#[allow(clippy::too_many_arguments)]
fn head(
    level: Level,
    q: &[f32],
    k: &[f32],
    v: &[f32],
    hd: usize,
    scale: f32,
    scores: &mut [f32],
    out: &mut [f32],
) {
    match level {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `level` was clamped to a supported one, so the CPU has
        // AVX-512F; slice lengths are checked by the caller.
        Level::Avx512 => unsafe { x86::head_avx512(q, k, v, hd, scale, scores, out) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as above, the CPU has AVX2 and FMA.
        Level::Avx2 => unsafe { x86::head_avx2(q, k, v, hd, scale, scores, out) },
        _ => head_scalar(q, k, v, hd, scale, scores, out),
    }
}

/// Portable reference (exact `f32::exp`).
fn head_scalar(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    hd: usize,
    scale: f32,
    scores: &mut [f32],
    out: &mut [f32],
) {
    let mut max = f32::NEG_INFINITY;
    for (s, kr) in scores.iter_mut().zip(k.chunks_exact(hd)) {
        *s = q.iter().zip(kr).map(|(a, b)| a * b).sum::<f32>() * scale;
        max = max.max(*s);
    }
    let mut sum = 0.0f32;
    for s in scores.iter_mut() {
        *s = (*s - max).exp();
        sum += *s;
    }
    out.fill(0.0);
    for (&p, vr) in scores.iter().zip(v.chunks_exact(hd)) {
        for (o, &x) in out.iter_mut().zip(vr) {
            *o += p * x;
        }
    }
    let inv = 1.0 / sum;
    out.iter_mut().for_each(|o| *o *= inv);
}

#[cfg(target_arch = "x86_64")]
pub(super) mod x86 {
    use std::arch::x86_64::*;

    // Cephes expf: exp(x) = 2^n * exp(r), r = x - n ln2, |r| <= ln2/2.
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    const P0: f32 = 1.987_569_1e-4;
    const P1: f32 = 1.398_199_9e-3;
    const P2: f32 = 8.333_452e-3;
    const P3: f32 = 4.166_579_6e-2;
    const P4: f32 = 1.666_666_5e-1;
    const P5: f32 = 0.5;
    /// Inputs are `score - max <= 0`; below this exp is < 1e-37 and is
    /// clamped so `2^n` stays a normal float.
    const X_MIN: f32 = -87.0;

    #[target_feature(enable = "avx512f")]
    pub(crate) fn exp512(x: __m512) -> __m512 {
        let x = _mm512_max_ps(x, _mm512_set1_ps(X_MIN));
        let n = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
            _mm512_mul_ps(x, _mm512_set1_ps(LOG2E)),
        );
        let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(LN2_HI), x);
        let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(LN2_LO), r);
        let mut p = _mm512_set1_ps(P0);
        p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(P1));
        p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(P2));
        p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(P3));
        p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(P4));
        p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(P5));
        let r2 = _mm512_mul_ps(r, r);
        let y = _mm512_add_ps(_mm512_fmadd_ps(p, r2, r), _mm512_set1_ps(1.0));
        let e = _mm512_slli_epi32::<23>(_mm512_add_epi32(
            _mm512_cvtps_epi32(n),
            _mm512_set1_epi32(127),
        ));
        _mm512_mul_ps(y, _mm512_castsi512_ps(e))
    }

    #[target_feature(enable = "avx2,fma")]
    pub(crate) fn exp256(x: __m256) -> __m256 {
        let x = _mm256_max_ps(x, _mm256_set1_ps(X_MIN));
        let n = _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
            _mm256_mul_ps(x, _mm256_set1_ps(LOG2E)),
        );
        let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(LN2_HI), x);
        let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(LN2_LO), r);
        let mut p = _mm256_set1_ps(P0);
        p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(P1));
        p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(P2));
        p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(P3));
        p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(P4));
        p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(P5));
        let r2 = _mm256_mul_ps(r, r);
        let y = _mm256_add_ps(_mm256_fmadd_ps(p, r2, r), _mm256_set1_ps(1.0));
        let e = _mm256_slli_epi32::<23>(_mm256_add_epi32(
            _mm256_cvtps_epi32(n),
            _mm256_set1_epi32(127),
        ));
        _mm256_mul_ps(y, _mm256_castsi256_ps(e))
    }

    /// AVX-512 head. Slices: `q`/`out` `hd`, `k`/`v` `scores.len() * hd`.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn head_avx512(
        q: &[f32],
        k: &[f32],
        v: &[f32],
        hd: usize,
        scale: f32,
        scores: &mut [f32],
        out: &mut [f32],
    ) {
        let len = scores.len();
        debug_assert!(q.len() == hd && out.len() == hd);
        debug_assert!(k.len() >= len * hd && v.len() >= len * hd);
        let vec = hd / 16 * 16;
        // Scores and running max.
        let mut max = f32::NEG_INFINITY;
        for (t, s) in scores.iter_mut().enumerate() {
            let kr = &k[t * hd..(t + 1) * hd];
            let mut acc = _mm512_setzero_ps();
            let mut i = 0;
            while i < vec {
                // SAFETY: i + 16 <= vec <= hd = q.len() = kr.len().
                let (a, b) = unsafe {
                    (
                        _mm512_loadu_ps(q.as_ptr().add(i)),
                        _mm512_loadu_ps(kr.as_ptr().add(i)),
                    )
                };
                acc = _mm512_fmadd_ps(a, b, acc);
                i += 16;
            }
            let mut d = _mm512_reduce_add_ps(acc);
            for j in vec..hd {
                d += q[j] * kr[j];
            }
            *s = d * scale;
            max = max.max(*s);
        }
        // exp(s - max) and the sum.
        let vmax = _mm512_set1_ps(max);
        let mut vsum = _mm512_setzero_ps();
        let lvec = len / 16 * 16;
        let mut t = 0;
        while t < lvec {
            // SAFETY: t + 16 <= len = scores.len().
            unsafe {
                let p = scores.as_mut_ptr().add(t);
                let e = exp512(_mm512_sub_ps(_mm512_loadu_ps(p), vmax));
                _mm512_storeu_ps(p, e);
                vsum = _mm512_add_ps(vsum, e);
            }
            t += 16;
        }
        if t < len {
            let m: __mmask16 = (1u32 << (len - t)) as u16 - 1;
            // SAFETY: the mask covers only entries below len.
            unsafe {
                let p = scores.as_mut_ptr().add(t);
                let e = exp512(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, p), vmax));
                let e = _mm512_maskz_mov_ps(m, e);
                _mm512_mask_storeu_ps(p, m, e);
                vsum = _mm512_add_ps(vsum, e);
            }
        }
        let inv = 1.0 / _mm512_reduce_add_ps(vsum);
        // Weighted sum of values, 16 lanes at a time; 4 accumulators for
        // head_dim 64 (the common case) are handled by the chunk loop.
        let mut c = 0;
        while c < vec {
            let w = (vec - c).min(64);
            let mut acc = [_mm512_setzero_ps(); 4];
            for (t, &p) in scores.iter().enumerate() {
                let pv = _mm512_set1_ps(p);
                let vr = &v[t * hd + c..t * hd + c + w];
                for (j, a) in acc.iter_mut().enumerate().take(w / 16) {
                    // SAFETY: (j + 1) * 16 <= w = vr.len().
                    *a = _mm512_fmadd_ps(
                        pv,
                        unsafe { _mm512_loadu_ps(vr.as_ptr().add(j * 16)) },
                        *a,
                    );
                }
            }
            let vinv = _mm512_set1_ps(inv);
            for (j, a) in acc.iter().enumerate().take(w / 16) {
                // SAFETY: c + (j + 1) * 16 <= vec <= out.len().
                unsafe {
                    _mm512_storeu_ps(out.as_mut_ptr().add(c + j * 16), _mm512_mul_ps(*a, vinv))
                };
            }
            c += w;
        }
        for j in vec..hd {
            let s: f32 = scores
                .iter()
                .enumerate()
                .map(|(t, &p)| p * v[t * hd + j])
                .sum();
            out[j] = s * inv;
        }
    }

    /// AVX2 head; same contract as [`head_avx512`].
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn head_avx2(
        q: &[f32],
        k: &[f32],
        v: &[f32],
        hd: usize,
        scale: f32,
        scores: &mut [f32],
        out: &mut [f32],
    ) {
        let len = scores.len();
        debug_assert!(q.len() == hd && out.len() == hd);
        debug_assert!(k.len() >= len * hd && v.len() >= len * hd);
        let vec = hd / 8 * 8;
        let hsum = |x: __m256| -> f32 {
            let s = _mm_add_ps(_mm256_castps256_ps128(x), _mm256_extractf128_ps::<1>(x));
            let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
            let s = _mm_add_ss(s, _mm_shuffle_ps::<1>(s, s));
            _mm_cvtss_f32(s)
        };
        let mut max = f32::NEG_INFINITY;
        for (t, s) in scores.iter_mut().enumerate() {
            let kr = &k[t * hd..(t + 1) * hd];
            let mut acc = _mm256_setzero_ps();
            let mut i = 0;
            while i < vec {
                // SAFETY: i + 8 <= vec <= hd = q.len() = kr.len().
                let (a, b) = unsafe {
                    (
                        _mm256_loadu_ps(q.as_ptr().add(i)),
                        _mm256_loadu_ps(kr.as_ptr().add(i)),
                    )
                };
                acc = _mm256_fmadd_ps(a, b, acc);
                i += 8;
            }
            let mut d = hsum(acc);
            for j in vec..hd {
                d += q[j] * kr[j];
            }
            *s = d * scale;
            max = max.max(*s);
        }
        let vmax = _mm256_set1_ps(max);
        let mut vsum = _mm256_setzero_ps();
        let lvec = len / 8 * 8;
        let mut t = 0;
        while t < lvec {
            // SAFETY: t + 8 <= len = scores.len().
            unsafe {
                let p = scores.as_mut_ptr().add(t);
                let e = exp256(_mm256_sub_ps(_mm256_loadu_ps(p), vmax));
                _mm256_storeu_ps(p, e);
                vsum = _mm256_add_ps(vsum, e);
            }
            t += 8;
        }
        let mut sum = hsum(vsum);
        if t < len {
            let mut buf = [0.0f32; 8];
            buf[..len - t].copy_from_slice(&scores[t..]);
            // SAFETY: buf has 8 entries.
            unsafe {
                let e = exp256(_mm256_sub_ps(_mm256_loadu_ps(buf.as_ptr()), vmax));
                _mm256_storeu_ps(buf.as_mut_ptr(), e);
            }
            for (s, &e) in scores[t..].iter_mut().zip(&buf) {
                *s = e;
                sum += e;
            }
        }
        let inv = 1.0 / sum;
        let mut c = 0;
        while c < vec {
            let w = (vec - c).min(64);
            let mut acc = [_mm256_setzero_ps(); 8];
            for (t, &p) in scores.iter().enumerate() {
                let pv = _mm256_set1_ps(p);
                let vr = &v[t * hd + c..t * hd + c + w];
                for (j, a) in acc.iter_mut().enumerate().take(w / 8) {
                    // SAFETY: (j + 1) * 8 <= w = vr.len().
                    *a =
                        _mm256_fmadd_ps(pv, unsafe { _mm256_loadu_ps(vr.as_ptr().add(j * 8)) }, *a);
                }
            }
            let vinv = _mm256_set1_ps(inv);
            for (j, a) in acc.iter().enumerate().take(w / 8) {
                // SAFETY: c + (j + 1) * 8 <= vec <= out.len().
                unsafe {
                    _mm256_storeu_ps(out.as_mut_ptr().add(c + j * 8), _mm256_mul_ps(*a, vinv))
                };
            }
            c += w;
        }
        for j in vec..hd {
            let s: f32 = scores
                .iter()
                .enumerate()
                .map(|(t, &p)| p * v[t * hd + j])
                .sum();
            out[j] = s * inv;
        }
    }
}

#[cfg(test)]
#[path = "attention_tests.rs"]
mod tests;
