//! Times loading whisper-tiny.en from the cache (for profiling cold starts).
fn main() {
    let cache = surge_models::ModelCache::open_default().unwrap();
    let m = cache.resolve("whisper-tiny.en").unwrap();
    for _ in 0..3 {
        let t = std::time::Instant::now();
        let _e = surge_runtime::whisper::WhisperEngine::load(
            m.path("model.bin").unwrap(),
            m.path("config.json").unwrap(),
            m.path("tokenizer.json").unwrap(),
            &candle_core::Device::Cpu,
        )
        .unwrap();
        println!("load {:.3} s", t.elapsed().as_secs_f64());
    }
}
