//! Micro-benchmark of `surge_runtime::kernels` against candle's `QMatMul` on
//! the default model's real matrices.
//!
//! ```text
//! cargo run --release -p surge-runtime --example kernels_bench [-- OPTIONS]
//!   --n 1,4,8,16      activation rows per call
//!   --levels scalar,avx2,avx512
//!   --no-matrices     skip the per-matrix table
//!   --no-token        skip the full decode-token estimate
//!   --ms 300          time budget per measurement
//!   --only NAME       per-matrix table for matrices whose name contains NAME
//!   --threads N       our kernels on a private pool of N threads (default:
//!                     the global pool, `SURGE_KERNEL_THREADS` or all cores)
//!   --synthetic       no model file: every kernel format on random weights
//!                     at Qwen2.5-1.5B's MLP shapes (8960×1536, 1536×8960),
//!                     against candle's QMatMul on the same tensor (`--only`
//!                     then filters formats, e.g. `--only Q4K`)
//!   --cold            with --synthetic: rotate through copies of the matrix
//!                     (> 160 MB in all, 5× the L3 here), so every call
//!                     streams its weights from DRAM, as decode does
//! ```
//!
//! Two views, because they answer different questions:
//! * per matrix, one matrix called repeatedly: small matrices then live in
//!   L2, so GB/s there is an upper bound, not what decode sees;
//! * a full decode token: every layer's 7 matrices then the head, each
//!   touched once per pass over distinct memory, as in a real forward
//!   (attention, norms and sampling excluded) → ms/token and a tok/s bound.
//!
//! On a shared 2-core machine another busy process collapses these numbers:
//! the load average is printed before and after; compare ratios taken in the
//! same run. The model: `$SURGE_TEST_GGUF` or /tmp/models/smollm2.gguf.

use std::collections::BTreeMap;
use std::fs::File;
use std::sync::Arc;
use std::time::{Duration, Instant};

use candle_core::quantized::{gguf_file, GgmlDType, QMatMul, QTensor};
use candle_core::{Device, Module, Tensor};
use surge_runtime::kernels::{self, Level, Pool, QuantFormat, QuantMatrix};

struct Opts {
    ns: Vec<usize>,
    levels: Vec<Level>,
    matrices: bool,
    token: bool,
    budget: Duration,
    threads: Option<usize>,
    only: Option<String>,
    synthetic: bool,
    cold: bool,
}

