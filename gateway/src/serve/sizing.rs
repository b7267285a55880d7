//! How big a CPU worker is: the cores a pool without `worker_cores` gets (weighted by
//! its model's size), the memory a worker is charged before it runs (an estimate from
//! its weights) and once it runs (its resident set, read from `/proc`), and the
//! machine's memory (`cpu_memory_budget`).

use super::config::PoolConfig;
use super::registry::ModelEntry;

/// A CPU worker's memory as a multiple of its weights' size, before it is measured.
/// Measured (docs/cold-start.md, docs/benchmarks.md): smollm2-135m (94 MiB of Q4_1)
/// is 158 MiB resident at ready and 249 MiB at its peak with 16 streams; whisper-tiny.en
/// (75 MiB) peaks at 196–262 MiB. Weights are mapped and repacked (up to two copies
/// while loading), then activations and the KV caches of running sequences grow on top.
pub const CPU_MEMORY_FACTOR: f64 = 1.5;

/// What every worker process holds besides its model: the runtime, thread stacks and
/// pools, the tokenizer, the first KV cache blocks.
pub const PROCESS_OVERHEAD: u64 = 128 << 20;

/// Share of `MemTotal` that CPU workers may be charged when `cpu_memory_budget` is not
/// set: the rest is for the gateway, the page cache of the weight files, and the OS.
pub const DEFAULT_MEMORY_SHARE: f64 = 0.9;

/// The memory one CPU worker of `e` is charged before it has started: its weights ×
/// [`CPU_MEMORY_FACTOR`] + [`PROCESS_OVERHEAD`]. The worker's measured resident set
/// replaces this once it is ready.
pub fn estimate_worker_memory(e: &ModelEntry) -> u64 {
    (e.size as f64 * CPU_MEMORY_FACTOR) as u64 + PROCESS_OVERHEAD
}

/// How strongly a model pulls on the cores: the square root of its size. A model 10×
/// larger gets about 3× the cores: its decode is ~10× the work per token and keeps
/// many threads busy, while a 100 MB model's per-token work is too small to split
/// well (thread hand-offs and memory bandwidth bound it first); linear weights would
/// starve the small models down to a thread each on any machine.
fn weight(size: u64) -> f64 {
    (size.max(1) as f64).sqrt()
}

/// Cores per worker of each CPU pool, in the order given (`(pool, model size in
/// bytes)`). A pool with `worker_cores` keeps it; one with `--threads N` in its
/// `worker_args` (and no `worker_cores`) is charged N. The others share what those
/// leave of `cpu_budget` at their `max_workers`, weighted by [`weight`] of their model
/// size, in whole cores, at least 1, such that Σ cores × `max_workers` over them stays
/// within that remainder: every pool can reach `max_workers` at once without
/// oversubscribing. Only when the remainder has fewer cores than those pools have
/// `max_workers` in all can that not hold: each then gets 1 (and the budget evicts).
/// One model alone with one worker gets every core.
pub fn cpu_shares(cpu_budget: f64, pools: &[(&PoolConfig, u64)]) -> Vec<f64> {
    let fixed = |p: &PoolConfig| {
        p.worker_cores
            .or_else(|| p.worker_args.options().threads.map(|t| t as f64))
    };
    let reserved: f64 = pools
        .iter()
        .filter_map(|(p, _)| fixed(p).map(|c| c * p.max_workers as f64))
        .sum();
    let free: Vec<usize> = (0..pools.len())
        .filter(|&i| fixed(pools[i].0).is_none())
        .collect();
    let slots = |i: usize| pools[i].0.max_workers as f64;
    let room = (cpu_budget - reserved).max(0.0).floor();
    let mut cores: Vec<f64> = pools.iter().map(|(p, _)| fixed(p).unwrap_or(1.0)).collect();
    if free.iter().map(|&i| slots(i)).sum::<f64>() >= room {
        return cores;
    }
    // Ideal real shares (Σ share × slots = room), water-filled: a pool whose share
    // falls below one core is pinned at one and the rest is shared again.
    let mut ideal = vec![1.0; pools.len()];
    let mut open = free.clone();
    let mut left = room;
    loop {
        let total: f64 = open.iter().map(|&i| weight(pools[i].1) * slots(i)).sum();
        let (low, high): (Vec<usize>, Vec<usize>) = open
            .iter()
            .partition(|&&i| left * weight(pools[i].1) / total < 1.0);
        if low.is_empty() {
            for &i in &open {
                ideal[i] = left * weight(pools[i].1) / total;
            }
            break;
        }
        left -= low.iter().map(|&i| slots(i)).sum::<f64>();
        open = high;
        if open.is_empty() {
            break;
        }
    }
    for &i in &free {
        cores[i] = ideal[i].floor().max(1.0);
    }
    // Whole cores left over go one at a time to the pool furthest below its ideal
    // share that still fits them at its max_workers.
    let mut used: f64 = free.iter().map(|&i| cores[i] * slots(i)).sum();
    loop {
        let next = free
            .iter()
            .copied()
            .filter(|&i| used + slots(i) <= room)
            .max_by(|&a, &b| {
                let gap = |i: usize| ideal[i] - cores[i];
                gap(a).total_cmp(&gap(b)).then(b.cmp(&a))
            });
        match next {
            Some(i) if ideal[i] - cores[i] > 0.0 => {
                cores[i] += 1.0;
                used += slots(i);
            }
            _ => break,
        }
    }
    cores
}

