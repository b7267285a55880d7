//! Benchmarks LLM servers on the same GGUF, alternating them in one run so a busy machine
//! hurts both alike, and prints each figure side by side with the ratio.
//!
//! ```text
//! llm-bench --surge target/release/surge --surge-model smollm2-135m-instruct \
//!           --llama-server /path/to/llama-server --gguf model.gguf
//! ```
//! Measures: spawn → ready, prefill tok/s (~400-token prompt), single-stream decode tok/s,
//! aggregate tok/s and TTFT at 1/4/16 concurrent streams, peak RSS (VmHWM).

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use clap::Parser;
use serde_json::{json, Value};
use surge_loadtest::server::{free_port, peak_rss_mib, stop, wait_ready};
use surge_loadtest::sse::stream_chat;
use surge_loadtest::stats::{median, quantile};

#[derive(Parser)]
struct Args {
    /// The surge binary (runs `surge worker`).
    #[arg(long)]
    surge: Option<PathBuf>,
    #[arg(long, default_value = "smollm2-135m-instruct")]
    surge_model: String,
    /// An extra `surge worker` argument (repeatable), e.g. `--surge-arg=--no-prefix-cache`
    /// to measure the engine without reuse of the chat template's shared prefix.
    #[arg(long = "surge-arg", allow_hyphen_values = true)]
    surge_args: Vec<String>,
    /// llama.cpp's llama-server binary.
    #[arg(long)]
    llama_server: Option<PathBuf>,
    /// GGUF for llama-server (surge reads its model from the cache).
    #[arg(long)]
    gguf: Option<PathBuf>,
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Rounds per server; figures are medians over rounds.
    #[arg(long, default_value_t = 2)]
    rounds: usize,
    #[arg(long, default_value = "1,4,16")]
    concurrency: String,
    #[arg(long, default_value_t = 128)]
    decode_tokens: u32,
    #[arg(long, default_value_t = 64)]
    stream_tokens: u32,
}

struct Server {
    name: &'static str,
    cmd: Command,
    port: u16,
}

#[derive(Default, Clone)]
struct Figures {
    ready_s: Vec<f64>,
    prefill_tok_s: Vec<f64>,
    decode_tok_s: Vec<f64>,
    /// concurrency → (aggregate tok/s, ttft p50, ttft p99) per round
    conc: Vec<(usize, f64, f64, f64)>,
    peak_rss_mb: Vec<f64>,
}

fn main() {
    let args = Args::parse();
    let conc: Vec<usize> = args
        .concurrency
        .split(',')
        .filter_map(|c| c.trim().parse().ok())
        .collect();
    let mut servers = Vec::new();
    if let Some(bin) = &args.surge {
        let port = free_port();
        let mut cmd = Command::new(bin);
        cmd.args([
            "worker",
            "--model",
            &args.surge_model,
            "--listen",
            &format!("tcp:127.0.0.1:{port}"),
        ])
        .args(["--max-num-seqs", "16"])
        .args(&args.surge_args)
        .env("SURGE_LOG", "warn");
        servers.push(Server {
            name: "surge",
            cmd,
            port,
        });
    }
    if let (Some(bin), Some(gguf)) = (&args.llama_server, &args.gguf) {
        let port = free_port();
        let mut cmd = Command::new(bin);
        cmd.arg("-m")
            .arg(gguf)
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args([
                "-t",
                &args.threads.to_string(),
                "-tb",
                &args.threads.to_string(),
            ])
            .args([
                "--parallel",
                "16",
                "--cont-batching",
                "-c",
                "16384",
                "--log-disable",
            ]);
        servers.push(Server {
            name: "llama.cpp",
            cmd,
            port,
        });
    }
    if servers.is_empty() {
        eprintln!("nothing to benchmark: pass --surge and/or --llama-server with --gguf");
        std::process::exit(2);
    }
    let mut figures: Vec<Figures> = vec![Figures::default(); servers.len()];
    for round in 0..args.rounds {
        for (i, s) in servers.iter_mut().enumerate() {
            eprintln!("round {} / {}: {}", round + 1, args.rounds, s.name);
            if let Err(e) = run_suite(s, &args, &conc, &mut figures[i]) {
                eprintln!("{}: {e}", s.name);
                std::process::exit(1);
            }
        }
    }
    report(&servers, &figures, &conc);
}