fn parse_opts() -> Opts {
    let mut o = Opts {
        ns: vec![1, 4, 8, 16],
        levels: Level::ALL
            .into_iter()
            .filter(|l| l.is_supported())
            .collect(),
        matrices: true,
        token: true,
        budget: Duration::from_millis(300),
        threads: None,
        only: None,
        synthetic: false,
        cold: false,
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < args.len() {
        let val = args.get(i + 1).cloned().unwrap_or_default();
        match args[i].as_str() {
            "--n" => o.ns = val.split(',').filter_map(|s| s.parse().ok()).collect(),
            "--levels" => {
                o.levels = val
                    .split(',')
                    .filter_map(Level::parse)
                    .filter(|l| l.is_supported())
                    .collect()
            }
            "--threads" => o.threads = val.parse().ok(),
            "--only" => o.only = Some(val),
            "--ms" => o.budget = Duration::from_millis(val.parse().unwrap_or(300)),
            "--no-matrices" => {
                o.matrices = false;
                i -= 1;
            }
            "--no-token" => {
                o.token = false;
                i -= 1;
            }
            "--synthetic" => {
                o.synthetic = true;
                i -= 1;
            }
            "--cold" => {
                o.cold = true;
                i -= 1;
            }
            other => panic!("unknown option {other}"),
        }
        i += 2;
    }
    o
}

/// Deterministic inputs in [-1, 1) (the kernels' speed does not depend on
/// the values).
fn fake_input(len: usize) -> Vec<f32> {
    (0..len)
        .map(|i| (i * 7919 % 1000) as f32 / 500.0 - 1.0)
        .collect()
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .trim()
        .to_string()
}

/// Rounds per measurement; the fastest is kept.
const ROUNDS: u32 = 7;

/// Best mean time per call over [`ROUNDS`] rounds of `budget / ROUNDS` each
/// (at least 2 calls per round): on a shared machine the minimum keeps the
/// rounds no other process interfered with. Also returns how many cores
/// other processes kept busy meanwhile (see [`Cpu`]).
fn time_it(budget: Duration, mut f: impl FnMut()) -> (Duration, f64) {
    f();
    let cpu = Cpu::now();
    let mut best = Duration::MAX;
    for _ in 0..ROUNDS {
        let start = Instant::now();
        let mut calls = 0u32;
        while calls < 2 || start.elapsed() < budget / ROUNDS {
            f();
            calls += 1;
        }
        best = best.min(start.elapsed() / calls);
    }
    (best, cpu.foreign_cores())
}

/// CPU time snapshot: all CPUs' busy ticks (/proc/stat) and this process's
/// (/proc/self/stat), so a measurement can report the load others added.
/// Linux only; elsewhere it reports NaN.
struct Cpu {
    at: Instant,
    busy: Option<u64>,
    own: Option<u64>,
}

impl Cpu {
    fn now() -> Cpu {
        let busy = std::fs::read_to_string("/proc/stat").ok().and_then(|s| {
            let f: Vec<u64> = s
                .lines()
                .next()?
                .split_whitespace()
                .skip(1)
                .filter_map(|v| v.parse().ok())
                .collect();
            // user nice system idle iowait irq softirq steal
            Some(f.iter().take(8).sum::<u64>() - f.get(3)? - f.get(4)?)
        });
        let own = std::fs::read_to_string("/proc/self/stat")
            .ok()
            .and_then(|s| {
                // After "pid (comm) ": state is field 3, utime and stime are
                // fields 14 and 15, i.e. indices 11 and 12 from the state.
                let f: Vec<&str> = s[s.rfind(')')? + 2..].split_whitespace().collect();
                Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
            });
        Cpu {
            at: Instant::now(),
            busy,
            own,
        }
    }

    /// Cores' worth of CPU used by other processes since `self` (100 ticks/s).
    fn foreign_cores(&self) -> f64 {
        let now = Cpu::now();
        match (self.busy, self.own, now.busy, now.own) {
            (Some(b0), Some(o0), Some(b1), Some(o1)) => {
                let ticks = (b1 - b0) as f64 - (o1 - o0) as f64;
                (ticks / 100.0 / self.at.elapsed().as_secs_f64()).max(0.0)
            }
            _ => f64::NAN,
        }
    }
}

/// One weight in three forms: ours, candle as stored, candle requantized to
/// Q8_0 (candle's fastest CPU path).
struct Weight {
    ours: QuantMatrix,
    candle: QMatMul,
    candle_q8: QMatMul,
    /// Q8_0 with `k` zero-padded to a multiple of 256, which candle 0.11
    /// needs for its tiled AVX-512 VNNI Q8_0 kernel (the engine pads so).
    candle_q8p: QMatMul,
    bytes: usize,
    q8_bytes: usize,
    q8p_bytes: usize,
}

/// `k` rounded up to candle's tiled-kernel granularity.
fn padded_k(k: usize) -> usize {
    k.next_multiple_of(256)
}

/// Zero-pads the last dimension of `t` to `kp`.
fn pad_cols(t: &Tensor, kp: usize) -> Tensor {
    let k = t.dim(candle_core::D::Minus1).unwrap();
    t.pad_with_zeros(candle_core::D::Minus1, 0, kp - k).unwrap()
}

fn weight(q: QTensor) -> Weight {
    let ours = QuantMatrix::from_qtensor(&q)
        .unwrap()
        .expect("a kernel format");
    let q8 = if q.dtype() == GgmlDType::Q8_0 {
        None
    } else {
        Some(QTensor::quantize(&q.dequantize(&Device::Cpu).unwrap(), GgmlDType::Q8_0).unwrap())
    };
    let k = q.shape().dims2().unwrap().1;
    let q8p = (padded_k(k) != k).then(|| {
        let dense = pad_cols(&q.dequantize(&Device::Cpu).unwrap(), padded_k(k));
        QTensor::quantize(&dense, GgmlDType::Q8_0).unwrap()
    });
    let bytes = q.storage_size_in_bytes();
    let q8_bytes = q8.as_ref().map_or(bytes, |t| t.storage_size_in_bytes());
    let q8p_bytes = q8p.as_ref().map_or(q8_bytes, |t| t.storage_size_in_bytes());
    let q = Arc::new(q);
    let candle_q8 = QMatMul::from_arc(q8.map_or_else(|| Arc::clone(&q), Arc::new)).unwrap();
    let candle_q8p = q8p.map_or_else(|| candle_q8.clone(), |t| QMatMul::from_qtensor(t).unwrap());
    Weight {
        ours,
        candle: QMatMul::from_arc(q).unwrap(),
        candle_q8,
        candle_q8p,
        bytes,
        q8_bytes,
        q8p_bytes,
    }
}

/// Concatenates same-width tensors by rows (the engine's fused qkv/gate_up).
/// `None` when the parts' types differ (Q4_K_M files keep `attn_v` in
/// `Q6_K` beside `Q4_K` q/k; the engine then runs them as separate parts).
fn fuse(parts: &[&QTensor]) -> Option<QTensor> {
    if parts.iter().any(|p| p.dtype() != parts[0].dtype()) {
        return None;
    }
    let k = parts[0].shape().dims2().unwrap().1;
    let rows: usize = parts.iter().map(|p| p.shape().dims2().unwrap().0).sum();
    let mut bytes = Vec::new();
    for p in parts {
        bytes.extend_from_slice(&p.data().unwrap());
    }
    let storage =
        candle_core::quantized::QStorage::from_data(bytes.into(), &Device::Cpu, parts[0].dtype())
            .unwrap();
    Some(QTensor::new(storage, (rows, k)).unwrap())
}

/// `--synthetic`: each format on the same random weights at the shapes of
/// Qwen2.5-1.5B's MLP, ours (every level asked for) and candle's `QMatMul`.
fn synthetic(o: &Opts, pool: &Pool) {
    const SHAPES: [(usize, usize); 2] = [(8960, 1536), (1536, 8960)];
    let formats = QuantFormat::ALL.into_iter().filter(|f| {
        o.only
            .as_deref()
            .is_none_or(|s| format!("{f:?}").contains(s))
    });
    println!("\n| format | rows×k | n | impl | µs/call | weight GB/s | bits/weight | vs candle | other procs' CPU (cores) |");
    println!("|---|---|---|---|---|---|---|---|---|");
    for f in formats {
        for (rows, k) in SHAPES {
            let dense = Tensor::from_vec(fake_input(rows * k), (rows, k), &Device::Cpu).unwrap();
            let q = QTensor::quantize(&dense, f.ggml_dtype()).unwrap();
            let ours = QuantMatrix::from_qtensor(&q)
                .unwrap()
                .expect("kernel format");
            let candle_bytes = q.storage_size_in_bytes();
            let copies = if o.cold {
                160_000_000usize.div_ceil(candle_bytes)
            } else {
                1
            };
            let ours = vec![ours; copies];
            let candle: Vec<QMatMul> = (0..copies)
                .map(|_| QMatMul::from_qtensor(fuse(&[&q]).expect("one part")).unwrap())
                .collect();
            let next = std::cell::Cell::new(0usize);
            let pick = || {
                let i = next.get();
                next.set((i + 1) % copies);
                i
            };
            for &n in &o.ns {
                let x = fake_input(n * k);
                let xt = Tensor::from_slice(&x, (n, k), &Device::Cpu).unwrap();
                let (t_candle, l_candle) = time_it(o.budget, || {
                    candle[pick()].forward(&xt).unwrap();
                });
                let row = |imp: &str, t: Duration, bytes: usize, load: f64| {
                    println!(
                        "| {f:?} | {rows}×{k} | {n} | {imp} | {:.1} | {:.1} | {:.3} | {:.2}× | {load:.2} |",
                        t.as_secs_f64() * 1e6,
                        bytes as f64 / t.as_secs_f64() / 1e9,
                        8.0 * bytes as f64 / (rows * k) as f64,
                        t_candle.as_secs_f64() / t.as_secs_f64()
                    )
                };
                row("candle", t_candle, candle_bytes, l_candle);
                let mut out = vec![0f32; n * rows];
                for &level in &o.levels {
                    let (t, load) = time_it(o.budget, || {
                        kernels::matmul_with(level, pool, &ours[pick()], &x, n, &mut out).unwrap()
                    });
                    row(
                        &format!("ours {}", level.name()),
                        t,
                        ours[0].size_in_bytes(),
                        load,
                    );
                }
            }
        }
    }
}

fn main() {
    let o = parse_opts();
    let private = o.threads.map(|t| Pool::new(t, Duration::from_micros(50)));
    let pool = private.as_ref().unwrap_or_else(|| kernels::global_pool());
    if o.synthetic {
        println!("load average before: {}", loadavg());
        println!(
            "kernel level (active): {:?}; pool threads: {}; candle threads: {}",
            kernels::active_level(),
            pool.threads(),
            candle_core::utils::get_num_threads()
        );
        synthetic(&o, pool);
        println!("\nload average after: {}", loadavg());
        return;
    }
    let path =
        std::env::var("SURGE_TEST_GGUF").unwrap_or_else(|_| "/tmp/models/smollm2.gguf".into());
    let mut file = File::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let content = gguf_file::Content::read(&mut file).unwrap();
    let mut tensor = |name: &str| content.tensor(&mut file, name, &Device::Cpu).unwrap();
    println!("load average before: {}", loadavg());
    println!(
        "kernel level (active): {:?}; pool threads: {}; candle threads: {}",
        kernels::active_level(),
        pool.threads(),
        candle_core::utils::get_num_threads()
    );
    let n_layers = content
        .tensor_infos
        .keys()
        .filter(|k| k.ends_with(".attn_q.weight"))
        .count();
    let head_name = if content.tensor_infos.contains_key("output.weight") {
        "output.weight"
    } else {
        "token_embd.weight"
    };
    const PARTS: [&str; 7] = [
        "attn_q",
        "attn_k",
        "attn_v",
        "attn_output",
        "ffn_gate",
        "ffn_up",
        "ffn_down",
    ];

    if o.matrices {
        let mut named: Vec<(String, QTensor)> = PARTS
            .iter()
            .map(|p| (p.to_string(), tensor(&format!("blk.0.{p}.weight"))))
            .collect();
        let qkv = fuse(&[&named[0].1, &named[1].1, &named[2].1]);
        let gate_up = fuse(&[&named[4].1, &named[5].1]);
        named.extend(qkv.map(|t| ("qkv (fused)".into(), t)));
        named.extend(gate_up.map(|t| ("gate_up (fused)".into(), t)));
        named.push(("head".into(), tensor(head_name)));
        println!("\n| matrix | dtype | rows×k | n | impl | µs/call | weight GB/s | vs candle as stored | vs best candle Q8_0 | other procs' CPU (cores) |");
        println!("|---|---|---|---|---|---|---|---|---|---|");
        let wanted = |name: &str| o.only.as_deref().is_none_or(|f| name.contains(f));
        for (name, q) in named.into_iter().filter(|(name, _)| wanted(name)) {
            let dtype = q.dtype();
            let (rows, k) = q.shape().dims2().unwrap();
            let w = weight(q);
            for &n in &o.ns {
                let x = fake_input(n * k);
                let xt = Tensor::from_slice(&x, (n, k), &Device::Cpu).unwrap();
                let (t_candle, l_candle) = time_it(o.budget, || {
                    w.candle.forward(&xt).unwrap();
                });
                let (t_q8, l_q8) = time_it(o.budget, || {
                    w.candle_q8.forward(&xt).unwrap();
                });
                // Padding the input is left out of the timing (favours candle).
                let xtp = pad_cols(&xt, padded_k(k));
                let padded = (padded_k(k) != k).then(|| {
                    time_it(o.budget, || {
                        w.candle_q8p.forward(&xtp).unwrap();
                    })
                });
                let t_best_q8 = padded.map_or(t_q8, |(t, _)| t.min(t_q8));
                let gbs = |bytes: usize, t: Duration| bytes as f64 / t.as_secs_f64() / 1e9;
                let row = |imp: &str, t: Duration, bytes: usize, load: f64| {
                    println!(
                        "| {name} | {dtype:?} | {rows}×{k} | {n} | {imp} | {:.1} | {:.1} | {:.2}× | {:.2}× | {load:.2} |",
                        t.as_secs_f64() * 1e6,
                        gbs(bytes, t),
                        t_candle.as_secs_f64() / t.as_secs_f64(),
                        t_best_q8.as_secs_f64() / t.as_secs_f64()
                    )
                };
                row(&format!("candle {dtype:?}"), t_candle, w.bytes, l_candle);
                if dtype != GgmlDType::Q8_0 {
                    row("candle Q8_0", t_q8, w.q8_bytes, l_q8);
                }
                if let Some((t, load)) = padded {
                    let imp = format!("candle Q8_0 k→{}", padded_k(k));
                    row(&imp, t, w.q8p_bytes, load);
                }
                let mut out = vec![0f32; n * rows];
                for &level in &o.levels {
                    let (t, load) = time_it(o.budget, || {
                        kernels::matmul_with(level, pool, &w.ours, &x, n, &mut out).unwrap()
                    });
                    row(
                        &format!("ours {}", level.name()),
                        t,
                        w.ours.size_in_bytes(),
                        load,
                    );
                }
            }
        }
    }

    if o.token {
        println!("\nfull decode token: {n_layers} layers × 7 matrices + head ({head_name}), each touched once per pass");
        let mut layers: Vec<Vec<Weight>> = Vec::new();
        for l in 0..n_layers {
            layers.push(
                PARTS
                    .iter()
                    .map(|p| weight(tensor(&format!("blk.{l}.{p}.weight"))))
                    .collect(),
            );
        }
        let head = weight(tensor(head_name));
        let all: Vec<&Weight> = layers
            .iter()
            .flatten()
            .chain(std::iter::once(&head))
            .collect();
        let bytes: usize = all.iter().map(|w| w.bytes).sum();
        let q8_bytes: usize = all.iter().map(|w| w.q8_bytes).sum();
        println!(
            "weight bytes per token: {:.1} MB as stored, {:.1} MB as Q8_0",
            bytes as f64 / 1e6,
            q8_bytes as f64 / 1e6
        );
        println!("\n| n | impl | ms per pass | weight GB/s | tokens/s bound (n / pass) | vs candle as stored | vs best candle Q8_0 | other procs' CPU (cores) |");
        println!("|---|---|---|---|---|---|---|---|");
        for &n in &o.ns {
            let mut results: BTreeMap<String, (Duration, usize, f64)> = BTreeMap::new();
            let xs: BTreeMap<usize, (Vec<f32>, Tensor, Tensor)> = all
                .iter()
                .map(|w| w.ours.cols())
                .map(|k| {
                    let x = fake_input(n * k);
                    let t = Tensor::from_slice(&x, (n, k), &Device::Cpu).unwrap();
                    let padded = pad_cols(&t, padded_k(k));
                    (k, (x, t, padded))
                })
                .collect();
            let budget = o.budget * 3;
            let (t, load) = time_it(budget, || {
                for w in &all {
                    w.candle.forward(&xs[&w.ours.cols()].1).unwrap();
                }
            });
            results.insert("0 candle as stored".into(), (t, bytes, load));
            let (t, load) = time_it(budget, || {
                for w in &all {
                    w.candle_q8.forward(&xs[&w.ours.cols()].1).unwrap();
                }
            });
            results.insert("1 candle Q8_0".into(), (t, q8_bytes, load));
            let (t, load) = time_it(budget, || {
                for w in &all {
                    w.candle_q8p.forward(&xs[&w.ours.cols()].2).unwrap();
                }
            });
            let q8p_bytes = all.iter().map(|w| w.q8p_bytes).sum();
            results.insert("1 candle Q8_0 k-padded to 256".into(), (t, q8p_bytes, load));
            let max_rows = all.iter().map(|w| w.ours.rows()).max().unwrap_or(0);
            let mut out = vec![0f32; n * max_rows];
            for &level in &o.levels {
                let (t, load) = time_it(budget, || {
                    for w in &all {
                        let m = &w.ours;
                        kernels::matmul_with(
                            level,
                            pool,
                            m,
                            &xs[&m.cols()].0,
                            n,
                            &mut out[..n * m.rows()],
                        )
                        .unwrap();
                    }
                });
                results.insert(
                    format!("2 ours {}", level.name()),
                    (t, all.iter().map(|w| w.ours.size_in_bytes()).sum(), load),
                );
            }
            let base = results["0 candle as stored"].0.as_secs_f64();
            let base_q8 = results["1 candle Q8_0"]
                .0
                .min(results["1 candle Q8_0 k-padded to 256"].0)
                .as_secs_f64();
            for (name, (t, b, load)) in &results {
                let s = t.as_secs_f64();
                println!(
                    "| {n} | {} | {:.2} | {:.1} | {:.0} | {:.2}× | {:.2}× | {load:.2} |",
                    &name[2..],
                    s * 1e3,
                    *b as f64 / s / 1e9,
                    n as f64 / s,
                    base / s,
                    base_q8 / s
                );
            }
        }
    }
    println!("\nload average after: {}", loadavg());
}