/// `VmRSS` of `/proc/PID/status`, in bytes.
pub fn parse_vm_rss(status: &str) -> Option<u64> {
    kib_field(status, "VmRSS:")
}

/// The resident memory of process `pid` (`None` off Linux or once it has exited).
pub fn resident_memory(pid: u32) -> Option<u64> {
    parse_vm_rss(&std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?)
}

/// `MemTotal` of `/proc/meminfo`, in bytes (`None` off Linux).
pub fn mem_total() -> Option<u64> {
    kib_field(&std::fs::read_to_string("/proc/meminfo").ok()?, "MemTotal:")
}

/// A `NAME:   1234 kB` line of a `/proc` file, in bytes.
fn kib_field(text: &str, name: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with(name))?;
    let kib: u64 = line[name.len()..].split_whitespace().next()?.parse().ok()?;
    Some(kib << 10)
}

/// `cpu_memory_budget`'s default: [`DEFAULT_MEMORY_SHARE`] of `MemTotal`; unlimited
/// where the machine does not say.
pub fn default_memory_budget() -> f64 {
    mem_total().map_or(f64::INFINITY, |t| (t as f64 * DEFAULT_MEMORY_SHARE).floor())
}

/// A size for `key`: bytes as a TOML integer, or a string — a number with a unit
/// (`B`, `KB`/`MB`/`GB`/`TB` in powers of 1000, `KiB`/`MiB`/`GiB`/`TiB` or `K`/`M`/
/// `G`/`T` in powers of 1024) or a share of the machine's memory (`"80%"`, of
/// `mem_total`).
pub fn parse_size(key: &str, v: &toml::Value, mem_total: Option<u64>) -> Result<f64, String> {
    let bad = |why: &str| format!("{key} = {v}: {why}");
    let bytes = match v {
        toml::Value::Integer(n) => *n as f64,
        toml::Value::Float(f) => *f,
        toml::Value::String(s) => {
            let s = s.trim();
            if let Some(pct) = s.strip_suffix('%') {
                let pct: f64 = pct.trim().parse().map_err(|_| bad("not a percentage"))?;
                if !(0.0..=100.0).contains(&pct) {
                    return Err(bad("a percentage must be between 0 and 100"));
                }
                let total = mem_total
                    .ok_or_else(|| bad("a percentage needs /proc/meminfo (give bytes instead)"))?;
                (total as f64 * pct / 100.0).floor()
            } else {
                let split = s
                    .find(|c: char| !(c.is_ascii_digit() || c == '.'))
                    .unwrap_or(s.len());
                let (num, unit) = s.split_at(split);
                let num: f64 = num
                    .parse()
                    .map_err(|_| bad("expected a number of bytes, e.g. \"16GiB\""))?;
                let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
                    "" | "b" => 1,
                    "kb" => 1_000,
                    "mb" => 1_000_000,
                    "gb" => 1_000_000_000,
                    "tb" => 1_000_000_000_000,
                    "k" | "kib" => 1 << 10,
                    "m" | "mib" => 1 << 20,
                    "g" | "gib" => 1 << 30,
                    "t" | "tib" => 1 << 40,
                    _ => return Err(bad("unknown unit (B, KB, MB, GB, TB, KiB, MiB, GiB, TiB)")),
                };
                (num * mult as f64).floor()
            }
        }
        _ => return Err(bad("expected bytes or a size string such as \"16GiB\"")),
    };
    if !(bytes.is_finite() && bytes > 0.0) {
        return Err(bad("must be positive"));
    }
    Ok(bytes)
}

#[cfg(test)]
#[path = "sizing_tests.rs"]
mod tests;