fn run_suite(s: &mut Server, args: &Args, conc: &[usize], f: &mut Figures) -> Result<(), String> {
    let base = format!("http://127.0.0.1:{}", s.port);
    let spawned = Instant::now();
    let mut child = s
        .cmd
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("spawn: {e}"))?;
    let result = (|| {
        wait_ready(&base, &mut child, Duration::from_secs(300))?;
        f.ready_s.push(spawned.elapsed().as_secs_f64());
        chat(&base, "Say hello.", 4)?; // warm-up

        // Prefill: a unique ~400-token prompt each time so no server can reuse a cached prefix.
        let mut pre = Vec::new();
        for i in 0..3 {
            let prompt = format!("Request {} {i}. {}", rand_id(), LONG_TEXT);
            let t = Instant::now();
            let body = chat(&base, &prompt, 1)?;
            let n = body["usage"]["prompt_tokens"].as_f64().unwrap_or(0.0);
            pre.push(n / t.elapsed().as_secs_f64());
        }
        f.prefill_tok_s.push(median(&pre));

        let t = stream_chat(
            &base,
            &stream_body(
                &format!(
                    "Request {}. Write a long story about a lighthouse.",
                    rand_id()
                ),
                args.decode_tokens,
            ),
        )?;
        f.decode_tok_s.push(t.decode_tok_s());

        for &c in conc {
            let wall = Instant::now();
            let runs: Vec<Result<_, String>> = std::thread::scope(|sc| {
                let hs: Vec<_> = (0..c)
                    .map(|i| {
                        let base = &base;
                        let n = args.stream_tokens;
                        sc.spawn(move || {
                            stream_chat(
                                base,
                                &stream_body(
                                    &format!(
                                        "Request {} {i}. {}",
                                        rand_id(),
                                        TOPICS[i % TOPICS.len()]
                                    ),
                                    n,
                                ),
                            )
                        })
                    })
                    .collect();
                hs.into_iter()
                    .map(|h| h.join().unwrap_or_else(|_| Err("panicked".into())))
                    .collect()
            });
            let wall = wall.elapsed().as_secs_f64();
            let runs: Vec<_> = runs.into_iter().collect::<Result<_, _>>()?;
            let tokens: u64 = runs.iter().map(|r| r.tokens()).sum();
            let ttfts: Vec<f64> = runs.iter().map(|r| r.ttft).collect();
            f.conc.push((
                c,
                tokens as f64 / wall,
                median(&ttfts),
                quantile(&ttfts, 0.99),
            ));
        }
        f.peak_rss_mb.push(peak_rss_mib(child.id()));
        Ok(())
    })();
    stop(&mut child);
    result
}

fn stream_body(prompt: &str, max_tokens: u32) -> Value {
    json!({
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": max_tokens, "temperature": 0, "stream": true, "ignore_eos": true,
        "stream_options": {"include_usage": true},
    })
}

fn chat(base: &str, prompt: &str, max_tokens: u32) -> Result<Value, String> {
    let body = json!({"messages": [{"role": "user", "content": prompt}], "max_tokens": max_tokens, "temperature": 0});
    let resp = ureq::post(&format!("{base}/v1/chat/completions"))
        .timeout(Duration::from_secs(600))
        .send_string(&body.to_string())
        .map_err(|e| e.to_string())?;
    resp.into_json().map_err(|e| e.to_string())
}

fn rand_id() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

