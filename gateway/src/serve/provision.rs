//! Starting, watching and stopping worker processes.
//!
//! [`Provisioner`] is the seam for other backends (a cluster scheduler later); the
//! [`LocalProvisioner`] runs `surge worker` (this same executable) per worker on a fresh
//! Unix socket, its command line rendered from [`WorkerSpec::options`]. A worker is
//! ready when its `/health` answers 200. Workers die with the gateway: they are started
//! with `--exit-with-parent` (they poll their parent pid, so even a SIGKILLed gateway
//! leaves no orphans) and are killed when their handle drops.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use pingora::upstreams::peer::HttpPeer;
use surge_protocol::worker::health::{self, Health};
use surge_protocol::worker::{Listen, WorkerOptions, SPAWNED_AT_ENV};
use tokio::process::Command;
use tokio::sync::watch;

use super::config::{PoolConfig, WorkerArgs};

/// What to run: one model on one device.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkerSpec {
    pub model: String,
    pub device: String,
    /// The pool's `worker_args`, parsed, and the `--threads` a CPU worker gets.
    pub args: WorkerArgs,
}

impl WorkerSpec {
    /// A worker of a pool configured by `cfg`, on `device` (already placed: not `auto`).
    pub fn new(model: &str, device: &str, cfg: &PoolConfig) -> WorkerSpec {
        let mut args = cfg.worker_args.clone();
        args.set_worker_cores(cfg.cores());
        WorkerSpec {
            model: model.to_string(),
            device: device.to_string(),
            args,
        }
    }

    /// The options of one worker listening on `listen`: the pool's `worker_args`, this
    /// spec's model and device, `--exit-with-parent`, the gateway's model cache, and for
    /// CPU workers `--threads` from the pool's `worker_cores` unless `worker_args` set it.
    pub fn options(&self, listen: Listen, home: Option<PathBuf>) -> WorkerOptions {
        let mut o = self.args.options().clone();
        o.model = self.model.clone();
        o.device = self.device.clone();
        o.listen = listen;
        o.home = home;
        o.exit_with_parent = true;
        if !self.device.starts_with("cuda") {
            o.threads = o.threads.or(Some(self.args.cpu_threads()));
        }
        o
    }
}

/// Where a worker serves its HTTP API.
#[derive(Debug, Clone, PartialEq)]
pub enum Endpoint {
    /// A Unix socket on this machine (the local provisioner's workers).
    Unix(PathBuf),
    /// A TCP address, for a worker on another machine. The gateway sends `secret` as
    /// `Authorization: Bearer` with every request, so only it can use the worker.
    Tcp {
        addr: String,
        secret: Option<String>,
    },
}

impl Endpoint {
    /// The pingora peer that reaches the worker.
    pub fn peer(&self) -> pingora::Result<HttpPeer> {
        let mut peer = match self {
            Endpoint::Unix(path) => {
                HttpPeer::new_uds(&path.to_string_lossy(), false, String::new())?
            }
            Endpoint::Tcp { addr, .. } => HttpPeer::new(addr.as_str(), false, String::new()),
        };
        peer.options.connection_timeout = Some(Duration::from_secs(5));
        Ok(peer)
    }

    /// The `Authorization` value requests to this worker carry, if any.
    pub fn authorization(&self) -> Option<String> {
        match self {
            Endpoint::Tcp {
                secret: Some(s), ..
            } => Some(format!("Bearer {s}")),
            _ => None,
        }
    }
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Endpoint::Unix(p) => write!(f, "unix:{}", p.display()),
            Endpoint::Tcp { addr, .. } => write!(f, "tcp:{addr}"),
        }
    }
}

/// A started, ready worker.
#[derive(Debug)]
pub struct WorkerHandle {
    pub id: u64,
    pub endpoint: Endpoint,
    pub pid: Option<u32>,
    /// Spawn → ready.
    pub cold_start: Duration,
    /// Where the cold start went, `(phase, seconds)` as the worker's `/health` reports
    /// them (`exec`, `init`, `resolve`, `weights`, `tokenizer`, `warmup`), plus
    /// `readiness`: the rest of `cold_start` (the gateway noticing the worker is ready).
    pub startup: Vec<(String, f64)>,
    pub started: Instant,
    /// `Some(reason)` once the process has exited.
    exited: watch::Receiver<Option<String>>,
}

impl WorkerHandle {
    /// A handle for a worker some other backend started; send `Some(reason)` on the
    /// returned sender when it exits.
    pub fn new(
        id: u64,
        endpoint: Endpoint,
        pid: Option<u32>,
        cold_start: Duration,
    ) -> (WorkerHandle, watch::Sender<Option<String>>) {
        let (tx, rx) = watch::channel(None);
        let handle = WorkerHandle {
            id,
            endpoint,
            pid,
            cold_start,
            startup: Vec::new(),
            started: Instant::now(),
            exited: rx,
        };
        (handle, tx)
    }

