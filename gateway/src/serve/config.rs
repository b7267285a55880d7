//! The gateway's configuration: built-in defaults, overridden by a TOML file
//! (`--config`), then by environment variables, then by flags.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use surge_protocol::worker::WorkerOptions;

use crate::metering::export::ExportConfig;
use crate::metering::keys::BudgetPeriod;
use crate::metering::prices::Billing;

/// Everything `surge serve` runs with.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// Where clients connect (default 127.0.0.1:8080).
    pub listen: SocketAddr,
    /// Model cache (default: $SURGE_HOME, else ~/.cache/surge).
    pub home: Option<PathBuf>,
    /// Where the ledger database lives (API keys; usage): default `data/` in the model
    /// cache's root.
    pub data_dir: Option<PathBuf>,
    /// Pull the catalog's default models when missing (with progress) before serving.
    pub pull_defaults: bool,
    /// Pool settings for models without their own entry.
    pub defaults: PoolConfig,
    /// Per-model pool settings, by model name (or alias).
    pub models: BTreeMap<String, PoolConfig>,
    /// API keys; empty means no authentication.
    pub keys: Vec<ApiKey>,
    /// Largest JSON request body (413 beyond).
    pub max_body_bytes: usize,
    /// Largest audio upload (413 beyond; OpenAI's limit is 25 MiB).
    pub max_audio_bytes: usize,
    /// How long SIGTERM waits for in-flight requests before cutting them.
    pub drain_grace: Duration,
    /// Where worker sockets live (default: a fresh directory under the system temp dir).
    pub socket_dir: Option<PathBuf>,
    /// A streaming request still waiting for a worker after this long gets its SSE
    /// header and then a `: waiting` comment at this interval (proxies in between cut
    /// idle connections).
    pub sse_heartbeat: Duration,
    /// How often the autoscaler looks at every pool.
    pub autoscale_interval: Duration,
    /// CPU cores all CPU workers together may be charged (`worker_cores` each); default
    /// the machine's cores. When full, idle workers of other models are stopped first.
    pub cpu_budget: f64,
    /// Bytes of memory all CPU workers together may be charged (each its estimate
    /// before it runs, its measured resident set after); default 90% of `MemTotal`
    /// ([`super::sizing::default_memory_budget`]), unlimited where unknown.
    pub cpu_memory_budget: f64,
    /// Share of each GPU's memory that workers placed on it may claim.
    pub gpu_memory_fraction: f64,
    /// Record usage, enforce budgets, export, keep the capacity ledger (default true).
    pub metering: bool,
    /// Prices, what is billed, budget reservations (`[billing]`).
    pub billing: Billing,
    /// Usage records as CloudEvents to a file or an HTTP endpoint (`[usage_export]`).
    pub usage_export: Option<ExportConfig>,
    /// OTLP/HTTP base URL traces are exported to (none: traces off).
    pub otlp_endpoint: Option<String>,
    /// Share of new traces kept (0–1).
    pub otlp_sampling_ratio: f64,
}

