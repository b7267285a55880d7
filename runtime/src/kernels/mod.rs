//! Our own CPU kernels for quantized matmuls (GGML `Q4_1`, `Q8_0`, `Q5_0`,
//! `Q5_1`, `Q4_K`, `Q5_K` and `Q6_K` weights, computing the same dot
//! products as candle's `dequantize` up to float rounding).
//!
//! Why this exists: candle 0.11 has no SIMD kernel for Q4_1 and its CPU path
//! spends most of a decode step in a scalar dot product and its thread pool;
//! llama.cpp is ~3x faster on the same file. These kernels close that gap:
//!
//! * [`QuantMatrix`] repacks a weight matrix once at load into groups of 16
//!   interleaved rows, so one 512-bit load feeds 16 rows at a time and per-row
//!   scales are vector loads instead of broadcasts (see `matrix.rs`);
//! * activations are quantized to 8 bits once per call (`acts.rs`), like
//!   llama.cpp's Q8_1, so every inner loop is an integer dot product;
//! * three implementations of the same maths — AVX-512 VNNI (`avx512/`),
//!   AVX2 (`avx2/`) and a portable scalar reference (`scalar.rs`) — chosen
//!   once at runtime ([`active_level`]); `Q5_0`, `Q5_1` and the k-quants
//!   are stored as `Q4_1`'s nibbles plus high-bit planes (`planes.rs`, at
//!   the file's bits per weight except `Q6_K`: 6.625 against 6.5625, see
//!   [`QuantFormat::bits_per_weight`]);
//! * output rows are split over a small persistent pool of spinning worker
//!   threads (`pool.rs`), with the calling thread taking a share.
//!
//! Intended use: a `Linear` wrapper builds [`QuantMatrix::from_qtensor`] at
//! load (falling back to candle's `QMatMul` when it returns `None` or on a
//! GPU) and calls [`matmul`] (or [`QuantMatrix::forward`] for tensors).
//!
//! Measured with `cargo run --release -p surge-runtime --example kernels_bench
//! -- --synthetic --threads 1 --n 1,16 --levels avx512 [--cold]` on the
//! 2-vCPU "AMD EPYC" (so /proc/cpuinfo names it; AVX-512 VNNI, 32 MiB L3)
//! while two other engineers were compiling on it: one thread for ours and
//! for candle 0.11 (`RAYON_NUM_THREADS=1`), best of 2–3 runs, rows 8960 ×
//! cols 1536 (1536 × 8960 within ~15%), µs per call. *Hot*: one matrix
//! called repeatedly (it stays in L3); *cold*: rotating through copies
//! worth 160 MB, so weights stream from DRAM as in decode.
//!
//! | format | ours n=1 hot / cold | ours n=16 hot | candle `QMatMul` n=1 / n=16 hot |
//! |---|---|---|---|
//! | `Q4_K` | 145 / 360 | 1424 | 201 / 1663 |
//! | `Q6_K` | 218 / 438 | 1575 | 579 / 2418 |
//! | `Q5_K` | 206 / 414 | 1491 | 593 / 9534 |
//! | `Q5_0` | 179 / 493 | 1295 | 9884 / 158064 |
//! | `Q5_1` | 209 / – | 1434 | 10579 / 169305 |
//! | `Q4_1` | 140 / 611 | 1342 | 8163 / 130579 |
//! | `Q8_0` | 219 / 807 | 1263 | 286 / 1825 |
//!
//! At n = 16 every format is compute-bound on `vpdpbusd` (`Q4_K`: 220 M
//! multiply-adds in 1.42 ms, 2.4 G `vpdpbusd` a second on one core); at
//! n = 1 hot the k-quants stream 45–55 GB/s from L3 on one core, so decode
//! is bound by DRAM. A whole Qwen2.5-Coder-0.5B Q4_K_M token (every layer's
//! 7 matrices and the head, `SURGE_TEST_GGUF=… kernels_bench --no-matrices
//! --threads 1`): 16.6 ms at n = 1 and 68.6 ms at n = 16, against 35.5 and
//! 128 ms for candle's best (`Q8_0` requantized, k padded to 256). The AVX2 level (for CPUs without AVX-512) trails candle's
//! llama.cpp-derived AVX2 k-quant and `Q8_0` kernels at n = 16 (`Q4_K` 2458
//! vs 1663 µs, `Q6_K` 3664 vs 2418) and on `Q4_K` at n = 1 (265 vs 201); it
//! wins on `Q5_K`/`Q6_K` at n = 1 (1.4–1.6×) and where candle has no SIMD.
//!
//! Environment (read once, on first use):
//! * `SURGE_KERNEL=scalar|avx2|avx512` forces a level (clamped to what the CPU
//!   supports) for tests and benchmarks;
//! * `SURGE_KERNEL_THREADS=N` sizes the global pool (default: available cores);
//! * `SURGE_KERNEL_SPIN_US=N` how long idle workers spin before parking
//!   (default 50 µs).