    /// Resolves when the worker process exits, with the reason.
    pub async fn exited(&self) -> String {
        let mut rx = self.exited.clone();
        loop {
            if let Some(why) = rx.borrow().clone() {
                return why;
            }
            if rx.changed().await.is_err() {
                return "worker watcher stopped".into();
            }
        }
    }

    pub fn has_exited(&self) -> bool {
        self.exited.borrow().is_some()
    }
}

#[async_trait]
pub trait Provisioner: Send + Sync {
    /// Starts a worker and returns once it is ready (`/health` 200), or why it is not.
    async fn spawn(
        &self,
        spec: &WorkerSpec,
        ready_timeout: Duration,
    ) -> Result<WorkerHandle, String>;
    /// Asks the worker to drain (SIGTERM) and kills it after `grace`.
    async fn stop(&self, worker: &WorkerHandle, grace: Duration);
    /// Workers this backend still runs from before the gateway (re)started, as
    /// `(model, worker)`, put back into their pools at start: on other machines they
    /// outlive a gateway restart. The local backend has none (its workers exit with the
    /// gateway).
    async fn recover(&self) -> Vec<(String, WorkerHandle)> {
        Vec::new()
    }
}

/// Runs workers as child processes of the gateway.
pub struct LocalProvisioner {
    exe: PathBuf,
    home: Option<PathBuf>,
    socket_dir: PathBuf,
    next_id: AtomicU64,
    /// Passed to workers as `OTEL_*` variables, so their spans join the gateway's traces.
    trace: Option<crate::telemetry::TraceConfig>,
}

impl LocalProvisioner {
    /// Workers export their spans where the gateway does.
    pub fn with_trace(mut self, trace: Option<crate::telemetry::TraceConfig>) -> Self {
        self.trace = trace;
        self
    }

    pub fn new(exe: PathBuf, home: Option<PathBuf>, socket_dir: PathBuf) -> Self {
        Self {
            trace: None,
            exe,
            home,
            socket_dir,
            next_id: AtomicU64::new(1),
        }
    }
}

