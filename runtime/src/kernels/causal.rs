//! Fused causal attention for LLM steps: prompt chunks and decode tokens through one
//! kernel, flash-attention style.
//!
//! Every query row (one query position, one head) walks its visible keys in blocks
//! of [`BLOCK`] positions aligned to absolute cache positions (block `b` holds keys
//! `16b..16b + 16`), keeping a running max, a running sum and a running weighted sum of
//! values (online softmax), so no score matrix is ever materialised: the block's keys
//! and values stay in L1 while the rows of a tile use them. Tasks are (sequence, kv
//! head, tile of up to [`TILE_QUERIES`] queries) shared out over the [`Pool`]; a tile's
//! rows are its queries × the query heads of that kv head (grouped-query attention
//! reads each key once for the whole group).
//!
//! Why this exact structure: a row's arithmetic depends only on its own position and
//! window — the blocks it visits, the order inside them, where its partial blocks are
//! — never on which other rows share its tile, its chunk or its step. So a prompt
//! prefilled in one chunk, in chunks of any size, or token by token through decode
//! gives bit-identical attention outputs; with the row-wise matmul kernels this makes
//! a whole step chunk-invariant, which is what lets the prefix cache reuse a cache
//! filled by other chunk shapes without changing a single token. (Candle's generic
//! path summed a chunk's scores in chunk-dependent order; the differences, amplified
//! by 8-bit activation rounding, changed greedy tokens.)
//!
//! Rows inactive in a block (the block is outside their window or past their
//! position) leave their state untouched; lanes outside a row's range are masked to
//! a weight of exactly zero, so the values the tile reads for other rows add `0·v`.
//!
//! Keys are stored dimension-major inside each block ([`store_key`]), so a row's 16
//! scores are chains of broadcast FMAs with no horizontal sums. Levels: AVX-512F (four
//! rows scored and soft-maxed side by side, vectorised `exp`, value tiles of up to 4
//! rows × 64 columns in registers), AVX2+FMA, and a scalar reference with `f32::exp`.
//! They agree to float rounding, not bitwise; one process uses one level.

use std::cell::RefCell;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::attention::AttnShape;
use super::{check, global_pool, Level, OutPtr, Pool, Result};

/// Keys per block; cache capacities are a multiple of it so a block never leaves
/// its kv head's storage.
pub const BLOCK: usize = 16;

/// Queries per task: enough rows to reuse each block many times, few enough that a
/// 128-token chunk still splits into tasks for every thread.
const TILE_QUERIES: usize = 16;

/// Rows scored together against a block (independent FMA chains to hide latency).
pub(crate) const SCORE_ROWS: usize = 4;

/// Below this many multiply-adds a call runs on the caller alone (waking a worker
/// costs about a microsecond).
const MIN_PARALLEL_WORK: usize = 32 * 1024;

/// One sequence's new queries and its layer cache.
#[derive(Clone, Copy)]
pub struct CausalSeq<'a> {
    /// Keys, head-major (`capacity * head_dim` per kv head) from position 0, each head
    /// in blocks of [`BLOCK`] positions stored dimension-major (see [`store_key`]); the
    /// new tokens' keys already written at `past..past + n`.
    pub k: &'a [f32],
    /// Values, head-major `[n_kv_head, capacity, head_dim]`.
    pub v: &'a [f32],
    /// Elements between kv heads: `capacity * head_dim`, capacity a multiple of [`BLOCK`].
    pub head_stride: usize,
    /// Position of the first new query.
    pub past: usize,
    /// New queries (at least 1).
    pub n: usize,
    /// Index of this sequence's first query in `q` / `out` (`[rows, n_head, head_dim]`).
    pub row: usize,
}

