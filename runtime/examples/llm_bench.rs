//! Throughput of the LLM engine core: load, prefill, single-stream decode and
//! aggregate decode at several batch sizes.
//!
//! ```text
//! cargo run --release -p surge-runtime --example llm_bench -- [--format auto|as-stored|q8_0|f32]
//!     [--k-padding balanced|all|off] [--steps 32] [--batches 1,4,16]
//! ```
//! The model comes from `SURGE_TEST_GGUF` (default `/tmp/models/smollm2.gguf`).
//! Run on a quiet machine: on 2 cores a concurrent build collapses the numbers.

use std::time::Instant;

use candle_core::Device;
use surge_runtime::llm::test_support::test_gguf_path;
use surge_runtime::llm::*;

struct Args {
    format: WeightFormat,
    padding: KPadding,
    steps: usize,
    batches: Vec<usize>,
}

fn parse_args() -> std::result::Result<Args, String> {
    let mut args = Args {
        format: WeightFormat::Auto,
        padding: KPadding::Balanced,
        steps: 32,
        batches: vec![1, 4, 16],
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().ok_or(format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--format" => {
                args.format = match value.as_str() {
                    "auto" => WeightFormat::Auto,
                    "as-stored" => WeightFormat::AsStored,
                    "q8_0" => WeightFormat::Q8_0,
                    "f32" => WeightFormat::F32,
                    other => return Err(format!("unknown format {other}")),
                }
            }
            "--k-padding" => {
                args.padding = match value.as_str() {
                    "balanced" => KPadding::Balanced,
                    "all" => KPadding::All,
                    "off" => KPadding::Off,
                    other => return Err(format!("unknown k padding {other}")),
                }
            }
            "--steps" => args.steps = value.parse().map_err(|e| format!("--steps: {e}"))?,
            "--batches" => {
                args.batches = value
                    .split(',')
                    .map(|b| b.parse().map_err(|e| format!("--batches: {e}")))
                    .collect::<std::result::Result<_, _>>()?
            }
            other => return Err(format!("unknown flag {other}")),
        }
    }
    Ok(args)
}

/// Greedy-decodes `steps` tokens for every cache together and returns the
/// seconds spent (forward + logits copy + sampling, as a scheduler would).
fn decode_together(
    model: &LlmModel,
    caches: &mut [SeqCache],
    last: &mut [u32],
    steps: usize,
) -> Result<f64> {
    let mut samplers: Vec<Sampler> = caches
        .iter()
        .map(|_| Sampler::new(SamplingParams::greedy()))
        .collect::<Result<_>>()?;
    let started = Instant::now();
    for _ in 0..steps {
        let inputs: Vec<[u32; 1]> = last.iter().map(|&t| [t]).collect();
        let mut batch = BatchItem::pack(&inputs, caches);
        let logits = logits_rows(&model.step(&mut batch)?)?;
        for ((row, s), t) in logits.iter().zip(&mut samplers).zip(last.iter_mut()) {
            *t = s.sample(row)?.token;
        }
    }
    Ok(started.elapsed().as_secs_f64())
}

fn run(args: Args) -> Result<()> {
    let path = test_gguf_path();
    let dev = Device::Cpu;
    let opts = LoadOptions {
        weight_format: args.format,
        k_padding: args.padding,
        ..LoadOptions::default()
    };
    let model = LlmModel::load(&path, &dev, &opts)?;
    let r = model.load_report();
    println!(
        "load: {:.3} s, weights {:.1} MB, layers {} -> {}, format {:?}, k padding {:?} (applied: {}), CANDLE_NUM_THREADS={}",
        r.load_seconds,
        r.weight_bytes as f64 / 1e6,
        r.stored_dtype,
        r.memory_dtype,
        args.format,
        r.k_padding,
        r.k_padded,
        std::env::var("CANDLE_NUM_THREADS").unwrap_or_else(|_| "default".into())
    );

    if let (Some(now), Some(peak)) = (rss_mb("VmRSS:"), rss_mb("VmHWM:")) {
        println!("RSS after load: {now:.0} MB (peak so far {peak:.0} MB)");
    }
    let gguf = GgufFile::open(&path)?;
    let tok = Tokenizer::from_gguf(&gguf)?;
    let tmpl = ChatTemplate::from_gguf(&gguf, None)?;
    let long = "Summarise the following in two sentences. The history of the printing press \
        begins with movable type in East Asia and continues with Johannes Gutenberg, whose \
        press in Mainz around 1450 combined oil-based ink, a screw press and durable metal \
        type. Within decades printing spread across Europe, lowering the cost of books, \
        spreading literacy and helping the Reformation and the scientific revolution.";
    let prompt = tok.encode(&tmpl.render(&[ChatMessage::new("user", long)], true)?)?;

    // Prefill: best of 3 so one scheduling hiccup does not define the figure.
    let mut best = f64::MAX;
    let mut cache = model.new_sequence_cache();
    for _ in 0..3 {
        cache = model.new_sequence_cache();
        let t = Instant::now();
        model.step(&mut [BatchItem {
            tokens: &prompt,
            cache: &mut cache,
        }])?;
        best = best.min(t.elapsed().as_secs_f64());
    }
    println!(
        "prefill: {} tokens in {:.3} s = {:.1} tok/s",
        prompt.len(),
        best,
        prompt.len() as f64 / best
    );

    let mut last = [prompt[prompt.len() - 1]];
    let secs = decode_together(
        &model,
        std::slice::from_mut(&mut cache),
        &mut last,
        args.steps,
    )?;
    println!(
        "decode single stream (context {}..{}): {:.1} tok/s",
        prompt.len(),
        prompt.len() + args.steps,
        args.steps as f64 / secs
    );

    for &b in &args.batches {
        let mut caches: Vec<SeqCache> = (0..b).map(|_| model.new_sequence_cache()).collect();
        let mut last = Vec::with_capacity(b);
        for (i, c) in caches.iter_mut().enumerate() {
            let p = tok.encode(&tmpl.render(
                &[ChatMessage::new(
                    "user",
                    format!("Tell me fact number {i} about the sea."),
                )],
                true,
            )?)?;
            model.step(&mut [BatchItem {
                tokens: &p,
                cache: c,
            }])?;
            last.push(p[p.len() - 1]);
        }
        let secs = decode_together(&model, &mut caches, &mut last, args.steps)?;
        let agg = (b * args.steps) as f64 / secs;
        println!(
            "decode batch {b:>2}: {:.1} tok/s aggregate, {:.1} tok/s per stream, {:.1} ms/step",
            agg,
            agg / b as f64,
            secs * 1e3 / args.steps as f64
        );
    }
    if let Some(mb) = rss_mb("VmHWM:") {
        println!("peak RSS: {mb:.0} MB");
    }
    Ok(())
}

/// Resident memory of this process (`VmRSS`, or the peak with `VmHWM`).
fn rss_mb(field: &str) -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    if let Err(e) = run(args) {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}