#[async_trait]
impl Provisioner for LocalProvisioner {
    async fn spawn(
        &self,
        spec: &WorkerSpec,
        ready_timeout: Duration,
    ) -> Result<WorkerHandle, String> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let socket = self
            .socket_dir
            .join(format!("w{id}-{}.sock", std::process::id()));
        let started = Instant::now();
        let mut cmd = Command::new(&self.exe);
        let spawned_at = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        // Lets the worker measure fork/exec and process start (its `exec` phase).
        cmd.env(SPAWNED_AT_ENV, spawned_at.to_string());
        if let Some(t) = &self.trace {
            cmd.env("OTEL_EXPORTER_OTLP_ENDPOINT", &t.endpoint);
            cmd.env("OTEL_TRACES_SAMPLER_ARG", t.sampling_ratio.to_string());
        }
        let options = spec.options(Listen::Unix(socket.clone()), self.home.clone());
        cmd.arg("worker")
            .args(options.to_args())
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .kill_on_drop(true);
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", self.exe.display()))?;
        let pid = child.id();
        let (tx, rx) = watch::channel(None);
        // The watcher owns the child: it reaps it and reports the exit.
        tokio::spawn(async move {
            let why = match child.wait().await {
                Ok(s) => format!("worker exited: {s}"),
                Err(e) => format!("worker wait failed: {e}"),
            };
            let _ = tx.send(Some(why));
        });
        let handle = WorkerHandle {
            id,
            endpoint: Endpoint::Unix(socket.clone()),
            pid,
            cold_start: Duration::ZERO,
            startup: Vec::new(),
            started,
            exited: rx,
        };
        let deadline = started + ready_timeout;
        loop {
            if let Some(why) = handle.exited.borrow().clone() {
                return Err(format!("{why} before becoming ready"));
            }
            if let Some(r) = health::get(&socket, HEALTH_TIMEOUT).await {
                if r.code == 200 {
                    let cold_start = started.elapsed();
                    return Ok(WorkerHandle {
                        cold_start,
                        startup: startup_phases(r.health.as_ref(), cold_start),
                        ..handle
                    });
                }
            }
            if Instant::now() >= deadline {
                self.stop(&handle, Duration::ZERO).await;
                return Err(format!(
                    "not ready after {:.0} s (readiness timeout)",
                    ready_timeout.as_secs_f64()
                ));
            }
            // Cheap (a connect on a socket that is not there yet): poll often, every
            // millisecond here is a millisecond of cold start.
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    async fn stop(&self, worker: &WorkerHandle, grace: Duration) {
        let Some(pid) = worker.pid else { return };
        if worker.has_exited() {
            return;
        }
        signal(pid, libc::SIGTERM);
        if tokio::time::timeout(grace, worker.exited()).await.is_err() {
            signal(pid, libc::SIGKILL);
            let _ = tokio::time::timeout(Duration::from_secs(5), worker.exited()).await;
        }
        if let Endpoint::Unix(path) = &worker.endpoint {
            let _ = std::fs::remove_file(path);
        }
    }
}

fn signal(pid: u32, sig: libc::c_int) {
    // SAFETY: kill(2) with a pid we started and still own (the watcher has not reaped
    // it, or kill fails harmlessly with ESRCH).
    unsafe {
        libc::kill(pid as libc::pid_t, sig);
    }
}

/// Longest a `/health` request may take (the worker answers it from memory).
const HEALTH_TIMEOUT: Duration = Duration::from_secs(2);

/// The worker's startup phases from its `/health` body, and `readiness` for the rest
/// of the gateway-measured `cold_start`; empty when the body has no breakdown.
fn startup_phases(health: Option<&Health>, cold_start: Duration) -> Vec<(String, f64)> {
    let Some(s) = health.and_then(|h| h.startup.as_ref()) else {
        return Vec::new();
    };
    // Only a known spawn time is a phase (an old worker without one reports no `exec`).
    let mut out: Vec<(String, f64)> = s
        .phases()
        .iter()
        .filter(|(p, _)| *p != "exec" || s.exec_s.is_some())
        .map(|(p, v)| (p.to_string(), *v))
        .collect();
    let accounted: f64 = out.iter().map(|(_, v)| v).sum();
    out.push((
        "readiness".into(),
        (cold_start.as_secs_f64() - accounted).max(0.0),
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(json: serde_json::Value) -> Option<Health> {
        Some(serde_json::from_value(json).unwrap())
    }

    #[test]
    fn startup_phases_add_up_to_the_cold_start() {
        let health = body(
            serde_json::json!({"status": "ok", "model": "m", "kind": "llm",
                "uptime_seconds": 1.0, "startup": {
                "exec_s": 0.01, "init_s": 0.002, "resolve_s": 0.001, "weights_s": 0.1,
                "tokenizer_s": 0.02, "warmup_s": 0.03, "total_s": 0.163, "listening_s": null,
                "exec_source": "env"
            }}),
        );
        let p = startup_phases(health.as_ref(), Duration::from_millis(170));
        assert_eq!(p.len(), 7);
        assert_eq!(p[3], ("weights".to_string(), 0.1));
        let sum: f64 = p.iter().map(|(_, v)| v).sum();
        assert!((sum - 0.170).abs() < 1e-9, "{p:?}");
        // Not ready yet, or not a worker's body: no breakdown.
        let loading = body(serde_json::json!({"status": "loading", "model": "m",
            "kind": "llm", "uptime_seconds": 1.0, "startup": null}));
        assert!(startup_phases(loading.as_ref(), Duration::ZERO).is_empty());
        assert!(startup_phases(None, Duration::ZERO).is_empty());
    }

    fn pool(toml: &str) -> PoolConfig {
        super::super::config::GatewayConfig::from_toml_str(toml)
            .unwrap()
            .pool("m", &[])
    }

    /// The argv a worker gets: the pool's options, the gateway's own flags, and for a CPU
    /// worker `--threads` = `worker_cores` rounded up.
    #[test]
    fn worker_argv_comes_from_the_pool() {
        let cfg =
            pool("[defaults]\nworker_cores = 1.5\nworker_args = [\"--max-num-seqs\", \"32\"]");
        let spec = WorkerSpec::new("smollm2", "cpu", &cfg);
        let listen = Listen::Unix("/tmp/s/w1.sock".into());
        let o = spec.options(listen.clone(), Some("/cache".into()));
        assert_eq!(
            o.to_args(),
            [
                "--model",
                "smollm2",
                "--listen",
                "unix:/tmp/s/w1.sock",
                "--device",
                "cpu",
                "--home",
                "/cache",
                "--max-num-seqs",
                "32",
                "--threads",
                "2",
                "--exit-with-parent"
            ]
        );
        assert_eq!(WorkerOptions::parse_args(o.to_args()).unwrap(), o);
        // The literal form (what a pool built before `WorkerSpec::new` does) agrees when
        // the config came from `GatewayConfig::pool`.
        let literal = WorkerSpec {
            model: "smollm2".into(),
            device: "cpu".into(),
            args: cfg.worker_args.clone(),
        };
        assert_eq!(literal, spec);
        // GPU workers are charged memory, not cores: no --threads unless asked for.
        let gpu = WorkerSpec::new("smollm2", "cuda:0", &cfg).options(listen.clone(), None);
        assert_eq!((gpu.threads, gpu.device.as_str()), (None, "cuda:0"));
        // An explicit --threads (at most worker_cores) wins.
        let cfg = pool("[defaults]\nworker_cores = 4\nworker_args = [\"--threads\", \"3\"]");
        let o = WorkerSpec::new("m", "cpu", &cfg).options(listen, None);
        assert_eq!(o.threads, Some(3));
        // The defaults: one core per worker, one thread.
        let o = WorkerSpec::new("m", "cpu", &PoolConfig::default())
            .options(Listen::Unix("/s".into()), None);
        assert_eq!(o.threads, Some(1));
    }
}