mod acts;
pub mod attention;
#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
mod avx512;
pub mod causal;
#[cfg(target_arch = "x86_64")]
mod causal_x86;
mod f16;
pub mod full_attention;
mod matrix;
mod planes;
mod pool;
mod scalar;
pub mod softmax;
mod split;
mod tensor;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_planes;
#[cfg(test)]
mod tests_real;

use std::cell::RefCell;
use std::sync::OnceLock;

pub use matrix::{QuantFormat, QuantMatrix, ROWS_PER_GROUP};
pub use pool::{global_pool, set_threads, threads, Pool};

use acts::Q8Acts;
use matrix::BLOCK;
use split::Split;

/// Errors from building a [`QuantMatrix`] or calling [`matmul`] with
/// inconsistent shapes. Kernels themselves cannot fail.
#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    #[error("kernels: {what}: expected {expected}, got {got}")]
    Shape {
        what: &'static str,
        expected: usize,
        got: usize,
    },
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

impl From<KernelError> for candle_core::Error {
    fn from(e: KernelError) -> Self {
        match e {
            KernelError::Candle(e) => e,
            other => candle_core::Error::wrap(other),
        }
    }
}

pub type Result<T, E = KernelError> = std::result::Result<T, E>;

/// A SIMD level. All levels compute the same integer dot products; they
/// differ only in float summation order (results agree to ~1e-6 relative).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    /// Portable reference, also the only level on non-x86 targets.
    Scalar,
    /// AVX2 + FMA + F16C (`maddubs`/`madd` integer dots, 8 rows per register).
    Avx2,
    /// AVX-512 F/BW + VNNI (`vpdpbusd`, 16 rows per register).
    Avx512,
}

impl Level {
    pub const ALL: [Level; 3] = [Level::Scalar, Level::Avx2, Level::Avx512];

    pub fn name(self) -> &'static str {
        match self {
            Level::Scalar => "scalar",
            Level::Avx2 => "avx2",
            Level::Avx512 => "avx512",
        }
    }

    pub fn parse(s: &str) -> Option<Level> {
        match s.trim().to_ascii_lowercase().as_str() {
            "scalar" => Some(Level::Scalar),
            "avx2" => Some(Level::Avx2),
            "avx512" | "avx512vnni" => Some(Level::Avx512),
            _ => None,
        }
    }

    /// Whether this CPU can run the level (cheap: std caches the cpuid bits).
    pub fn is_supported(self) -> bool {
        match self {
            Level::Scalar => true,
            #[cfg(target_arch = "x86_64")]
            Level::Avx2 => {
                is_x86_feature_detected!("avx2")
                    && is_x86_feature_detected!("fma")
                    && is_x86_feature_detected!("f16c")
            }
            #[cfg(target_arch = "x86_64")]
            Level::Avx512 => {
                is_x86_feature_detected!("avx512f")
                    && is_x86_feature_detected!("avx512bw")
                    && is_x86_feature_detected!("avx512vnni")
            }
            #[cfg(not(target_arch = "x86_64"))]
            _ => false,
        }
    }

    /// The best level this CPU supports.
    pub fn best_supported() -> Level {
        Level::ALL
            .into_iter()
            .rev()
            .find(|l| l.is_supported())
            .unwrap_or(Level::Scalar)
    }

    /// `self` if supported, else the best supported level below it. Running an
    /// unsupported level would execute illegal instructions, so every entry
    /// point clamps.
    pub fn clamp_supported(self) -> Level {
        Level::ALL
            .into_iter()
            .rev()
            .find(|l| *l <= self && l.is_supported())
            .unwrap_or(Level::Scalar)
    }
}