/// One model's worker pool.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PoolConfig {
    pub min_workers: usize,
    pub max_workers: usize,
    /// Requests one worker serves at once (its batch slots).
    pub concurrency: usize,
    /// An idle worker is stopped after this long (seconds in TOML).
    #[serde(with = "secs")]
    pub idle_timeout: Duration,
    /// Requests that may wait for a worker; beyond that, 429.
    pub queue_size: usize,
    /// Longest wait for a worker; beyond that, 503.
    #[serde(with = "secs")]
    pub queue_timeout: Duration,
    /// Longest a starting worker may take to answer /health.
    #[serde(with = "secs")]
    pub ready_timeout: Duration,
    /// `cpu`, `cuda`, `cuda:N`, or `auto` (a GPU when one fits, else the CPU). CUDA
    /// needs a surge built with the `cuda` feature.
    pub device: String,
    /// Extra `surge worker` arguments (e.g. `["--max-num-seqs", "32"]`), parsed when the
    /// config is read.
    pub worker_args: WorkerArgs,
    /// The autoscaler aims at this share of `concurrency` per worker (Knative's 0.7).
    pub target_utilization: f64,
    /// Demand is averaged over this window for ordinary decisions (seconds in TOML)...
    #[serde(with = "secs")]
    pub stable_window: Duration,
    /// ...and over this one to detect a spike.
    #[serde(with = "secs")]
    pub panic_window: Duration,
    /// Panic (scale up at once, never down) when panic-window demand reaches this
    /// multiple of current capacity.
    pub panic_threshold: f64,
    /// One decision may multiply the worker count by at most this.
    pub max_scale_up_rate: f64,
    /// One decision may remove at most this many workers.
    pub scale_down_step: usize,
    /// CPU cores one CPU worker is charged against the machine's `cpu_budget`; a CPU
    /// worker runs on that many compute threads (`--threads`, rounded up). Unset: a
    /// share of `cpu_budget` weighted by model size
    /// ([`super::sizing::cpu_shares`]), set when the pools are built.
    pub worker_cores: Option<f64>,
    /// An idle worker of this pool may be evicted to make room for another model only
    /// once it has served nothing for this long (seconds in TOML): two busy models on
    /// a full budget would otherwise stop each other's workers in every gap between
    /// requests, and pay a cold start each time.
    #[serde(with = "secs")]
    pub evict_idle_after: Duration,
}

impl PoolConfig {
    /// What one CPU worker is charged: `worker_cores`, or 1 while it is unset.
    pub fn cores(&self) -> f64 {
        self.worker_cores.unwrap_or(1.0)
    }

    /// Compute threads of one CPU worker: `worker_cores` rounded up, at least 1.
    pub fn cpu_threads(&self) -> usize {
        cpu_threads(self.cores())
    }

    /// Charges `cores` per worker unless `worker_cores` was configured.
    pub fn default_worker_cores(&mut self, cores: f64) {
        if self.worker_cores.is_none() {
            // An explicit `--threads` is charged in full.
            let threads = self.worker_args.options().threads.unwrap_or(0);
            let cores = cores.max(threads as f64);
            self.worker_cores = Some(cores);
            self.worker_args.set_worker_cores(cores);
        }
    }
}

fn cpu_threads(worker_cores: f64) -> usize {
    if worker_cores.is_finite() && worker_cores > 1.0 {
        worker_cores.ceil() as usize
    } else {
        1
    }
}

/// A pool's `worker_args`: extra `surge worker` arguments, parsed once when the config
/// is read, by the same [`WorkerOptions`] the worker parses them with, so a typo fails
/// `surge serve` at start with clap's message instead of making every worker exit.
/// The flags the gateway sets itself (`--model`, `--listen`, `--device`, `--home`,
/// `--exit-with-parent`) are refused here.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(try_from = "Vec<String>")]
pub struct WorkerArgs {
    args: Vec<String>,
    /// The parsed options; `model` is empty (the pool's model is set per worker).
    options: WorkerOptions,
    /// `--threads` for CPU workers that give none: the pool's `worker_cores` rounded up
    /// (kept in step by [`pool_from_table`] and [`GatewayConfig::pool`]).
    cpu_threads: usize,
}

/// Flags of `surge worker` that the gateway sets itself, and where to set them instead.
const GATEWAY_FLAGS: [(&str, &str); 5] = [
    ("--model", "the pool's model"),
    ("--listen", "a socket per worker"),
    ("--device", "the pool's `device`"),
    ("--home", "the top-level `home`"),
    ("--exit-with-parent", "always"),
];

