//! `surge serve`: the OpenAI-compatible gateway. Settings come from built-in defaults,
//! then the TOML file (`--config`), then environment variables, then flags; the pool
//! flags override every pool (`[defaults]` and each `[models.NAME]`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use crate::serve::config::{GatewayConfig, PoolConfig};

#[derive(Args, Debug, Default)]
pub struct ServeCommand {
    /// TOML config file (top-level listen, home, pull_defaults, metering, max_body_bytes,
    /// max_audio_bytes, drain_grace, sse_heartbeat; [defaults], [models.NAME], [[keys]],
    /// [billing], [usage_export]).
    #[arg(long, env = "SURGE_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    /// Address clients connect to [default: 127.0.0.1:8080].
    #[arg(long, env = "SURGE_LISTEN", value_name = "HOST:PORT")]
    listen: Option<SocketAddr>,
    /// Model cache (default: $SURGE_HOME, else ~/.cache/surge).
    #[arg(long, env = "SURGE_HOME", value_name = "DIR")]
    home: Option<PathBuf>,
    /// Data directory: the ledger database with `surge keys`' keys (default: data/ in
    /// the model cache's root).
    #[arg(long, env = "SURGE_DATA_DIR", value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Do not pull missing default models at start; serve what the cache holds.
    #[arg(long)]
    no_pull: bool,
    /// Keep no usage records, budgets, export or capacity ledger (API keys still work);
    /// for measuring what metering costs.
    #[arg(long)]
    no_metering: bool,
    /// Most workers per model.
    #[arg(long, value_name = "N")]
    max_workers: Option<usize>,
    /// Workers per model kept running even when idle (0: scale to zero).
    #[arg(long, value_name = "N")]
    min_workers: Option<usize>,
    /// Requests one worker serves at once.
    #[arg(long, value_name = "N")]
    concurrency: Option<usize>,
    /// Seconds an idle worker lives before it is stopped.
    #[arg(long, value_name = "S")]
    idle_timeout: Option<f64>,
    /// Requests that may wait for a worker per model; beyond that, 429.
    #[arg(long, value_name = "N")]
    queue_size: Option<usize>,
    /// Longest wait for a worker in seconds; beyond that, 503.
    #[arg(long, value_name = "S")]
    queue_timeout: Option<f64>,
    /// Worker device: cpu, cuda, cuda:N or auto.
    #[arg(long, value_name = "D")]
    device: Option<String>,
    /// Seconds a streaming request waits for a worker before the gateway sends its SSE
    /// header and `: waiting` heartbeats at this interval.
    #[arg(long, value_name = "S")]
    sse_heartbeat: Option<f64>,
    /// Exit when the parent process exits (for tests that start a gateway).
    #[arg(long, hide = true)]
    exit_with_parent: bool,
}

impl ServeCommand {
    /// Where traces go, before anything else runs (`None`: off, or a config that does
    /// not parse, which `run` then reports).
    pub fn trace(&self) -> Option<crate::telemetry::TraceConfig> {
        self.config().ok()?.trace()
    }

    /// The configuration this command runs with.
    pub fn config(&self) -> Result<GatewayConfig, String> {
        let mut cfg = match &self.config {
            Some(path) => GatewayConfig::from_toml_file(path)?,
            None => GatewayConfig::default(),
        };
        if let Some(l) = self.listen {
            cfg.listen = l;
        }
        if let Some(h) = &self.home {
            cfg.home = Some(h.clone());
        }
        if let Some(d) = &self.data_dir {
            cfg.data_dir = Some(d.clone());
        }
        if self.no_pull {
            cfg.pull_defaults = false;
        }
        if self.no_metering {
            cfg.metering = false;
        }
        if let Some(d) = secs("--sse-heartbeat", self.sse_heartbeat)? {
            cfg.sse_heartbeat = d.max(Duration::from_millis(10));
        }
        let idle = secs("--idle-timeout", self.idle_timeout)?;
        let queue = secs("--queue-timeout", self.queue_timeout)?;
        let apply = |p: &mut PoolConfig| {
            if let Some(n) = self.max_workers {
                p.max_workers = n;
            }
            if let Some(n) = self.min_workers {
                p.min_workers = n;
            }
            if let Some(n) = self.concurrency {
                p.concurrency = n;
            }
            if let Some(d) = idle {
                p.idle_timeout = d;
            }
            if let Some(n) = self.queue_size {
                p.queue_size = n;
            }
            if let Some(d) = queue {
                p.queue_timeout = d;
            }
            if let Some(d) = &self.device {
                p.device = d.clone();
            }
        };
        apply(&mut cfg.defaults);
        cfg.models.values_mut().for_each(apply);
        cfg.validate()?;
        Ok(cfg)
    }
}

fn secs(flag: &str, v: Option<f64>) -> Result<Option<Duration>, String> {
    match v {
        Some(s) if !(0.0..=1e9).contains(&s) => {
            Err(format!("{flag} {s}: seconds must be between 0 and 1e9"))
        }
        Some(s) => Ok(Some(Duration::from_secs_f64(s))),
        None => Ok(None),
    }
}

/// Runs `surge serve`; returns the process exit code.
pub fn run(cmd: ServeCommand) -> i32 {
    if cmd.exit_with_parent {
        watch_parent();
    }
    match cmd.config() {
        Ok(cfg) => crate::serve::run(cfg),
        Err(e) => {
            eprintln!("error: {e}");
            2
        }
    }
}

/// Polls the parent pid and exits when it changes (the parent died); the workers follow,
/// since they watch the gateway the same way.
fn watch_parent() {
    let parent = std::os::unix::process::parent_id();
    let _ = std::thread::Builder::new()
        .name("parent-watch".into())
        .spawn(move || loop {
            std::thread::sleep(Duration::from_millis(200));
            if std::os::unix::process::parent_id() != parent {
                eprintln!("parent process {parent} is gone; exiting");
                std::process::exit(1);
            }
        });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_override_the_file() {
        let dir = std::env::temp_dir().join(format!("surge-serve-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("gw.toml");
        std::fs::write(
            &file,
            "listen = \"127.0.0.1:9999\"\n[defaults]\nmax_workers = 2\nqueue_size = 7\n\
             [models.m]\nmax_workers = 3\n",
        )
        .unwrap();
        let cmd = ServeCommand {
            config: Some(file),
            listen: Some("127.0.0.1:7000".parse().unwrap()),
            no_pull: true,
            max_workers: Some(5),
            idle_timeout: Some(1.5),
            ..Default::default()
        };
        let cfg = cmd.config().unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(cfg.listen.port(), 7000);
        assert!(!cfg.pull_defaults);
        assert_eq!(cfg.defaults.max_workers, 5);
        assert_eq!(cfg.defaults.queue_size, 7);
        assert_eq!(cfg.defaults.idle_timeout, Duration::from_millis(1500));
        assert_eq!(cfg.models["m"].max_workers, 5);
        assert_eq!(cfg.models["m"].queue_size, 7);
        let bad = ServeCommand {
            min_workers: Some(9),
            ..Default::default()
        };
        assert!(bad.config().is_err());
    }
}
