//! `surge-loadtest`: the command line of the load tester (the logic lives in the
//! library, `surge_loadtest::run`). Exit codes: 0 passed, 1 a `--fail-on` assertion
//! failed, 2 a usage or setup error (nothing was measured), 130 interrupted by Ctrl-C
//! (the report of what ran is still written).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use surge_loadtest::run::{run, RunOptions};
use surge_loadtest::speech::{synthesize, Corpus};

#[derive(Parser)]
#[command(
    name = "surge-loadtest",
    about = "Open-loop load tests of OpenAI-compatible endpoints: spikes, TTFT, goodput, SLO checks"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run a scenario and write report.json, requests.jsonl and plot.svg.
    Run {
        /// The scenario (TOML).
        scenario: PathBuf,
        /// Base URL of the server, without /v1 (overrides the scenario's `target`).
        #[arg(long)]
        target: Option<String>,
        /// Output directory [default: loadtest-results/NAME-UNIXTIME].
        #[arg(long)]
        out: Option<PathBuf>,
        /// An assertion that must hold, e.g. 'status_5xx == 0', 'ttft_p95 < 2s',
        /// 'error_rate < 1%', 'phase.spike.e2e_p99 < 30'; repeatable. Exit 1 if one fails.
        #[arg(long = "fail-on", value_name = "EXPR")]
        fail_on: Vec<String>,
        /// Send at most N requests (overrides the scenario's limits.max_requests).
        #[arg(long, value_name = "N")]
        max_requests: Option<usize>,
        /// Stop everything after S seconds, cancelling requests still running.
        #[arg(long, value_name = "S")]
        max_duration: Option<f64>,
        /// No progress line and no summary table (the files are still written).
        #[arg(long, short)]
        quiet: bool,
    },
    /// Synthesise the speech corpus sentences of testdata/speech/ into DIR as
    /// sentence1.wav … (espeak-ng + sox), for transcription classes.
    Clips { dir: PathBuf },
}

fn main() -> ExitCode {
    match Cli::parse().cmd {
        Cmd::Run {
            scenario,
            target,
            out,
            fail_on,
            max_requests,
            max_duration,
            quiet,
        } => {
            let opts = RunOptions {
                scenario,
                target,
                out,
                fail_on,
                max_requests,
                max_duration,
                quiet,
            };
            match run(&opts) {
                Ok(o) => {
                    for f in &o.failures {
                        eprintln!("{f}");
                    }
                    if !o.failures.is_empty() {
                        ExitCode::from(1)
                    } else if o.report.interrupted {
                        ExitCode::from(130)
                    } else {
                        ExitCode::SUCCESS
                    }
                }
                Err(e) => {
                    eprintln!("surge-loadtest: {e}");
                    ExitCode::from(2)
                }
            }
        }
        Cmd::Clips { dir } => match clips(&dir) {
            Ok(n) => {
                println!("{n} clips in {}", dir.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("surge-loadtest: {e}");
                ExitCode::from(2)
            }
        },
    }
}

fn clips(dir: &std::path::Path) -> Result<usize, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let corpus = Corpus::default_corpus()?;
    for (i, text) in corpus.sentences.iter().enumerate() {
        synthesize(text, dir, &format!("sentence{}", i + 1), &["wav"])?;
    }
    Ok(corpus.sentences.len())
}