fn report(servers: &[Server], figs: &[Figures], conc: &[usize]) {
    let mut rows: Vec<(String, Vec<f64>, bool)> = vec![
        (
            "ready after spawn (s)".into(),
            figs.iter().map(|f| median(&f.ready_s)).collect(),
            false,
        ),
        (
            "prefill (tok/s)".into(),
            figs.iter().map(|f| median(&f.prefill_tok_s)).collect(),
            true,
        ),
        (
            "decode, 1 stream (tok/s)".into(),
            figs.iter().map(|f| median(&f.decode_tok_s)).collect(),
            true,
        ),
    ];
    for &c in conc {
        let pick = |f: &Figures, k: usize| -> f64 {
            let v: Vec<f64> = f
                .conc
                .iter()
                .filter(|x| x.0 == c)
                .map(|x| [x.1, x.2, x.3][k])
                .collect();
            median(&v)
        };
        rows.push((
            format!("aggregate, {c} streams (tok/s)"),
            figs.iter().map(|f| pick(f, 0)).collect(),
            true,
        ));
        rows.push((
            format!("TTFT p50, {c} streams (s)"),
            figs.iter().map(|f| pick(f, 1)).collect(),
            false,
        ));
        rows.push((
            format!("TTFT p99, {c} streams (s)"),
            figs.iter().map(|f| pick(f, 2)).collect(),
            false,
        ));
    }
    rows.push((
        "peak RSS (MiB)".into(),
        figs.iter().map(|f| median(&f.peak_rss_mb)).collect(),
        false,
    ));
    let names: Vec<&str> = servers.iter().map(|s| s.name).collect();
    print!("| metric |");
    for n in &names {
        print!(" {n} |");
    }
    println!(
        "{}",
        if names.len() == 2 {
            " surge ÷ llama.cpp |"
        } else {
            ""
        }
    );
    println!(
        "|---|{}{}",
        "---|".repeat(names.len()),
        if names.len() == 2 { "---|" } else { "" }
    );
    for (name, vals, higher_better) in rows {
        print!("| {name} |");
        for v in &vals {
            print!(" {v:.3} |");
        }
        if vals.len() == 2 && vals[1] > 0.0 {
            let r = vals[0] / vals[1];
            print!(
                " {r:.2}× {} |",
                if higher_better {
                    "(higher is better)"
                } else {
                    "(lower is better)"
                }
            );
        }
        println!();
    }
}

const TOPICS: &[&str] = &[
    "Write a long story about a dragon.",
    "Explain how rain forms, in detail.",
    "Describe a busy market in a big city.",
    "Write a letter to a friend about your holiday.",
    "Explain how a bicycle works.",
    "Describe the life of a honeybee.",
    "Write a poem about winter mornings.",
    "Explain why the sky is blue.",
];

const LONG_TEXT: &str = "The history of the lighthouse is long and varied. Ancient sailors relied on fires \
lit on hilltops to guide them home, and the Pharos of Alexandria, built in the third century BC, stood \
for more than a thousand years as one of the wonders of the world. In the centuries that followed, towers \
of stone and brick rose along dangerous coasts, their lamps burning wood, coal, whale oil and later \
kerosene. The invention of the Fresnel lens in 1822 changed everything: a series of concentric glass \
prisms could bend the light of a single flame into a powerful beam visible for twenty miles or more. \
Keepers lived in small cottages beside the towers, trimming wicks, polishing brass and winding the \
clockwork that turned the lens through the night. Storms battered the towers, and keepers were sometimes \
cut off from the mainland for weeks. Electricity arrived in the twentieth century, and with it automation: \
one by one the keepers left, replaced by timers, sensors and remote monitoring. Today satellite navigation \
guides most ships, yet lighthouses still stand, some as museums, some as working aids to navigation, all \
as reminders of the people who kept the lights burning. Summarize this text in one sentence, then list \
three facts from it, then explain which fact you find most surprising and why.";
