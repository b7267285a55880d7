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
            started,
            exited: rx,
        };
        let deadline = started + ready_timeout;
        loop {
            if let Some(why) = handle.exited.borrow().clone() {
                return Err(format!("{why} before becoming ready"));
            }
            if health(&handle.socket).await == Some(200) {
                return Ok(WorkerHandle {
                    cold_start: started.elapsed(),
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
            tokio::time::sleep(Duration::from_millis(20)).await;
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
    let mut s = UnixStream::connect(socket).await.ok()?;
    s.write_all(b"GET /health HTTP/1.1\r\nHost: worker\r\nConnection: close\r\n\r\n")
        .await
        .ok()?;
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(2), s.read(&mut buf))
        .await
        .ok()?
        .ok()?;
    let line = std::str::from_utf8(&buf[..n]).ok()?;
    line.split_whitespace().nth(1)?.parse().ok()
}