impl WorkerArgs {
    /// Parses extra `surge worker` arguments; the error is clap's message (or names a
    /// flag the gateway sets itself).
    pub fn parse(args: Vec<String>) -> Result<WorkerArgs, String> {
        for a in &args {
            for (flag, instead) in GATEWAY_FLAGS {
                if a == flag || a.strip_prefix(flag).is_some_and(|r| r.starts_with('=')) {
                    return Err(format!(
                        "worker_args: {flag} is set by the gateway ({instead})"
                    ));
                }
            }
        }
        let argv = ["--model".to_string(), String::new()]
            .into_iter()
            .chain(args.iter().cloned());
        let options = WorkerOptions::parse_args(argv)
            .map_err(|e| format!("worker_args {args:?}: {}", clap_message(&e)))?;
        Ok(WorkerArgs {
            args,
            options,
            cpu_threads: 1,
        })
    }

    /// The arguments as written.
    pub fn args(&self) -> &[String] {
        &self.args
    }

    /// The parsed options (`model` empty; `listen`, `device`, `home` and
    /// `exit_with_parent` at their defaults: the gateway sets them per worker).
    pub fn options(&self) -> &WorkerOptions {
        &self.options
    }

    /// `--threads` for a CPU worker whose `worker_args` give none.
    pub fn cpu_threads(&self) -> usize {
        self.cpu_threads
    }

    /// Sets [`WorkerArgs::cpu_threads`] from a pool's `worker_cores`.
    pub fn set_worker_cores(&mut self, worker_cores: f64) {
        self.cpu_threads = cpu_threads(worker_cores);
    }
}

impl Default for WorkerArgs {
    fn default() -> Self {
        WorkerArgs::parse(Vec::new()).expect("no arguments parse")
    }
}

impl TryFrom<Vec<String>> for WorkerArgs {
    type Error = String;
    fn try_from(args: Vec<String>) -> Result<Self, String> {
        WorkerArgs::parse(args)
    }
}

/// clap's error on one line, without its usage and help hints.
fn clap_message(e: &clap::Error) -> String {
    let text = e.to_string();
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| {
            !l.is_empty() && !l.starts_with("Usage:") && !l.starts_with("For more information")
        })
        .collect();
    lines.join("; ").trim_start_matches("error: ").to_string()
}

impl Default for PoolConfig {
    fn default() -> Self {
        Self {
            min_workers: 0,
            max_workers: 1,
            concurrency: 16,
            idle_timeout: Duration::from_secs(60),
            queue_size: 64,
            queue_timeout: Duration::from_secs(60),
            ready_timeout: Duration::from_secs(120),
            device: "auto".into(),
            worker_args: WorkerArgs::default(),
            target_utilization: 0.7,
            stable_window: Duration::from_secs(60),
            panic_window: Duration::from_secs(6),
            panic_threshold: 2.0,
            max_scale_up_rate: 10.0,
            scale_down_step: 1,
            worker_cores: None,
            evict_idle_after: Duration::from_secs(5),
        }
    }
}

/// An API key with its limits.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKey {
    pub key: String,
    /// Tenant name for metrics and metering (default: the key's first 8 characters).
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub requests_per_second: Option<u32>,
    #[serde(default)]
    pub max_concurrent: Option<u32>,
    /// Spending limit in USD per `budget_period` (requests that could exceed it are
    /// refused with 429 `insufficient_quota`).
    #[serde(default)]
    pub budget_usd: Option<f64>,
    #[serde(default)]
    pub budget_period: Option<BudgetPeriod>,
    /// May read every tenant's usage (`/v1/usage?tenant=`).
    #[serde(default)]
    pub admin: bool,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8080".parse().expect("valid address"),
            home: None,
            data_dir: None,
            pull_defaults: true,
            defaults: PoolConfig::default(),
            models: BTreeMap::new(),
            keys: Vec::new(),
            max_body_bytes: 4 << 20,
            max_audio_bytes: 25 << 20,
            drain_grace: Duration::from_secs(30),
            socket_dir: None,
            sse_heartbeat: Duration::from_secs(10),
            autoscale_interval: Duration::from_secs(1),
            cpu_budget: std::thread::available_parallelism()
                .map(|n| n.get() as f64)
                .unwrap_or(2.0),
            cpu_memory_budget: super::sizing::default_memory_budget(),
            gpu_memory_fraction: 0.9,
            metering: true,
            billing: Billing::default(),
            usage_export: None,
            otlp_endpoint: None,
            otlp_sampling_ratio: 1.0,
        }
    }
}

