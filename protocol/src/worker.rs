//! The gateway ↔ worker contract: how a worker is started ([`WorkerOptions`], the
//! `surge worker` command line, and [`Listen`], where it listens) and how it reports
//! readiness ([`health`]: the `/health` body and the client the gateway polls it with).
//!
//! The gateway builds a worker's argv with [`WorkerOptions::to_args`]; `surge worker`
//! parses it with the same [`clap::Args`] derive, so the two cannot disagree about a flag,
//! a default or a spelling.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;

use clap::{Args, FromArgMatches, Parser};

pub mod health;

/// The environment variable a parent sets to the Unix time (ns) at which it spawned the
/// worker, so the worker can measure its `exec` phase (see [`health::Startup`]).
pub const SPAWNED_AT_ENV: &str = "SURGE_SPAWNED_AT_UNIX_NS";

/// A shared secret for a worker on another machine (in the environment, not on the
/// command line where `ps` shows it): when set, every request but `GET /health` must
/// carry `Authorization: Bearer <secret>`, which only the gateway knows.
pub const SECRET_ENV: &str = "SURGE_WORKER_SECRET";

/// Everything `surge worker` accepts. `surge worker` flattens it into its command line;
/// the gateway renders it back with [`WorkerOptions::to_args`].
#[derive(Args, Debug, Clone, PartialEq)]
pub struct WorkerOptions {
    /// Model name or alias in the cache.
    #[arg(long)]
    pub model: String,
    /// unix:PATH or tcp:HOST:PORT.
    #[arg(long, default_value = "tcp:127.0.0.1:9000")]
    pub listen: Listen,
    /// cpu, cuda or cuda:N (CUDA needs a build with the `cuda` feature).
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Cache directory (default: $SURGE_HOME, else ~/.cache/surge).
    #[arg(long, value_name = "DIR")]
    pub home: Option<PathBuf>,
    /// Most sequences decoded together in one step.
    #[arg(long, default_value_t = 16)]
    pub max_num_seqs: usize,
    /// Memory for the KV caches of all running sequences, in MiB.
    #[arg(long, default_value_t = 1024)]
    pub kv_cache_mb: usize,
    /// Most prompt tokens prefilled per step, so long prompts cannot stall running streams.
    #[arg(long, default_value_t = 256)]
    pub prefill_chunk: usize,
    /// max_tokens for chat requests that give none (bounded by the context).
    #[arg(long, default_value_t = 1024)]
    pub default_max_tokens: usize,
    /// Serve a shorter context than the model's own.
    #[arg(long)]
    pub max_context: Option<usize>,
    /// Largest request body accepted, in bytes [default: 4194304 (4 MiB) for LLMs,
    /// 26214400 (25 MiB, OpenAI's upload limit) for Whisper].
    #[arg(long)]
    pub max_body_bytes: Option<usize>,
    /// Whisper: longest audio accepted, in seconds; longer uploads get a 400.
    #[arg(long, default_value_t = 1800.0)]
    pub max_audio_seconds: f64,
    /// Whisper: most sequences decoded together in one step.
    #[arg(long, default_value_t = 8)]
    pub max_batch: usize,
    /// Whisper: most 30 s windows encoded together in one step. On a CPU 1 is fastest
    /// (the encoder is compute-bound; batches of 4 measured 10% slower per window).
    #[arg(long, default_value_t = 1)]
    pub encode_batch: usize,
    /// Whisper: how long a lone window waits for others to encode with, in milliseconds
    /// (only with --encode-batch above 1).
    #[arg(long, default_value_t = 5)]
    pub batch_wait_ms: u64,
    /// Exit when the parent process exits (the gateway sets this).
    #[arg(long)]
    pub exit_with_parent: bool,
    /// LLM: repack the weights on every start instead of mapping (or writing) the
    /// model cache's packed-weights file (for measuring what the file saves).
    #[arg(long)]
    pub no_packed_weights: bool,
    /// LLM: do not keep finished sequences' KV caches for prompts that start the same
    /// way. The prefix cache is on by default where reuse is exact (the CPU kernels'
    /// chunk-invariant attention: a reused prefix gives the same tokens as a cold
    /// prefill); on other attention paths it stays off.
    #[arg(long)]
    pub no_prefix_cache: bool,
    /// Compute threads: the size of the kernel pool and of candle's and rayon's pools
    /// (CANDLE_NUM_THREADS, RAYON_NUM_THREADS; this flag wins over them) [default: every
    /// core]. The gateway passes its pool's `worker_cores`, rounded up, for CPU workers.
    #[arg(long, value_name = "N", value_parser = parse_threads)]
    pub threads: Option<usize>,
}

