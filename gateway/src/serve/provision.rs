//! Starting, watching and stopping worker processes.
//!
//! [`Provisioner`] is the seam for other backends (a cluster scheduler later); the
//! [`LocalProvisioner`] runs `surge worker` (this same executable) per worker on a fresh
//! Unix socket. A worker is ready when its `/health` answers 200. Workers die with the
//! gateway: they are started with `--exit-with-parent` (they poll their parent pid, so
//! even a SIGKILLed gateway leaves no orphans) and are killed when their handle drops.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio::process::Command;
use tokio::sync::watch;

/// What to run: one model on one device.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkerSpec {
    pub model: String,
    pub device: String,
    /// Extra `surge worker` arguments.
    pub args: Vec<String>,
}

/// A started, ready worker.
#[derive(Debug)]
pub struct WorkerHandle {
    pub id: u64,
    pub socket: PathBuf,
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
        socket: PathBuf,
        pid: Option<u32>,
        cold_start: Duration,
    ) -> (WorkerHandle, watch::Sender<Option<String>>) {
        let (tx, rx) = watch::channel(None);
        let handle = WorkerHandle {
            id,
            socket,
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
}

/// Runs workers as child processes of the gateway.
pub struct LocalProvisioner {
    exe: PathBuf,
    home: Option<PathBuf>,
    socket_dir: PathBuf,
    next_id: AtomicU64,
}

impl LocalProvisioner {
    pub fn new(exe: PathBuf, home: Option<PathBuf>, socket_dir: PathBuf) -> Self {
        Self {
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
        cmd.env(
            surge_runtime::server::startup::SPAWNED_AT_ENV,
            spawned_at.to_string(),
        );
        cmd.arg("worker")
            .args(["--model", &spec.model])
            .arg("--listen")
            .arg(format!("unix:{}", socket.display()))
            .args(["--device", &spec.device])
            .arg("--exit-with-parent")
            .args(&spec.args)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .kill_on_drop(true);
        if let Some(home) = &self.home {
            cmd.args(["--home".as_ref(), home.as_os_str()]);
        }
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
            socket,
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
            if let Some((200, body)) = health_body(&handle.socket).await {
                let cold_start = started.elapsed();
                return Ok(WorkerHandle {
                    cold_start,
                    startup: startup_phases(&body, cold_start),
                    ..handle
                });
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
        let _ = std::fs::remove_file(&worker.socket);
    }
}

fn signal(pid: u32, sig: libc::c_int) {
    // SAFETY: kill(2) with a pid we started and still own (the watcher has not reaped
    // it, or kill fails harmlessly with ESRCH).
    unsafe {
        libc::kill(pid as libc::pid_t, sig);
    }
}

/// `GET /health` over the worker's socket; the status code, or `None` if unreachable.
pub async fn health(socket: &Path) -> Option<u16> {
    health_body(socket).await.map(|(code, _)| code)
}

/// `GET /health`: the status code and the JSON body (`Null` when it is not JSON).
async fn health_body(socket: &Path) -> Option<(u16, Value)> {
    let mut s = UnixStream::connect(socket).await.ok()?;
    s.write_all(b"GET /health HTTP/1.1\r\nHost: worker\r\nConnection: close\r\n\r\n")
        .await
        .ok()?;
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(2), s.read_to_end(&mut buf))
        .await
        .ok()?
        .ok()?;
    let text = std::str::from_utf8(&buf).ok()?;
    let code = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text
        .split_once("\r\n\r\n")
        .and_then(|(_, b)| serde_json::from_str(b).ok())
        .unwrap_or(Value::Null);
    Some((code, body))
}

/// The worker's startup phases from its `/health` body, and `readiness` for the rest
/// of the gateway-measured `cold_start`.
fn startup_phases(health: &Value, cold_start: Duration) -> Vec<(String, f64)> {
    let Some(s) = health.get("startup").filter(|s| s.is_object()) else {
        return Vec::new();
    };
    let mut out: Vec<(String, f64)> = ["exec", "init", "resolve", "weights", "tokenizer", "warmup"]
        .iter()
        .filter_map(|p| Some((p.to_string(), s.get(format!("{p}_s"))?.as_f64()?)))
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

    #[test]
    fn startup_phases_add_up_to_the_cold_start() {
        let health = serde_json::json!({"status": "ok", "startup": {
            "exec_s": 0.01, "init_s": 0.002, "resolve_s": 0.001, "weights_s": 0.1,
            "tokenizer_s": 0.02, "warmup_s": 0.03, "total_s": 0.163, "exec_source": "env"
        }});
        let p = startup_phases(&health, Duration::from_millis(170));
        assert_eq!(p.len(), 7);
        assert_eq!(p[3], ("weights".to_string(), 0.1));
        let sum: f64 = p.iter().map(|(_, v)| v).sum();
        assert!((sum - 0.170).abs() < 1e-9, "{p:?}");
        // An older worker without the object: no breakdown.
        assert!(startup_phases(&serde_json::json!({"status": "ok"}), Duration::ZERO).is_empty());
    }
}