impl GatewayConfig {
    /// Where traces go: `OTEL_EXPORTER_OTLP_ENDPOINT` (and `OTEL_TRACES_SAMPLER_ARG`)
    /// when set, else `otlp_endpoint` (and `otlp_sampling_ratio`); `None`: off.
    pub fn trace(&self) -> Option<crate::telemetry::TraceConfig> {
        crate::telemetry::TraceConfig::from_env().or_else(|| {
            self.otlp_endpoint
                .clone()
                .map(|endpoint| crate::telemetry::TraceConfig {
                    endpoint,
                    sampling_ratio: self.otlp_sampling_ratio,
                })
        })
    }

    /// The pool settings of `model` (its own entry, else the defaults).
    pub fn pool(&self, model: &str, aliases: &[String]) -> PoolConfig {
        let mut p = std::iter::once(model)
            .chain(aliases.iter().map(String::as_str))
            .find_map(|n| self.models.get(n))
            .cloned()
            .unwrap_or_else(|| self.defaults.clone());
        p.worker_args.set_worker_cores(p.cores());
        p
    }
}

/// A top-level duration in seconds, at least `min`.
fn seconds(key: &str, s: f64, min: f64) -> Result<Duration, String> {
    if !(min..=1e9).contains(&s) {
        return Err(format!(
            "{key} = {s}: seconds must be between {min} and 1e9"
        ));
    }
    Ok(Duration::from_secs_f64(s))
}

/// The TOML file's top level (`surge serve --config FILE`).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    listen: Option<String>,
    home: Option<PathBuf>,
    pull_defaults: Option<bool>,
    metering: Option<bool>,
    max_body_bytes: Option<usize>,
    max_audio_bytes: Option<usize>,
    /// Seconds.
    drain_grace: Option<f64>,
    socket_dir: Option<PathBuf>,
    /// Seconds.
    sse_heartbeat: Option<f64>,
    /// Seconds.
    autoscale_interval: Option<f64>,
    cpu_budget: Option<f64>,
    /// Bytes, or a size string ("16GiB", "80%").
    cpu_memory_budget: Option<toml::Value>,
    gpu_memory_fraction: Option<f64>,
    /// Kept raw so `[models.NAME]` tables can inherit the keys they do not set.
    defaults: Option<toml::Table>,
    #[serde(default)]
    models: BTreeMap<String, toml::Table>,
    #[serde(default)]
    keys: Vec<ApiKey>,
    billing: Option<Billing>,
    usage_export: Option<ExportConfig>,
    otlp_endpoint: Option<String>,
    otlp_sampling_ratio: Option<f64>,
}

