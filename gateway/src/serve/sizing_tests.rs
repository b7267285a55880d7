//! Sizing unit tests: cores weighted by model size, memory estimates, `/proc` parsing.

use super::*;
use crate::serve::config::GatewayConfig;

const MIB: u64 = 1 << 20;
/// smollm2-135m (Q4_1), whisper-tiny.en, whisper-base, Qwen2.5-Coder-1.5B (Q4_K_M).
const SMOL: u64 = 94 * MIB;
const TINY: u64 = 74 * MIB;
const BASE: u64 = 141 * MIB;
const QWEN15: u64 = 1066 * MIB;

fn pool(toml: &str) -> PoolConfig {
    GatewayConfig::from_toml_str(toml).unwrap().pool("m", &[])
}

/// Σ cores × max_workers over the pools.
fn charged(shares: &[f64], pools: &[(&PoolConfig, u64)]) -> f64 {
    shares
        .iter()
        .zip(pools)
        .map(|(c, (p, _))| c * p.max_workers as f64)
        .sum()
}

/// The equal-size cases of the old equal split still hold: whole cores, at least 1,
/// every pool at its max_workers within the budget, a lone model gets every core.
#[test]
fn equal_models_split_the_budget_in_whole_cores() {
    let one = pool("");
    let four = pool("[models.m]\nmax_workers = 4");
    let fixed = pool("[models.m]\nmax_workers = 2\nworker_cores = 3");
    assert_eq!(cpu_shares(2.0, &[(&one, SMOL)]), [2.0], "alone: every core");
    assert_eq!(cpu_shares(2.0, &[(&one, SMOL), (&one, SMOL)]), [1.0, 1.0]);
    // 16 cores over 5 worker slots: 3 each, and the 16th core to the pool that can
    // take it whole (one slot).
    assert_eq!(cpu_shares(16.0, &[(&four, SMOL), (&one, SMOL)]), [3.0, 4.0]);
    assert_eq!(
        cpu_shares(16.0, &[(&fixed, SMOL), (&one, SMOL), (&one, SMOL)]),
        [3.0, 5.0, 5.0],
        "16 - 2 x 3 over 2"
    );
    assert_eq!(
        cpu_shares(2.0, &[(&four, SMOL), (&four, SMOL)]),
        [1.0, 1.0],
        "at least one"
    );
    assert_eq!(
        cpu_shares(2.5, &[(&one, SMOL)]),
        [2.0],
        "never more than the budget"
    );
}

/// Bigger models get more cores (by the square root of their size), the small ones
/// keep at least one, and the total stays within the budget.
#[test]
fn bigger_models_get_more_cores() {
    let one = pool("");
    let two = pool("[models.m]\nmax_workers = 2");
    let pools = [(&one, SMOL), (&one, QWEN15), (&one, BASE)];
    let shares = cpu_shares(16.0, &pools);
    assert_eq!(shares, [3.0, 10.0, 3.0]);
    assert_eq!(charged(&shares, &pools), 16.0);
    // The two default models on a 2-core machine: one core each, whatever their size.
    assert_eq!(cpu_shares(2.0, &[(&one, SMOL), (&one, TINY)]), [1.0, 1.0]);
    // 4 cores, a 1.5B model and a 135M one: 3 and 1.
    assert_eq!(cpu_shares(4.0, &[(&one, QWEN15), (&one, SMOL)]), [3.0, 1.0]);
    // Small models pinned at one core each leave the rest to the big one.
    let pools = [(&two, QWEN15), (&one, SMOL), (&one, TINY)];
    let shares = cpu_shares(8.0, &pools);
    assert_eq!(shares, [3.0, 1.0, 1.0]);
    assert!(charged(&shares, &pools) <= 8.0);
    // An explicit worker_cores (or --threads) wins and is reserved first.
    let fixed = pool("[models.m]\nworker_cores = 6");
    let threads = pool("[models.m]\nworker_args = [\"--threads\", \"2\"]");
    let pools = [
        (&fixed, SMOL),
        (&threads, SMOL),
        (&one, QWEN15),
        (&one, SMOL),
    ];
    assert_eq!(cpu_shares(16.0, &pools), [6.0, 2.0, 6.0, 2.0]);
}

#[test]
fn memory_is_estimated_from_the_weights() {
    let e = |size| ModelEntry {
        name: "m".into(),
        kind: surge_models::ModelKind::Llm,
        aliases: vec![],
        size,
    };
    assert_eq!(estimate_worker_memory(&e(0)), PROCESS_OVERHEAD);
    // smollm2: 141 + 128 MiB, near its measured 249 MiB peak with 16 streams.
    assert_eq!(
        estimate_worker_memory(&e(SMOL)),
        141 * MIB + PROCESS_OVERHEAD
    );
    let qwen = estimate_worker_memory(&e(QWEN15));
    assert!((1700 * MIB..1800 * MIB).contains(&qwen), "{}", qwen / MIB);
}

#[test]
fn proc_status_and_meminfo_parse() {
    let status = "Name:\tsurge\nVmPeak:\t  300000 kB\nVmRSS:\t  161792 kB\nThreads:\t4\n";
    assert_eq!(parse_vm_rss(status), Some(161792 << 10));
    assert_eq!(parse_vm_rss("Name:\tzombie\n"), None);
    if cfg!(target_os = "linux") {
        let me = resident_memory(std::process::id()).expect("our own VmRSS");
        assert!(me > MIB, "{me}");
        assert!(mem_total().unwrap() > me);
        assert_eq!(resident_memory(u32::MAX), None);
    }
}
