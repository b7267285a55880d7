//! Time of the fused causal attention alone, as a long prompt's prefill and as decode
//! steps at long context use it: one layer's worth of calls, times the layer count.
//!
//! ```text
//! cargo run --release -p surge-runtime --example attention_bench -- \
//!     [--heads 9,3,64] [--layers 30] [--tokens 1024,4096,8192] [--chunk 128] [--window N]
//! ```
//! Heads are `n_head,n_kv_head,head_dim` (SmolLM2 by default; Qwen2.5 0.5B is 14,2,64,
//! 1.5B 12,2,128, Gemma 3 270M 4,1,256). Prints seconds for the whole prefill's attention
//! and milliseconds per decode token at the end of the context.

use std::time::Instant;

use surge_runtime::kernels::attention::AttnShape;
use surge_runtime::kernels::causal::{causal_attention, CausalSeq, BLOCK};

fn arg(name: &str, default: &str) -> String {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
        .unwrap_or_else(|| default.to_string())
}

fn main() {
    let heads: Vec<usize> = arg("--heads", "9,3,64")
        .split(',')
        .map(|x| x.parse().expect("--heads n_head,n_kv_head,head_dim"))
        .collect();
    let shape = AttnShape {
        n_head: heads[0],
        n_kv_head: heads[1],
        head_dim: heads[2],
    };
    let layers: usize = arg("--layers", "30").parse().expect("--layers");
    let chunk: usize = arg("--chunk", "128").parse().expect("--chunk");
    let window: usize = arg("--window", &usize::MAX.to_string())
        .parse()
        .expect("--window");
    let hd = shape.head_dim;
    let row = shape.n_head * hd;
    for tokens in arg("--tokens", "1024,4096,8192").split(',') {
        let tokens: usize = tokens.parse().expect("--tokens");
        let cap = tokens.next_multiple_of(BLOCK);
        let kv: Vec<f32> = (0..shape.n_kv_head * cap * hd)
            .map(|i| ((i * 7919) % 1000) as f32 / 1000.0 - 0.5)
            .collect();
        let q: Vec<f32> = (0..chunk * row)
            .map(|i| ((i * 31) % 97) as f32 / 97.0 - 0.5)
            .collect();
        let mut out = vec![0f32; chunk * row];
        let seq = |past: usize, n: usize| CausalSeq {
            k: &kv,
            v: &kv,
            head_stride: cap * hd,
            past,
            n,
            row: 0,
        };
        let started = Instant::now();
        let mut past = 0;
        while past < tokens {
            let n = chunk.min(tokens - past);
            let qn = &q[..n * row];
            causal_attention(shape, window, qn, &[seq(past, n)], &mut out[..n * row])
                .expect("shapes");
            past += n;
        }
        let prefill = started.elapsed().as_secs_f64() * layers as f64;
        let steps = 64;
        let started = Instant::now();
        for _ in 0..steps {
            causal_attention(
                shape,
                window,
                &q[..row],
                &[seq(tokens - 1, 1)],
                &mut out[..row],
            )
            .expect("shapes");
        }
        let decode_ms = started.elapsed().as_secs_f64() * 1e3 / steps as f64 * layers as f64;
        let pairs = (tokens as f64) * (tokens as f64 + 1.0) / 2.0;
        let gflops = pairs * 4.0 * hd as f64 * shape.n_head as f64 * layers as f64 / prefill / 1e9;
        println!(
            "{tokens:>6} tokens: prefill attention {prefill:7.2} s ({gflops:5.1} GFLOP/s), decode {decode_ms:6.2} ms/token"
        );
    }
}