impl GatewayConfig {
    /// Reads a TOML config: top-level `listen`, `home`, `pull_defaults`,
    /// `max_body_bytes`, `max_audio_bytes`, `drain_grace`, `sse_heartbeat` and
    /// `autoscale_interval` (seconds), `socket_dir`, `cpu_budget`, `cpu_memory_budget`
    /// (bytes or a size string), `gpu_memory_fraction`;
    /// `[defaults]` (a [`PoolConfig`]), `[models.NAME]` (a [`PoolConfig`] that inherits
    /// every key it does not set from `[defaults]`) and `[[keys]]` ([`ApiKey`]).
    /// Unknown keys are errors that name the key.
    pub fn from_toml_str(text: &str) -> Result<GatewayConfig, String> {
        let file: FileConfig = toml::from_str(text).map_err(|e| e.to_string())?;
        let mut cfg = GatewayConfig::default();
        if let Some(l) = file.listen {
            cfg.listen = l
                .parse()
                .map_err(|e| format!("listen = {l:?}: {e} (expected HOST:PORT)"))?;
        }
        cfg.home = file.home.or(cfg.home);
        cfg.pull_defaults = file.pull_defaults.unwrap_or(cfg.pull_defaults);
        cfg.metering = file.metering.unwrap_or(cfg.metering);
        cfg.max_body_bytes = file.max_body_bytes.unwrap_or(cfg.max_body_bytes);
        cfg.max_audio_bytes = file.max_audio_bytes.unwrap_or(cfg.max_audio_bytes);
        if let Some(s) = file.drain_grace {
            cfg.drain_grace = seconds("drain_grace", s, 0.0)?;
        }
        if let Some(s) = file.sse_heartbeat {
            cfg.sse_heartbeat = seconds("sse_heartbeat", s, 0.01)?;
        }
        if let Some(s) = file.autoscale_interval {
            cfg.autoscale_interval = seconds("autoscale_interval", s, 0.01)?;
        }
        cfg.cpu_budget = file.cpu_budget.unwrap_or(cfg.cpu_budget);
        if let Some(v) = &file.cpu_memory_budget {
            let total = super::sizing::mem_total();
            cfg.cpu_memory_budget = super::sizing::parse_size("cpu_memory_budget", v, total)?;
        }
        cfg.gpu_memory_fraction = file.gpu_memory_fraction.unwrap_or(cfg.gpu_memory_fraction);
        cfg.socket_dir = file.socket_dir.or(cfg.socket_dir);
        let defaults = file.defaults.unwrap_or_default();
        cfg.defaults = pool_from_table(defaults.clone()).map_err(|e| format!("[defaults]: {e}"))?;
        for (name, table) in file.models {
            let mut merged = defaults.clone();
            merged.extend(table);
            let pool = pool_from_table(merged).map_err(|e| format!("[models.{name}]: {e}"))?;
            cfg.models.insert(name, pool);
        }
        for (i, k) in file.keys.iter().enumerate() {
            if k.key.is_empty() {
                return Err(format!("[[keys]] #{}: empty key", i + 1));
            }
        }
        for (i, k) in file.keys.iter().enumerate() {
            match (k.budget_usd, k.budget_period) {
                (Some(usd), Some(_)) if usd.is_finite() && usd >= 0.0 => {}
                (None, None) => {}
                (Some(usd), Some(_)) => {
                    return Err(format!(
                        "[[keys]] #{}: budget_usd = {usd} must be a non-negative amount",
                        i + 1
                    ))
                }
                _ => {
                    return Err(format!(
                        "[[keys]] #{}: budget_usd and budget_period go together",
                        i + 1
                    ))
                }
            }
        }
        cfg.keys = file.keys;
        cfg.billing = file.billing.unwrap_or_default();
        cfg.usage_export = file.usage_export;
        cfg.otlp_endpoint = file.otlp_endpoint;
        cfg.otlp_sampling_ratio = file.otlp_sampling_ratio.unwrap_or(cfg.otlp_sampling_ratio);
        cfg.validate()?;
        Ok(cfg)
    }

