//! Tests of the causal attention kernel: every level against a naive f64 reference,
//! and bit-identical rows whatever the chunking, the batch and the thread count.

use super::*;
use crate::kernels::tests::rand_vec;
use std::time::Duration;

/// One layer cache of `len` tokens, capacity rounded up to whole blocks; the slots past
/// `len` hold garbage, which no result may depend on.
struct Cache {
    k: Vec<f32>,
    v: Vec<f32>,
    cap: usize,
}

fn cache(nkv: usize, hd: usize, len: usize, seed: &mut u64) -> Cache {
    let cap = len.next_multiple_of(BLOCK) + BLOCK;
    Cache {
        k: rand_vec(nkv * cap * hd, seed, 2.0),
        v: rand_vec(nkv * cap * hd, seed, 1.0),
        cap,
    }
}

/// Naive f64 attention of query `q` (position `p`, head `h`).
fn reference(
    shape: AttnShape,
    window: usize,
    c: &Cache,
    q: &[f32],
    p: usize,
    h: usize,
) -> Vec<f32> {
    let hd = shape.head_dim;
    let g = h / (shape.n_head / shape.n_kv_head);
    let base = g * c.cap * hd;
    let lo = (p + 1).saturating_sub(window);
    let sc: Vec<f64> = (lo..=p)
        .map(|j| {
            // Keys are stored in blocks, dimension-major (`store_key`).
            let k = |d: usize| c.k[base + (j / BLOCK) * BLOCK * hd + d * BLOCK + j % BLOCK];
            q.iter()
                .enumerate()
                .map(|(d, &a)| a as f64 * k(d) as f64)
                .sum::<f64>()
                / (hd as f64).sqrt()
        })
        .collect();
    let m = sc.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let e: Vec<f64> = sc.iter().map(|x| (x - m).exp()).collect();
    let sum: f64 = e.iter().sum();
    (0..hd)
        .map(|d| {
            let y: f64 = (lo..=p)
                .zip(&e)
                .map(|(j, w)| w * c.v[base + j * hd + d] as f64)
                .sum();
            (y / sum) as f32
        })
        .collect()
}

/// Runs one call: `chunks` are (past, n) of one sequence each, all over the same cache.
fn run(
    level: Level,
    pool: &Pool,
    shape: AttnShape,
    window: usize,
    c: &Cache,
    q: &[f32],
    chunks: &[(usize, usize)],
) -> Vec<f32> {
    let row = shape.n_head * shape.head_dim;
    let mut rows = 0;
    let seqs: Vec<CausalSeq<'_>> = chunks
        .iter()
        .map(|&(past, n)| {
            let s = CausalSeq {
                k: &c.k,
                v: &c.v,
                head_stride: c.cap * shape.head_dim,
                past,
                n,
                row: rows,
            };
            rows += n;
            s
        })
        .collect();
    let qs: Vec<f32> = chunks
        .iter()
        .flat_map(|&(past, n)| q[past * row..(past + n) * row].iter().copied())
        .collect();
    let mut out = vec![f32::NAN; qs.len()];
    causal_attention_with(level, pool, shape, window, &qs, &seqs, &mut out).expect("shapes");
    out
}

const SHAPES: [(usize, usize, usize); 5] =
    [(9, 3, 64), (14, 2, 64), (4, 1, 256), (6, 2, 16), (2, 1, 12)];