/// `out[row + i, h] = softmax(q[row + i, h]·K_gᵀ / sqrt(hd) + mask)·V_g` for each
/// sequence's queries `i` (at position `past + i`, seeing keys `j` with `j <= p` and
/// `p - j < window`) and head `h` (kv head `g = h / (n_head / n_kv_head)`).
/// Uses [`super::active_level`] and the [`global_pool`].
pub fn causal_attention(
    shape: AttnShape,
    window: usize,
    q: &[f32],
    seqs: &[CausalSeq<'_>],
    out: &mut [f32],
) -> Result<()> {
    causal_attention_with(
        super::active_level(),
        global_pool(),
        shape,
        window,
        q,
        seqs,
        out,
    )
}

/// One task: queries `q0..q1` of sequence `seq`, kv head `g`.
#[derive(Clone, Copy)]
struct Task {
    seq: usize,
    g: usize,
    q0: usize,
    q1: usize,
}

/// [`causal_attention`] with an explicit level (clamped to the CPU) and pool.
pub fn causal_attention_with(
    level: Level,
    pool: &Pool,
    shape: AttnShape,
    window: usize,
    q: &[f32],
    seqs: &[CausalSeq<'_>],
    out: &mut [f32],
) -> Result<()> {
    let AttnShape {
        n_head,
        n_kv_head,
        head_dim: hd,
    } = shape;
    let row = n_head.saturating_mul(hd);
    check("out.len() = q.len()", q.len(), out.len())?;
    ensure(
        "n_head a multiple of n_kv_head",
        n_kv_head > 0 && n_head % n_kv_head == 0,
    )?;
    ensure("window >= 1", window >= 1)?;
    let rows = q.len() / row.max(1);
    check("q.len() = rows * n_head * head_dim", rows * row, q.len())?;
    for s in seqs {
        let total = s.past + s.n;
        ensure("n >= 1", s.n >= 1)?;
        ensure("row + n <= rows", s.row + s.n <= rows)?;
        ensure(
            "head_stride a multiple of BLOCK * head_dim covering past + n",
            s.head_stride % (BLOCK * hd).max(1) == 0 && s.head_stride >= total * hd,
        )?;
        let need = n_kv_head * s.head_stride;
        ensure("k.len() covers every kv head", s.k.len() >= need)?;
        ensure("v.len() covers every kv head", s.v.len() >= need)?;
    }
    if seqs.is_empty() || n_head == 0 || hd == 0 {
        return Ok(());
    }
    let level = level.clamp_supported();
    let level = match level {
        Level::Avx512 if hd % 16 == 0 => Level::Avx512,
        Level::Avx512 | Level::Avx2 if hd % 8 == 0 => Level::Avx2,
        _ => Level::Scalar,
    };
    let mut tasks = Vec::new();
    let mut work = 0usize;
    for (si, s) in seqs.iter().enumerate() {
        for q0 in (0..s.n).step_by(TILE_QUERIES) {
            let q1 = (q0 + TILE_QUERIES).min(s.n);
            for g in 0..n_kv_head {
                tasks.push(Task { seq: si, g, q0, q1 });
            }
            work += (q1 - q0) * (s.past + q1).min(window) * n_head * hd * 2;
        }
    }
    let job = Job {
        level,
        shape,
        window,
        q,
        seqs,
        out: OutPtr {
            ptr: out.as_mut_ptr(),
            len: out.len(),
        },
    };
    let next = AtomicUsize::new(0);
    let drain = || {
        SCRATCH.with(|c| {
            let mut fresh = Scratch::default();
            let mut b = c.try_borrow_mut();
            let scratch = b.as_deref_mut().unwrap_or(&mut fresh);
            loop {
                let t = next.fetch_add(1, Ordering::Relaxed);
                let Some(&task) = tasks.get(t) else { break };
                job.run(task, scratch);
            }
        })
    };
    if pool.threads() == 1 || work < MIN_PARALLEL_WORK {
        drain();
    } else {
        pool.run(&drain);
    }
    Ok(())
}

/// A failed shape condition as a [`super::KernelError::Shape`] (1 expected, 0 got).
fn ensure(what: &'static str, ok: bool) -> Result<()> {
    check(what, 1, usize::from(ok))
}

/// Per-thread state of the rows of one task, reused across calls.
#[derive(Default)]
struct Scratch {
    /// Running weighted sums of values, `[rows, head_dim]`.
    acc: Vec<f32>,
    /// Running max of each row, and its running sum kept per lane (`[rows, BLOCK]`,
    /// summed across lanes once at the end instead of once per block).
    m: Vec<f32>,
    l: Vec<f32>,
    /// This block's weights, `[rows, BLOCK]`, and each row's rescale factor.
    p: Vec<f32>,
    alpha: Vec<f32>,
    /// The rows that see some key of the current block, with their lane range.
    active: Vec<(usize, usize, usize)>,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

/// The first position a query at `p` sees through a window of `window` positions.
fn window_start(p: usize, window: usize) -> usize {
    (p + 1).saturating_sub(window)
}

/// Everything a task needs besides its coordinates.
struct Job<'a> {
    level: Level,
    shape: AttnShape,
    window: usize,
    q: &'a [f32],
    seqs: &'a [CausalSeq<'a>],
    out: OutPtr,
}

impl Job<'_> {
    fn run(&self, t: Task, s: &mut Scratch) {
        let AttnShape {
            n_head,
            n_kv_head,
            head_dim: hd,
        } = self.shape;
        let group = n_head / n_kv_head;
        let seq = &self.seqs[t.seq];
        let rows = (t.q1 - t.q0) * group;
        // Row r: query q0 + r / group, head g * group + r % group.
        let pos = |r: usize| seq.past + t.q0 + r / group;
        let q_at =
            |r: usize| ((seq.row + t.q0 + r / group) * n_head + t.g * group + r % group) * hd;
        s.acc.clear();
        s.acc.resize(rows * hd, 0.0);
        s.m.clear();
        s.m.resize(rows, f32::NEG_INFINITY);
        s.l.clear();
        s.l.resize(rows * BLOCK, 0.0);
        s.p.resize(rows * BLOCK, 0.0);
        s.alpha.resize(rows, 1.0);
        let base = t.g * seq.head_stride;
        let (k, v) = (&seq.k[base..], &seq.v[base..]);
        let scale = 1.0 / (hd as f32).sqrt();
        let first = window_start(pos(0), self.window) / BLOCK;
        let last = pos(rows - 1) / BLOCK;
        for b in first..=last {
            let key0 = b * BLOCK;
            let (mut lo, mut hi) = (usize::MAX, 0);
            s.active.clear();
            for r in 0..rows {
                let p = pos(r);
                let (j0, j1) = (
                    window_start(p, self.window).max(key0),
                    (p + 1).min(key0 + BLOCK),
                );
                if j0 >= j1 {
                    s.p[r * BLOCK..(r + 1) * BLOCK].fill(0.0);
                    s.alpha[r] = 1.0;
                } else {
                    lo = lo.min(j0);
                    hi = hi.max(j1);
                    s.active.push((r, j0 - key0, j1 - key0));
                }
            }
            let keys = &k[key0 * hd..(key0 + BLOCK) * hd];
            let mut rows_state = Rows {
                m: &mut s.m,
                l: &mut s.l,
                alpha: &mut s.alpha,
                p: &mut s.p,
            };
            for group in s.active.chunks(SCORE_ROWS) {
                let mut qs = [&self.q[..0]; SCORE_ROWS];
                for (q, &(r, ..)) in qs.iter_mut().zip(group) {
                    *q = &self.q[q_at(r)..q_at(r) + hd];
                }
                block_rows(
                    self.level,
                    &qs[..group.len()],
                    group,
                    keys,
                    scale,
                    &mut rows_state,
                );
            }
            if lo < hi {
                let values = &v[lo * hd..hi * hd];
                pv(
                    self.level,
                    &s.p,
                    lo - key0,
                    &s.alpha,
                    values,
                    &mut s.acc,
                    hd,
                );
            }
        }
        for r in 0..rows {
            let inv = 1.0 / s.l[r * BLOCK..(r + 1) * BLOCK].iter().sum::<f32>();
            // SAFETY: each (query, head) row belongs to exactly one task, and `out`
            // outlives the call (see `OutPtr`).
            let o = unsafe { self.out.range_mut(q_at(r), q_at(r) + hd) };
            for (o, a) in o.iter_mut().zip(&s.acc[r * hd..(r + 1) * hd]) {
                *o = a * inv;
            }
        }
    }
}

