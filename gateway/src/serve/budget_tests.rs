//! Budget unit tests: placement, two-dimensional reservations, choosing evictions.

use super::*;

fn gpu(i: usize, gib: u64) -> Gpu {
    Gpu {
        ordinal: i,
        name: "test".into(),
        total_memory: gib << 30,
    }
}

#[test]
fn auto_placement_fits_gpus_by_memory() {
    let model = |kind, mib: u64| ModelEntry {
        name: "m".into(),
        kind,
        aliases: vec![],
        size: mib << 20,
    };
    let mut p = Placer::with_cuda(vec![gpu(0, 1), gpu(1, 2)], true);
    assert_eq!(p.place(&model(ModelKind::Whisper, 75)), "cpu");
    assert_eq!(p.place(&model(ModelKind::Llm, 400)), "cuda:1"); // 1.2 GiB: only GPU 1 fits
    assert_eq!(p.place(&model(ModelKind::Llm, 200)), "cuda:0"); // now the emptier one
    assert_eq!(p.place(&model(ModelKind::Llm, 400)), "cpu"); // nothing left fits
    assert_eq!(Placer::new(vec![]).place(&model(ModelKind::Llm, 1)), "cpu");
}

/// Defect 5: a binary without CUDA support puts every pool on the CPU, whatever GPUs
/// the driver reports (its workers would fail on `--device cuda:N`).
#[test]
fn a_cpu_only_build_places_everything_on_the_cpu() {
    let llm = ModelEntry {
        name: "m".into(),
        kind: ModelKind::Llm,
        aliases: vec![],
        size: 100 << 20,
    };
    let gpus = vec![gpu(0, 80), gpu(1, 40)];
    let mut cpu_only = Placer::with_cuda(gpus.clone(), false);
    assert_eq!(cpu_only.place(&llm), "cpu");
    assert_eq!(cpu_only.place(&llm), "cpu");
    assert_eq!(Placer::with_cuda(gpus.clone(), true).place(&llm), "cuda:0");
    assert_eq!(
        Placer::new(gpus).place(&llm) == "cpu",
        !surge_runtime::CUDA,
        "Placer::new follows this build"
    );
}

#[test]
fn budgets_are_per_device_and_one_worker_always_fits() {
    let b = Budget::new(2.0, f64::INFINITY, &[gpu(0, 10)], 0.9);
    assert!(b.try_reserve("cpu", Cost::cores(1.0)));
    assert!(b.try_reserve("cpu", Cost::cores(1.0)));
    assert!(!b.try_reserve("cpu", Cost::cores(0.5)));
    b.release("cpu", Cost::cores(1.0));
    assert!(b.try_reserve("cpu", Cost::cores(0.5)));
    // 9 GiB of GPU 0: one 6 GiB worker, not two; `cuda` is GPU 0.
    let six = Cost::new(0.0, (6u64 << 30) as f64);
    assert!(b.try_reserve("cuda", six));
    assert!(!b.try_reserve("cuda:0", six));
    // Too big for the device, but the device is empty: it may run alone.
    let b = Budget::new(1.0, 1e9, &[], 0.9);
    assert!(b.try_reserve("cpu", Cost::new(4.0, 5e9)));
    assert!(!b.try_reserve("cpu", Cost::cores(0.1)));
    // An undiscovered GPU is not limited.
    assert!(b.try_reserve("cuda:3", Cost::new(0.0, 1e12)));
    let j = b.json();
    assert_eq!(j["cpu"]["capacity"], 1.0);
    assert_eq!(j["cpu"]["cores"]["used"], 4.0);
    assert_eq!(j["cpu"]["memory"]["capacity"], 1e9);
    assert_eq!(j["cpu"]["memory"]["used"], 5e9);
    assert_eq!(j["cuda:3"]["memory"]["capacity"], Value::Null, "unlimited");
    assert_eq!(
        j["cuda:3"]["used"], 1e12,
        "a GPU's main dimension is memory"
    );
}

/// A CPU worker needs room in both dimensions: cores to spare do not let a worker
/// start whose memory does not fit, and the shortfall says which dimension is short.
#[test]
fn a_cpu_worker_needs_both_cores_and_memory() {
    let gib = (1u64 << 30) as f64;
    let b = Budget::new(8.0, 4.0 * gib, &[], 0.9);
    let big = Cost::new(2.0, 2.5 * gib);
    let small = Cost::new(1.0, 0.3 * gib);
    assert!(b.try_reserve("cpu", big));
    assert_eq!(b.shortfall("cpu", big), Cost::new(0.0, 1.0 * gib));
    assert!(
        !b.try_reserve("cpu", big),
        "6 of 8 cores would fit, 5 GiB would not"
    );
    for _ in 0..4 {
        assert!(b.try_reserve("cpu", small));
    }
    // 6 cores and 3.7 GiB: memory would fit one more, cores are short.
    let wide = Cost::new(3.0, 0.1 * gib);
    assert_eq!(b.shortfall("cpu", wide), Cost::new(1.0, 0.0));
    assert!(!b.try_reserve("cpu", wide));
    assert_eq!(b.workers("cpu"), 5);
    // Re-charged at its measured memory: the big worker is smaller than estimated.
    b.recharge("cpu", big, Cost::new(2.0, 1.0 * gib));
    assert!(b.shortfall("cpu", Cost::new(1.0, 0.5 * gib)).is_zero());
    assert_eq!(b.workers("cpu"), 5, "a re-charge is the same worker");
    for _ in 0..4 {
        b.release("cpu", small);
    }
    b.release("cpu", Cost::new(2.0, 1.0 * gib));
    let j = b.json();
    assert_eq!(
        (
            j["cpu"]["used"].as_f64(),
            j["cpu"]["memory"]["used"].as_f64()
        ),
        (Some(0.0), Some(0.0))
    );
}

/// Eviction frees whichever dimension is short, least recently used first, skips
/// workers that free nothing of it, and evicts nobody when it cannot free enough
/// (unless that empties the device, where any one worker fits).
#[test]
fn eviction_frees_the_short_dimension() {
    let gib = (1u64 << 30) as f64;
    let idle = [
        Cost::new(1.0, 0.2 * gib),
        Cost::new(0.0, 0.0),
        Cost::new(1.0, 1.5 * gib),
        Cost::new(2.0, 0.3 * gib),
    ];
    // One core short: the least recently used worker with a core.
    assert_eq!(pick_victims(Cost::new(1.0, 0.0), &idle, false), [0]);
    // 1 GiB short: LRU order until enough memory is free (0.2 + 1.5).
    assert_eq!(pick_victims(Cost::new(0.0, gib), &idle, false), [0, 2]);
    // Both short: until both are covered.
    assert_eq!(
        pick_victims(Cost::new(3.0, 0.1 * gib), &idle, false),
        [0, 2, 3]
    );
    // 4 GiB cannot be freed: nobody is stopped for nothing...
    assert!(pick_victims(Cost::new(0.0, 4.0 * gib), &idle, false).is_empty());
    // ...unless they are all that runs: an empty device takes any worker.
    assert_eq!(
        pick_victims(Cost::new(0.0, 4.0 * gib), &idle, true),
        [0, 1, 2, 3]
    );
    assert!(
        pick_victims(Cost::default(), &idle, true).is_empty(),
        "nothing short"
    );
}