fn parse_threads(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(e) => Err(e.to_string()),
    }
}

/// `surge worker`'s options as a command of their own, for parsing them outside the
/// binary (round trips, the gateway's `worker_args`).
#[derive(Parser, Debug)]
#[command(name = "surge worker", no_binary_name = true)]
pub struct WorkerCli {
    #[command(flatten)]
    pub options: WorkerOptions,
}

impl WorkerOptions {
    /// Parses `surge worker` arguments (without the program name and `worker`), as the
    /// worker will.
    pub fn parse_args<I, T>(args: I) -> Result<WorkerOptions, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString> + Clone,
    {
        WorkerCli::try_parse_from(args).map(|c| c.options)
    }

    /// Like [`WorkerOptions::parse_args`], also returning clap's matches (which flags were
    /// given on the command line, see [`clap::ArgMatches::value_source`]; the ids are the
    /// field names).
    pub fn parse_args_with_matches<I, T>(
        args: I,
    ) -> Result<(WorkerOptions, clap::ArgMatches), clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString> + Clone,
    {
        use clap::CommandFactory;
        let matches = WorkerCli::command().try_get_matches_from(args)?;
        let cli = WorkerCli::from_arg_matches(&matches)?;
        Ok((cli.options, matches))
    }

    /// The options `surge worker --model MODEL` runs with: every other flag at its default.
    pub fn defaults(model: &str) -> WorkerOptions {
        Self::parse_args(["--model", model]).expect("the defaults parse")
    }

    /// The `surge worker` arguments (after `worker`) that parse back to `self`: `--model`,
    /// `--listen` and `--device` always, every other flag only where it differs from its
    /// default.
    pub fn to_args(&self) -> Vec<String> {
        let d = Self::defaults(&self.model);
        let mut out = Vec::new();
        let mut flag = |name: &str, value: String| {
            // `--max-audio-seconds -1` would read as two flags; `=` keeps it one value.
            if value.starts_with('-') {
                out.push(format!("--{name}={value}"));
            } else {
                out.push(format!("--{name}"));
                out.push(value);
            }
        };
        flag("model", self.model.clone());
        flag("listen", self.listen.to_string());
        flag("device", self.device.clone());
        if let Some(h) = &self.home {
            flag("home", h.to_string_lossy().into_owned());
        }
        let mut differing = |name: &str, v: String, default: String| {
            if v != default {
                flag(name, v);
            }
        };
        let s = |v: &dyn ToString| v.to_string();
        differing("max-num-seqs", s(&self.max_num_seqs), s(&d.max_num_seqs));
        differing("kv-cache-mb", s(&self.kv_cache_mb), s(&d.kv_cache_mb));
        differing("prefill-chunk", s(&self.prefill_chunk), s(&d.prefill_chunk));
        differing(
            "default-max-tokens",
            s(&self.default_max_tokens),
            s(&d.default_max_tokens),
        );
        differing(
            "max-audio-seconds",
            s(&self.max_audio_seconds),
            s(&d.max_audio_seconds),
        );
        differing("max-batch", s(&self.max_batch), s(&d.max_batch));
        differing("encode-batch", s(&self.encode_batch), s(&d.encode_batch));
        differing("batch-wait-ms", s(&self.batch_wait_ms), s(&d.batch_wait_ms));
        if let Some(n) = self.max_context {
            flag("max-context", n.to_string());
        }
        if let Some(n) = self.max_body_bytes {
            flag("max-body-bytes", n.to_string());
        }
        if let Some(n) = self.threads {
            flag("threads", n.to_string());
        }
        if self.exit_with_parent {
            out.push("--exit-with-parent".into());
        }
        if self.no_packed_weights {
            out.push("--no-packed-weights".into());
        }
        if self.no_prefix_cache {
            out.push("--no-prefix-cache".into());
        }
        out
    }
}

/// Where a worker listens: `unix:PATH` (what the gateway uses) or `tcp:ADDR` (standalone).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Listen {
    Unix(PathBuf),
    Tcp(SocketAddr),
}

impl FromStr for Listen {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if let Some(p) = s.strip_prefix("unix:") {
            if p.is_empty() {
                return Err("unix: needs a socket path".into());
            }
            return Ok(Listen::Unix(p.into()));
        }
        let addr = s.strip_prefix("tcp:").unwrap_or(s);
        addr.parse()
            .map(Listen::Tcp)
            .map_err(|e| format!("'{s}' is neither unix:PATH nor tcp:HOST:PORT ({e})"))
    }
}