/// The online-softmax state of a task's rows, indexed by row.
pub(crate) struct Rows<'a> {
    /// Running max of each row.
    pub m: &'a mut [f32],
    /// Per-lane running sums, `[rows, BLOCK]`.
    pub l: &'a mut [f32],
    /// The factor each row's running value sum must be scaled by for this block.
    pub alpha: &'a mut [f32],
    /// This block's weights, `[rows, BLOCK]`.
    pub p: &'a mut [f32],
}

impl Rows<'_> {
    /// Folds a block whose largest score is `block_max` into row `r`'s running max and
    /// returns the new max; sets its `alpha` (exactly 1 when the max did not move).
    pub(crate) fn raise_max(&mut self, r: usize, block_max: f32) -> f32 {
        let old = self.m[r];
        let m = old.max(block_max);
        self.alpha[r] = if m == old {
            1.0
        } else if old == f32::NEG_INFINITY {
            0.0
        } else {
            (old - m).exp()
        };
        self.m[r] = m;
        m
    }

    /// Row `r`'s weights (`BLOCK`).
    pub(crate) fn weights(&mut self, r: usize) -> &mut [f32] {
        &mut self.p[r * BLOCK..(r + 1) * BLOCK]
    }

    /// Adds row `r`'s weights to its per-lane sums (the scalar and AVX2 way; AVX-512
    /// fuses the multiply-add).
    fn add_weights(&mut self, r: usize) {
        let alpha = self.alpha[r];
        let (l, p) = (
            &mut self.l[r * BLOCK..(r + 1) * BLOCK],
            &self.p[r * BLOCK..(r + 1) * BLOCK],
        );
        for (l, w) in l.iter_mut().zip(p) {
            *l = *l * alpha + w;
        }
    }
}