    /// Reads and parses a TOML config file.
    pub fn from_toml_file(path: &std::path::Path) -> Result<GatewayConfig, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("reading {}: {e}", path.display()))?;
        Self::from_toml_str(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// Checks settings that parse but cannot work.
    pub fn validate(&self) -> Result<(), String> {
        self.validate_for(surge_runtime::CUDA)
    }

    /// [`GatewayConfig::validate`] for a build with (`cuda`) or without CUDA support.
    pub fn validate_for(&self, cuda: bool) -> Result<(), String> {
        let pools = std::iter::once(("[defaults]".to_string(), &self.defaults)).chain(
            self.models
                .iter()
                .map(|(n, p)| (format!("[models.{n}]"), p)),
        );
        for (what, p) in pools {
            if p.max_workers == 0 {
                return Err(format!("{what}: max_workers must be at least 1"));
            }
            if p.min_workers > p.max_workers {
                return Err(format!(
                    "{what}: min_workers ({}) is larger than max_workers ({})",
                    p.min_workers, p.max_workers
                ));
            }
            if p.concurrency == 0 {
                return Err(format!("{what}: concurrency must be at least 1"));
            }
            let positive = [
                ("target_utilization", p.target_utilization, 0.01, 1.0),
                ("panic_threshold", p.panic_threshold, 1.0, 1e6),
                ("max_scale_up_rate", p.max_scale_up_rate, 1.0, 1e6),
                ("worker_cores", p.cores(), 0.0, 1e6),
            ];
            for (key, v, lo, hi) in positive {
                if !(lo..=hi).contains(&v) {
                    return Err(format!("{what}: {key} = {v} must be between {lo} and {hi}"));
                }
            }
            if p.scale_down_step == 0 {
                return Err(format!("{what}: scale_down_step must be at least 1"));
            }
            check_device(&p.device, cuda).map_err(|e| format!("{what}: {e}"))?;
            if let Some(t) = p.worker_args.options().threads {
                if p.worker_cores.is_some() && !p.device.starts_with("cuda") && t > p.cpu_threads()
                {
                    return Err(format!(
                        "{what}: worker_args --threads {t} is more than worker_cores = {} \
                         (what each CPU worker is charged against cpu_budget); raise \
                         worker_cores instead",
                        p.cores()
                    ));
                }
            }
            if p.panic_window.is_zero() || p.stable_window < p.panic_window {
                return Err(format!(
                    "{what}: panic_window must be positive and at most stable_window"
                ));
            }
        }
        self.billing.validate()?;
        if !(0.0..=1.0).contains(&self.otlp_sampling_ratio) {
            return Err(format!(
                "otlp_sampling_ratio = {} must be between 0 and 1",
                self.otlp_sampling_ratio
            ));
        }
        if let Some(e) = &self.usage_export {
            e.validate()?;
        }
        if self.cpu_budget.is_nan() || self.cpu_budget <= 0.0 {
            return Err(format!("cpu_budget = {} must be positive", self.cpu_budget));
        }
        if self.cpu_memory_budget.is_nan() || self.cpu_memory_budget <= 0.0 {
            return Err(format!(
                "cpu_memory_budget = {} must be a positive number of bytes",
                self.cpu_memory_budget
            ));
        }
        if !(0.01..=1.0).contains(&self.gpu_memory_fraction) {
            return Err(format!(
                "gpu_memory_fraction = {} must be between 0.01 and 1",
                self.gpu_memory_fraction
            ));
        }
        Ok(())
    }
}

fn pool_from_table(t: toml::Table) -> Result<PoolConfig, String> {
    let mut p = PoolConfig::deserialize(toml::Value::Table(t)).map_err(|e| e.to_string())?;
    p.worker_args.set_worker_cores(p.cores());
    Ok(p)
}

/// `auto`, `cpu`, `cuda` or `cuda:N`; CUDA only in a build that has it.
fn check_device(device: &str, cuda: bool) -> Result<(), String> {
    let gpu = match device {
        "auto" | "cpu" => false,
        "cuda" => true,
        d => {
            let n = d
                .strip_prefix("cuda:")
                .and_then(|n| n.parse::<usize>().ok());
            if n.is_none() {
                return Err(format!(
                    "device = {d:?}: expected auto, cpu, cuda or cuda:N"
                ));
            }
            true
        }
    };
    if gpu && !cuda {
        return Err(format!(
            "device = {device:?}, but this surge was built without the `cuda` feature \
             (rebuild with `cargo build --release --features cuda`, or use device = \"cpu\" \
             or \"auto\")"
        ));
    }
    Ok(())
}

/// `Duration` as (fractional) seconds in TOML.
pub(crate) mod secs {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer};

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let s = f64::deserialize(d)?;
        if !(0.0..=1e9).contains(&s) {
            return Err(serde::de::Error::custom(
                "seconds must be between 0 and 1e9",
            ));
        }
        Ok(Duration::from_secs_f64(s))
    }
}

#[cfg(test)]
#[path = "config_tests.rs"]
mod tests;