/// The level [`matmul`] uses: `SURGE_KERNEL` if set and valid (clamped to the
/// CPU), else the best supported. Decided once per process.
pub fn active_level() -> Level {
    static LEVEL: OnceLock<Level> = OnceLock::new();
    *LEVEL.get_or_init(|| {
        let best = Level::best_supported();
        std::env::var("SURGE_KERNEL")
            .ok()
            .and_then(|s| Level::parse(&s))
            .map_or(best, Level::clamp_supported)
    })
}

/// `out[i * rows + r] = dot(w.row(r), x[i * k .. (i + 1) * k])`, i.e.
/// `out = x · wᵀ` with `x` `n × k` and `out` `n × rows`, both row-major —
/// the same contract as candle's `QMatMul::forward` on a `[n, k]` input.
///
/// Uses [`active_level`] and the [`global_pool`]. Errors only on shape
/// mismatch; `n == 0` is a no-op.
pub fn matmul(w: &QuantMatrix, x: &[f32], n: usize, out: &mut [f32]) -> Result<()> {
    matmul_with(active_level(), global_pool(), w, x, n, out)
}

thread_local! {
    /// Quantized activations, reused across calls so the decode path does not
    /// allocate (the engine calls from one thread, so this is one buffer).
    static ACTS: RefCell<Q8Acts> = RefCell::new(Q8Acts::default());
}

/// [`matmul`] with an explicit level (clamped to the CPU) and pool, for tests
/// and benchmarks.
pub fn matmul_with(
    level: Level,
    pool: &Pool,
    w: &QuantMatrix,
    x: &[f32],
    n: usize,
    out: &mut [f32],
) -> Result<()> {
    let (rows, k) = (w.rows(), w.cols());
    // Saturating: an overflowing product can never equal a slice length.
    check("x.len() = n * cols", n.saturating_mul(k), x.len())?;
    check("out.len() = n * rows", n.saturating_mul(rows), out.len())?;
    if n == 0 || rows == 0 {
        return Ok(());
    }
    let level = level.clamp_supported();
    ACTS.with(|cell| match cell.try_borrow_mut() {
        Ok(mut acts) => run(level, pool, w, &mut acts, x, n, out),
        // Only reachable if a kernel re-entered matmul; stay correct anyway.
        Err(_) => run(level, pool, w, &mut Q8Acts::default(), x, n, out),
    });
    Ok(())
}

fn check(what: &'static str, expected: usize, got: usize) -> Result<()> {
    if expected == got {
        Ok(())
    } else {
        Err(KernelError::Shape {
            what,
            expected,
            got,
        })
    }
}

/// Below this many weight bytes × columns a call runs on the caller alone:
/// waking a worker costs ~1 µs, more than such a call takes.
const MIN_PARALLEL_WORK: usize = 24 * 1024;

/// Upper bound on one chunk's weight bytes × columns (~10 µs of work).
const MAX_CHUNK_WORK: usize = 256 * 1024;