impl std::fmt::Display for Listen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Listen::Unix(p) => write!(f, "unix:{}", p.display()),
            Listen::Tcp(a) => write!(f, "tcp:{a}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_parses_both_forms() {
        assert_eq!(
            "unix:/tmp/w.sock".parse::<Listen>().unwrap(),
            Listen::Unix("/tmp/w.sock".into())
        );
        assert_eq!(
            "tcp:127.0.0.1:9000".parse::<Listen>().unwrap(),
            Listen::Tcp("127.0.0.1:9000".parse().unwrap())
        );
        assert!("127.0.0.1:9000".parse::<Listen>().is_ok());
        assert!("unix:".parse::<Listen>().is_err());
        assert!("nonsense".parse::<Listen>().is_err());
        for s in ["unix:/tmp/w 1.sock", "tcp:127.0.0.1:9000", "tcp:[::1]:80"] {
            assert_eq!(s.parse::<Listen>().unwrap().to_string(), s);
        }
    }

    #[test]
    fn defaults_are_the_documented_ones() {
        let d = WorkerOptions::defaults("m");
        assert_eq!(d.model, "m");
        assert_eq!(d.listen, "tcp:127.0.0.1:9000".parse().unwrap());
        assert_eq!(d.device, "cpu");
        assert_eq!(
            (d.max_num_seqs, d.kv_cache_mb, d.prefill_chunk),
            (16, 1024, 256)
        );
        assert_eq!(d.default_max_tokens, 1024);
        assert_eq!(
            (d.max_context, d.max_body_bytes, d.threads),
            (None, None, None)
        );
        assert_eq!(d.max_audio_seconds, 1800.0);
        assert_eq!((d.max_batch, d.encode_batch, d.batch_wait_ms), (8, 1, 5));
        assert!(!d.exit_with_parent && d.home.is_none());
        assert_eq!(
            d.to_args(),
            [
                "--model",
                "m",
                "--listen",
                "tcp:127.0.0.1:9000",
                "--device",
                "cpu"
            ]
        );
    }

    #[test]
    fn to_args_round_trips() {
        let d = WorkerOptions::defaults("smollm2-135m-instruct");
        assert_eq!(WorkerOptions::parse_args(d.to_args()).unwrap(), d);
        let x = WorkerOptions {
            model: "whisper-tiny.en".into(),
            listen: Listen::Unix("/tmp/surge sockets/w1-42.sock".into()),
            device: "cuda:1".into(),
            home: Some("/var/cache/surge".into()),
            max_num_seqs: 32,
            kv_cache_mb: 64,
            prefill_chunk: 128,
            default_max_tokens: 7,
            max_context: Some(2048),
            max_body_bytes: Some(1000),
            max_audio_seconds: 12.5,
            max_batch: 3,
            encode_batch: 4,
            batch_wait_ms: 0,
            exit_with_parent: true,
            no_packed_weights: true,
            no_prefix_cache: true,
            threads: Some(3),
        };
        let args = x.to_args();
        assert_eq!(WorkerOptions::parse_args(&args).unwrap(), x, "{args:?}");
        assert!(args.windows(2).any(|w| w == ["--threads", "3"]), "{args:?}");
        // A value that looks like a flag still round-trips (the worker rejects it later).
        let neg = WorkerOptions {
            max_audio_seconds: -1.0,
            ..d.clone()
        };
        assert_eq!(WorkerOptions::parse_args(neg.to_args()).unwrap(), neg);
    }

    #[test]
    fn bad_arguments_are_clap_errors() {
        let e = WorkerOptions::parse_args(["--model", "m", "--max-num-seq", "3"]).unwrap_err();
        assert!(e.to_string().contains("--max-num-seqs"), "{e}");
        assert!(WorkerOptions::parse_args(["--model", "m", "--threads", "0"]).is_err());
        assert!(WorkerOptions::parse_args(["--max-num-seqs", "3"]).is_err());
        let (_, m) =
            WorkerOptions::parse_args_with_matches(["--model", "m", "--threads", "2"]).unwrap();
        assert_eq!(
            m.value_source("threads"),
            Some(clap::parser::ValueSource::CommandLine)
        );
        assert_eq!(
            m.value_source("listen"),
            Some(clap::parser::ValueSource::DefaultValue)
        );
    }
}
