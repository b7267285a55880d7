//! The surge processes a bench starts (`surge worker`, `surge serve`) on free loopback
//! ports, quiet, and what it watches of them beyond [`crate::server`]: a `/health` body
//! polled every millisecond, and whether a gateway still has worker processes.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::server::free_port;

/// `surge worker --model MODEL --listen tcp:127.0.0.1:PORT` on a free port, quiet (see
/// [`quiet`]); the command, to which callers add flags, and its base URL.
pub fn surge_worker(bin: &Path, model: &str) -> (Command, String) {
    let port = free_port();
    let mut cmd = Command::new(bin);
    cmd.args(["worker", "--model", model, "--listen"])
        .arg(format!("tcp:127.0.0.1:{port}"));
    quiet(&mut cmd);
    (cmd, format!("http://127.0.0.1:{port}"))
}

/// `surge serve --listen 127.0.0.1:PORT` on a free port, quiet; the command and its base
/// URL.
pub fn surge_serve(bin: &Path) -> (Command, String) {
    let port = free_port();
    let mut cmd = Command::new(bin);
    cmd.args(["serve", "--listen", &format!("127.0.0.1:{port}")]);
    quiet(&mut cmd);
    (cmd, format!("http://127.0.0.1:{port}"))
}

/// `SURGE_LOG=warn`, stdout discarded, stderr shown.
pub fn quiet(cmd: &mut Command) {
    cmd.env("SURGE_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
}

/// Spawns `cmd`; the error names the program.
pub fn spawn(cmd: &mut Command) -> Result<Child, String> {
    cmd.spawn()
        .map_err(|e| format!("spawn {}: {e}", Path::new(cmd.get_program()).display()))
}

/// Polls `GET {base}/health` every millisecond until it answers 200 and returns its body;
/// fails if the process exits first or `timeout` passes.
pub fn poll_health(base: &str, child: &mut Child, timeout: Duration) -> Result<Value, String> {
    let start = Instant::now();
    let agent = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(2))
        .build();
    while start.elapsed() < timeout {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("worker exited before ready: {status}"));
        }
        if let Ok(r) = agent.get(&format!("{base}/health")).call() {
            if r.status() == 200 {
                return r.into_json().map_err(|e| format!("/health body: {e}"));
            }
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    Err(format!("worker not ready after {} s", timeout.as_secs()))
}

/// Whether any process has `pid` as its parent.
pub fn has_children(pid: u32) -> bool {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return false;
    };
    dir.flatten().any(|e| {
        std::fs::read_to_string(e.path().join("stat"))
            .ok()
            // The fields after the command (which may hold spaces) follow its last ')'.
            .and_then(|s| {
                s.rsplit_once(')')
                    .and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse::<u32>().ok())
            })
            == Some(pid)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_and_children() {
        let (cmd, base) = surge_worker(Path::new("surge"), "m");
        let args: Vec<_> = cmd.get_args().map(|a| a.to_string_lossy()).collect();
        let port = base.strip_prefix("http://127.0.0.1:").unwrap();
        assert_eq!(
            args,
            [
                "worker",
                "--model",
                "m",
                "--listen",
                &format!("tcp:127.0.0.1:{port}")
            ]
        );
        let (cmd, base) = surge_serve(Path::new("surge"));
        let args: Vec<_> = cmd.get_args().map(|a| a.to_string_lossy()).collect();
        assert_eq!(
            args,
            ["serve", "--listen", base.strip_prefix("http://").unwrap()]
        );
        let err = spawn(&mut Command::new("/nonexistent/surge")).unwrap_err();
        assert!(err.starts_with("spawn /nonexistent/surge: "), "{err}");

        let mut child = Command::new("sleep").arg("5").spawn().unwrap();
        assert!(has_children(std::process::id()));
        crate::server::stop(&mut child);
        assert!(!has_children(child.id()));
    }
}
