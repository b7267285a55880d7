//! The gateway's configuration: built-in defaults, overridden by a TOML file
//! (`--config`), then by environment variables, then by flags.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

/// Everything `surge serve` runs with.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// Where clients connect (default 127.0.0.1:8080).
    pub listen: SocketAddr,
    /// Model cache (default: $SURGE_HOME, else ~/.cache/surge).
    pub home: Option<PathBuf>,
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
    /// Share of each GPU's memory that workers placed on it may claim.
    pub gpu_memory_fraction: f64,
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
    /// `cpu`, `cuda`, `cuda:N`, or `auto` (a GPU when one fits, else the CPU).
    pub device: String,
    /// Extra `surge worker` arguments (e.g. `["--max-num-seqs", "32"]`).
    pub worker_args: Vec<String>,
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
    /// CPU cores one CPU worker is charged against the machine's `cpu_budget`.
    pub worker_cores: f64,
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
            worker_args: Vec::new(),
            target_utilization: 0.7,
            stable_window: Duration::from_secs(60),
            panic_window: Duration::from_secs(6),
            panic_threshold: 2.0,
            max_scale_up_rate: 10.0,
            scale_down_step: 1,
            worker_cores: 1.0,
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
}

impl Default for GatewayConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8080".parse().expect("valid address"),
            home: None,
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
            gpu_memory_fraction: 0.9,
        }
    }
}

impl GatewayConfig {
    /// The pool settings of `model` (its own entry, else the defaults).
    pub fn pool(&self, model: &str, aliases: &[String]) -> PoolConfig {
        std::iter::once(model)
            .chain(aliases.iter().map(String::as_str))
            .find_map(|n| self.models.get(n))
            .cloned()
            .unwrap_or_else(|| self.defaults.clone())
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
    gpu_memory_fraction: Option<f64>,
    /// Kept raw so `[models.NAME]` tables can inherit the keys they do not set.
    defaults: Option<toml::Table>,
    #[serde(default)]
    models: BTreeMap<String, toml::Table>,
    #[serde(default)]
    keys: Vec<ApiKey>,
}

impl GatewayConfig {
    /// Reads a TOML config: top-level `listen`, `home`, `pull_defaults`,
    /// `max_body_bytes`, `max_audio_bytes`, `drain_grace`, `sse_heartbeat` and
    /// `autoscale_interval` (seconds), `socket_dir`, `cpu_budget`, `gpu_memory_fraction`;
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
        cfg.keys = file.keys;
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
                ("worker_cores", p.worker_cores, 0.0, 1e6),
            ];
            for (key, v, lo, hi) in positive {
                if !(lo..=hi).contains(&v) {
                    return Err(format!("{what}: {key} = {v} must be between {lo} and {hi}"));
                }
            }
            if p.scale_down_step == 0 {
                return Err(format!("{what}: scale_down_step must be at least 1"));
            }
            if p.panic_window.is_zero() || p.stable_window < p.panic_window {
                return Err(format!(
                    "{what}: panic_window must be positive and at most stable_window"
                ));
            }
        }
        if self.cpu_budget.is_nan() || self.cpu_budget <= 0.0 {
            return Err(format!("cpu_budget = {} must be positive", self.cpu_budget));
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
    PoolConfig::deserialize(toml::Value::Table(t)).map_err(|e| e.to_string())
}

/// `Duration` as (fractional) seconds in TOML.
mod secs {
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
mod tests {
    use super::*;

    /// The example in the README parses and means what it says.
    #[test]
    fn readme_example_parses() {
        let readme = include_str!("../../../docs/gateway.md");
        let start = readme
            .find("```toml\n")
            .expect("a toml block in the README")
            + 8;
        let end = start + readme[start..].find("```").unwrap();
        let cfg = GatewayConfig::from_toml_str(&readme[start..end]).unwrap();
        assert_eq!(cfg.keys.len(), 1);
        assert_eq!(cfg.pool("smollm2-135m-instruct", &[]).max_workers, 2);
        assert_eq!(cfg.drain_grace, Duration::from_secs(30));
        assert_eq!(cfg.cpu_budget, 16.0);
        // `[models.X]` inherits the autoscaling keys from `[defaults]`.
        let m = cfg.pool("smollm2-135m-instruct", &[]);
        assert_eq!(m.panic_window, Duration::from_secs(6));
        assert_eq!(m.target_utilization, 0.7);
    }

