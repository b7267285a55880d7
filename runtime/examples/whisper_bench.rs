//! Where a Whisper transcription's time goes: mel, encoder per window (alone and
//! batched), decoder step per sequence count, and the whole recording's real-time factor.
//!
//! `cargo run --release -p surge-runtime --example whisper_bench -- CLIP.wav [ROUNDS]`
//! (any format the worker accepts; the model is whisper-tiny.en from the cache).

use std::time::Instant;

use candle_core::Device;
use surge_runtime::whisper::{DecodeOptions, WhisperEngine};

fn best<T>(rounds: usize, mut f: impl FnMut() -> T) -> (f64, T) {
    let mut best = f64::INFINITY;
    let mut out = None;
    for _ in 0..rounds {
        let t = Instant::now();
        let r = f();
        best = best.min(t.elapsed().as_secs_f64());
        out = Some(r);
    }
    (best, out.expect("rounds >= 1"))
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let clip = args.get(1).expect("usage: whisper_bench CLIP [ROUNDS]");
    let rounds: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(3);
    let bytes = std::fs::read(clip).expect("read clip");
    let audio = surge_runtime::audio::decode_to_16k_mono(&bytes, Some(clip), None).unwrap();
    let cache = surge_models::ModelCache::open_default().unwrap();
    let m = cache.resolve("whisper-tiny.en").unwrap();
    let t = Instant::now();
    let engine = WhisperEngine::load(
        m.path("model.bin").unwrap(),
        m.path("config.json").unwrap(),
        m.path("tokenizer.json").unwrap(),
        &Device::Cpu,
    )
    .unwrap();
    println!("load {:.3} s", t.elapsed().as_secs_f64());
    let opts = DecodeOptions::default();

    for batch in [1usize, 2, 4] {
        let (s, _) = best(rounds, || {
            let mut tasks: Vec<_> = (0..batch)
                .map(|_| engine.new_task(&audio.samples, opts.clone()).unwrap())
                .collect();
            let mut refs: Vec<_> = tasks.iter_mut().collect();
            engine.encode(&mut refs).unwrap()
        });
        println!(
            "mel+encode batch {batch}: {:.1} ms ({:.1} ms/window)",
            s * 1e3,
            s * 1e3 / batch as f64
        );
    }
    for batch in [1usize, 4, 8] {
        let mut tasks: Vec<_> = (0..batch)
            .map(|_| engine.new_task(&audio.samples, opts.clone()).unwrap())
            .collect();
        let mut refs: Vec<_> = tasks.iter_mut().collect();
        engine.encode(&mut refs).unwrap();
        engine.decode_step(&mut refs).unwrap(); // the prompt
        let steps = 20;
        let t = Instant::now();
        for _ in 0..steps {
            engine.decode_step(&mut refs).unwrap();
        }
        let per = t.elapsed().as_secs_f64() / steps as f64;
        println!(
            "decode step, {batch} sequences: {:.2} ms ({:.2} ms/token)",
            per * 1e3,
            per * 1e3 / batch as f64
        );
    }
    let (s, out) = best(rounds, || engine.transcribe(&audio.samples, &opts).unwrap());
    let tokens: usize = out.segments.iter().map(|s| s.tokens.len()).sum();
    println!(
        "transcribe {:.1} s audio: {:.3} s, RTF {:.4}, {} segments, {} tokens",
        audio.duration_seconds,
        s,
        s / audio.duration_seconds,
        out.segments.len(),
        tokens
    );
    println!("{}", out.text);
}