fn run(
    level: Level,
    pool: &Pool,
    w: &QuantMatrix,
    acts: &mut Q8Acts,
    x: &[f32],
    n: usize,
    out: &mut [f32],
) {
    let span = w.format().block_values() / BLOCK;
    acts.quantize(level, x, n, w.cols(), span);
    let acts = &*acts;
    let out = OutPtr {
        ptr: out.as_mut_ptr(),
        len: out.len(),
    };
    let groups = w.groups();
    let threads = pool.threads();
    if threads == 1 || w.size_in_bytes().saturating_mul(n) < MIN_PARALLEL_WORK {
        run_groups(level, w, acts, 0..groups, out);
        return;
    }
    // Chunks are bounded by MAX_CHUNK_WORK (a few µs), which bounds the wait
    // for a worker preempted mid-chunk; see `split.rs` for the assignment.
    let group_work = (w.size_in_bytes() / groups.max(1)).saturating_mul(n);
    let split = Split::new(groups, threads, MAX_CHUNK_WORK / group_work.max(1));
    pool.run(&|| split.run(|range| run_groups(level, w, acts, range, out)));
}

/// The output buffer shared by the tasks of one call.
///
/// SAFETY contract: `ptr..ptr+len` is the caller's `&mut [f32]`, alive for the
/// whole call (the pool returns only after every task finished), and each
/// row group is computed by exactly one task, which writes only the output
/// entries of its own rows, so writes never overlap.
#[derive(Clone, Copy)]
pub(crate) struct OutPtr {
    pub ptr: *mut f32,
    pub len: usize,
}

impl OutPtr {
    /// `buffer[lo..hi]`. (A method, so closures capture the whole `OutPtr`, which is
    /// Sync, rather than its raw-pointer field, which is not.)
    ///
    /// # Safety
    /// `lo <= hi <= len`, and no other live slice may overlap the range.
    #[allow(clippy::mut_from_ref)]
    pub(crate) unsafe fn range_mut(&self, lo: usize, hi: usize) -> &mut [f32] {
        debug_assert!(lo <= hi && hi <= self.len);
        std::slice::from_raw_parts_mut(self.ptr.add(lo), hi - lo)
    }
}

// SAFETY: see the type's contract; tasks write disjoint entries.
unsafe impl Send for OutPtr {}
// SAFETY: as above.
unsafe impl Sync for OutPtr {}

/// Computes all `n` columns for the row groups in `groups` at `level`.
fn run_groups(
    level: Level,
    w: &QuantMatrix,
    acts: &Q8Acts,
    groups: std::ops::Range<usize>,
    out: OutPtr,
) {
    debug_assert!(out.len == acts.n * w.rows());
    debug_assert!(groups.end <= w.groups());
    match level {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `level` was clamped to a supported level by the caller, so
        // the CPU has AVX-512 F/BW/VNNI; shapes were checked in `matmul_with`.
        Level::Avx512 => unsafe { avx512::run_groups(w, acts, groups, out) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as above, the CPU has AVX2/FMA/F16C.
        Level::Avx2 => unsafe { avx2::run_groups(w, acts, groups, out) },
        _ => scalar::run_groups(w, acts, groups, out),
    }
}

/// How far ahead of the block being read a kernel prefetches its weights.
#[cfg(target_arch = "x86_64")]
const PREFETCH_BYTES: usize = 2048;

/// On a kernel's full pass (`full`: as many activation rows as it takes at
/// once), prefetches the `len` bytes `PREFETCH_BYTES` past `p` into L1.
///
/// Why: on a full pass a block takes long enough that the hardware
/// prefetcher falls behind (AVX-512, cold 8960×1536 `Q4_K` at n = 8: 1.39×
/// the time of a cached matrix, 1.03× with this), and at n = 16 each group is
/// read in passes whose jump back defeats it. At n = 1 the hardware does
/// better alone (software prefetches cost 35% there). Groups are
/// contiguous, so the prefetch runs on into the next group.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn prefetch_ahead(full: bool, p: *const u8, len: usize) {
    use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
    if !full {
        return;
    }
    let p = p.wrapping_add(PREFETCH_BYTES);
    for line in (0..len).step_by(64) {
        // SAFETY: prefetches never fault, whatever the address.
        unsafe { _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(line).cast()) };
    }
}