#[test]
fn kernels_causal_attention_matches_reference_at_every_level() {
    let pool = Pool::new(2, Duration::from_micros(20));
    let mut seed = 11u64;
    for &(n_head, n_kv_head, hd) in &SHAPES {
        let shape = AttnShape {
            n_head,
            n_kv_head,
            head_dim: hd,
        };
        let len = 75;
        let c = cache(n_kv_head, hd, len, &mut seed);
        let q = rand_vec(len * n_head * hd, &mut seed, 1.0);
        for window in [usize::MAX, 1, 20] {
            for level in Level::ALL.into_iter().filter(|l| l.is_supported()) {
                // A prompt chunk starting past 0 and a decode token, in one call.
                let out = run(level, &pool, shape, window, &c, &q, &[(30, 40), (74, 1)]);
                let positions = (30..70).chain([74]);
                for (i, p) in positions.enumerate() {
                    for h in 0..n_head {
                        let qr = &q[(p * n_head + h) * hd..][..hd];
                        let want = reference(shape, window, &c, qr, p, h);
                        let got = &out[(i * n_head + h) * hd..][..hd];
                        for (a, b) in got.iter().zip(&want) {
                            assert!(
                                (a - b).abs() < 2e-5 * (1.0 + b.abs()),
                                "{level:?} {shape:?} window {window} p {p} h {h}: {a} vs {b}"
                            );
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn kernels_causal_attention_rows_do_not_depend_on_chunking_batch_or_threads() {
    let one = Pool::new(1, Duration::from_micros(20));
    let two = Pool::new(2, Duration::from_micros(20));
    let mut seed = 5u64;
    for &(n_head, n_kv_head, hd) in &SHAPES {
        let shape = AttnShape {
            n_head,
            n_kv_head,
            head_dim: hd,
        };
        let len = 70;
        let c = cache(n_kv_head, hd, len, &mut seed);
        let q = rand_vec(len * n_head * hd, &mut seed, 1.0);
        for window in [usize::MAX, 23] {
            for level in Level::ALL.into_iter().filter(|l| l.is_supported()) {
                let whole = run(level, &two, shape, window, &c, &q, &[(0, len)]);
                let splits: [&[(usize, usize)]; 4] = [
                    &[(0, 7), (7, 7), (14, 56)],
                    &[(0, 33), (33, 1), (34, 36)],
                    &[(0, 16), (16, 16), (32, 16), (48, 22)],
                    &[(0, 1), (1, 20), (21, 1), (22, 48)],
                ];
                for chunks in splits {
                    for pool in [&one, &two] {
                        // All chunks in one call (as a batch), and every chunk alone.
                        let batched = run(level, pool, shape, window, &c, &q, chunks);
                        assert!(batched == whole, "{level:?} {shape:?} {chunks:?} batched");
                        let alone: Vec<f32> = chunks
                            .iter()
                            .flat_map(|&ch| run(level, pool, shape, window, &c, &q, &[ch]))
                            .collect();
                        assert!(alone == whole, "{level:?} {shape:?} {chunks:?} alone");
                    }
                }
                // Token by token, as decode steps.
                let tokens: Vec<f32> = (0..len)
                    .flat_map(|p| run(level, &one, shape, window, &c, &q, &[(p, 1)]))
                    .collect();
                assert!(tokens == whole, "{level:?} {shape:?} token by token");
            }
        }
    }
}

#[test]
fn kernels_causal_attention_refuses_bad_shapes() {
    let shape = AttnShape {
        n_head: 4,
        n_kv_head: 2,
        head_dim: 16,
    };
    let k = vec![0f32; 2 * 32 * 16];
    let seq = |past, n, head_stride| CausalSeq {
        k: &k,
        v: &k,
        head_stride,
        past,
        n,
        row: 0,
    };
    let q = vec![0f32; 4 * 64];
    let mut out = vec![0f32; 4 * 64];
    let call = |seqs: &[CausalSeq<'_>], out: &mut [f32]| {
        causal_attention(shape, usize::MAX, &q, seqs, out).is_ok()
    };
    assert!(call(&[seq(0, 4, 32 * 16)], &mut out));
    assert!(
        !call(&[seq(0, 4, 20 * 16)], &mut out),
        "capacity not whole blocks"
    );
    assert!(!call(&[seq(30, 4, 32 * 16)], &mut out), "past the capacity");
    assert!(
        !call(&[seq(0, 5, 32 * 16)], &mut out),
        "more queries than rows"
    );
    assert!(!call(&[seq(0, 0, 32 * 16)], &mut out), "no query");
    assert!(!call(&[seq(0, 4, 32 * 16)], &mut out[..10]), "short output");
}

#[test]
fn kernels_store_key_writes_the_block_layout() {
    let hd = 3;
    let mut head = vec![0f32; 2 * BLOCK * hd];
    store_key(&mut head, 17, &[1.0, 2.0, 3.0]);
    // Block 1, lane 1, dimensions 0..3 one BLOCK apart.
    let base = BLOCK * hd + 1;
    assert_eq!(
        [head[base], head[base + BLOCK], head[base + 2 * BLOCK]],
        [1.0, 2.0, 3.0]
    );
    assert_eq!(head.iter().filter(|&&x| x != 0.0).count(), 3);
}