/// Scores the rows of `group` (`(row, first lane, end lane)`, queries `qs`) against one
/// block and folds the block into their state: weights relative to the new running max
/// in `rows.p` (exactly 0 outside each row's lanes), max, sums and rescale factor.
fn block_rows(
    level: Level,
    qs: &[&[f32]],
    group: &[(usize, usize, usize)],
    keys: &[f32],
    scale: f32,
    rows: &mut Rows<'_>,
) {
    #[cfg(target_arch = "x86_64")]
    if level == Level::Avx512 {
        // SAFETY: the level was clamped to the CPU and hd % 16 == 0 checked.
        return unsafe { super::causal_x86::block_rows_avx512(qs, group, keys, scale, rows) };
    }
    let mut scores = [[0f32; BLOCK]; SCORE_ROWS];
    block_scores(level, qs, keys, scale, &mut scores);
    for (sc, &(r, j0, j1)) in scores.iter().zip(group) {
        let valid = j0..j1;
        let m = rows.raise_max(
            r,
            sc[valid.clone()]
                .iter()
                .fold(f32::NEG_INFINITY, |a, &b| a.max(b)),
        );
        match level {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: the level was clamped to the CPU.
            Level::Avx2 => unsafe { super::causal_x86::exp_weights_avx2(sc, m, rows.weights(r)) },
            _ => exp_weights(sc, m, rows.weights(r)),
        }
        for (j, w) in rows.weights(r).iter_mut().enumerate() {
            if !valid.contains(&j) {
                *w = 0.0;
            }
        }
        rows.add_weights(r);
    }
}

/// `weights[j] = exp(scores[j] - m)`.
fn exp_weights(scores: &[f32; BLOCK], m: f32, weights: &mut [f32]) {
    for (w, s) in weights.iter_mut().zip(scores) {
        *w = (s - m).exp();
    }
}

/// Scaled scores of up to [`SCORE_ROWS`] rows against the 16 keys of a block (`keys`
/// is the block in its dimension-major layout, `hd × BLOCK`), below AVX-512. Each row's
/// scores are computed the same way whichever rows share the call.
fn block_scores(
    level: Level,
    qs: &[&[f32]],
    keys: &[f32],
    scale: f32,
    out: &mut [[f32; BLOCK]; SCORE_ROWS],
) {
    debug_assert!(qs.iter().all(|q| keys.len() == BLOCK * q.len()));
    match level {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the level was clamped to the CPU (AVX2+FMA) and hd % 8 == 0 checked.
        Level::Avx2 => unsafe { super::causal_x86::scores_avx2(qs, keys, scale, out) },
        _ => {
            for (q, o) in qs.iter().zip(out.iter_mut()) {
                for (j, o) in o.iter_mut().enumerate() {
                    let dot: f32 = q
                        .iter()
                        .enumerate()
                        .map(|(c, x)| x * keys[c * BLOCK + j])
                        .sum();
                    *o = dot * scale;
                }
            }
        }
    }
}

/// Writes key `key` (`hd` values) of position `pos` into one kv head's keys in the
/// kernel's layout: block `pos / BLOCK` is `hd × BLOCK` (dimension-major), so a block's
/// 16 keys are one vector per dimension and a score is a chain of broadcast FMAs, with
/// no horizontal sums.
pub fn store_key(head: &mut [f32], pos: usize, key: &[f32]) {
    let hd = key.len();
    let block = &mut head[(pos / BLOCK) * BLOCK * hd..][..BLOCK * hd];
    for (c, &x) in key.iter().enumerate() {
        block[c * BLOCK + pos % BLOCK] = x;
    }
}

/// `acc[r] = acc[r] * alpha[r] + Σ_j p[r][lane0 + j] · values[j]` for every row.
fn pv(
    level: Level,
    p: &[f32],
    lane0: usize,
    alpha: &[f32],
    values: &[f32],
    acc: &mut [f32],
    hd: usize,
) {
    match level {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the level was clamped to the CPU and hd % 16 == 0 checked.
        Level::Avx512 => unsafe { super::causal_x86::pv_avx512(p, lane0, alpha, values, acc, hd) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as above, with AVX2+FMA and hd % 8 == 0.
        Level::Avx2 => unsafe { super::causal_x86::pv_avx2(p, lane0, alpha, values, acc, hd) },
        _ => pv_scalar(p, lane0, alpha, values, acc, hd),
    }
}

fn pv_scalar(p: &[f32], lane0: usize, alpha: &[f32], values: &[f32], acc: &mut [f32], hd: usize) {
    for (r, a) in acc.chunks_exact_mut(hd).enumerate() {
        a.iter_mut().for_each(|x| *x *= alpha[r]);
        for (j, vr) in values.chunks_exact(hd).enumerate() {
            let w = p[r * BLOCK + lane0 + j];
            for (x, &y) in a.iter_mut().zip(vr) {
                *x += w * y;
            }
        }
    }
}

#[cfg(test)]
#[path = "causal_tests.rs"]
mod tests;