    /// The gateway config of the README's spike run parses.
    #[test]
    fn spike_run_config_parses() {
        let text = include_str!("../../../loadtest/configs/surge-spike-gateway.toml");
        let cfg = GatewayConfig::from_toml_str(text).unwrap();
        assert_eq!(cfg.pool("smollm2-135m-instruct", &[]).max_workers, 2);
    }

    #[test]
    fn empty_file_is_the_defaults() {
        let c = GatewayConfig::from_toml_str("").unwrap();
        let d = GatewayConfig::default();
        assert_eq!(c.listen, d.listen);
        assert_eq!(c.defaults, d.defaults);
        assert!(c.models.is_empty() && c.keys.is_empty());
        assert_eq!(c.drain_grace, d.drain_grace);
    }

    #[test]
    fn full_file() {
        let c = GatewayConfig::from_toml_str(
            r#"
listen = "0.0.0.0:9000"
home = "/var/cache/surge"
pull_defaults = false
max_body_bytes = 1000
max_audio_bytes = 2000
drain_grace = 2.5

[defaults]
max_workers = 4
idle_timeout = 30
device = "cpu"

[models.smollm2]
max_workers = 8
worker_args = ["--max-num-seqs", "32"]

[[keys]]
key = "sk-one"
name = "team-a"
requests_per_second = 5

[[keys]]
key = "sk-two"
"#,
        )
        .unwrap();
        assert_eq!(c.listen, "0.0.0.0:9000".parse().unwrap());
        assert_eq!(
            c.home.as_deref(),
            Some(std::path::Path::new("/var/cache/surge"))
        );
        assert!(!c.pull_defaults);
        assert_eq!((c.max_body_bytes, c.max_audio_bytes), (1000, 2000));
        assert_eq!(c.drain_grace, Duration::from_millis(2500));
        assert_eq!(c.defaults.max_workers, 4);
        assert_eq!(c.defaults.idle_timeout, Duration::from_secs(30));
        assert_eq!(c.defaults.concurrency, PoolConfig::default().concurrency);
        // A model entry inherits what it does not set from [defaults].
        let m = c.pool("smollm2-135m-instruct", &["smollm2".into()]);
        assert_eq!(m.max_workers, 8);
        assert_eq!(m.idle_timeout, Duration::from_secs(30));
        assert_eq!(m.device, "cpu");
        assert_eq!(m.worker_args, ["--max-num-seqs", "32"]);
        assert_eq!(c.pool("other", &[]), c.defaults);
        assert_eq!(c.keys.len(), 2);
        assert_eq!(c.keys[0].name.as_deref(), Some("team-a"));
        assert_eq!(c.keys[0].requests_per_second, Some(5));
        assert_eq!(c.keys[1].name, None);
    }

    #[test]
    fn unknown_keys_are_named() {
        for (text, key) in [
            ("lisen = \"1.2.3.4:5\"", "lisen"),
            ("[defaults]\nmax_worker = 3", "max_worker"),
            ("[models.x]\nconcurency = 3", "concurency"),
            ("[[keys]]\nkey = \"k\"\nrps = 3", "rps"),
        ] {
            let e = GatewayConfig::from_toml_str(text).unwrap_err();
            assert!(e.contains(key), "{text:?} -> {e}");
        }
    }

    #[test]
    fn bad_values_are_errors() {
        for text in [
            "listen = \"nope\"",
            "drain_grace = -1",
            "sse_heartbeat = 0",
            "cpu_budget = 0",
            "[defaults]\ntarget_utilization = 0",
            "[defaults]\nstable_window = 1\npanic_window = 2",
            "[defaults]\nscale_down_step = 0",
            "[defaults]\nidle_timeout = -3",
            "[defaults]\nmax_workers = 0",
            "[models.m]\nmin_workers = 3\nmax_workers = 2",
            "[defaults]\nmax_workers = \"many\"",
            "[[keys]]\nkey = \"\"",
        ] {
            assert!(GatewayConfig::from_toml_str(text).is_err(), "{text:?}");
        }
    }
}
