//! Managing a benchmarked server process: a free port, readiness, peak memory, shutdown.

use std::process::{Child, Command};
use std::time::{Duration, Instant};

/// A TCP port nothing listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(18_080)
}

/// Polls `GET {base}/health` until it answers 200; fails if the process exits first or
/// `timeout` passes.
pub fn wait_ready(base: &str, child: &mut Child, timeout: Duration) -> Result<(), String> {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("exited before ready: {status}"));
        }
        if let Ok(r) = ureq::get(&format!("{base}/health"))
            .timeout(Duration::from_secs(1))
            .call()
        {
            if r.status() == 200 {
                return Ok(());
            }
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Err(format!("not ready after {} s", timeout.as_secs()))
}

/// The 1-minute load average (`/proc/loadavg`); 0 if unknown.
pub fn load_average() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().and_then(|x| x.parse().ok()))
        .unwrap_or(0.0)
}

/// Warns on stderr when the 1-minute load average is above 0.5: on a small shared machine
/// another busy process collapses benchmark figures. Returns the load average.
pub fn warn_if_busy() -> f64 {
    let load1 = load_average();
    if load1 > 0.5 {
        eprintln!("warning: load average {load1:.2}: figures from a busy machine mean little");
    }
    load1
}

/// Peak resident memory (VmHWM) of a live process, in MiB; 0 if unknown.
pub fn peak_rss_mib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmHWM:")).and_then(|l| {
                l.split_whitespace()
                    .nth(1)
                    .and_then(|kb| kb.parse::<f64>().ok())
            })
        })
        .map(|kb| kb / 1024.0)
        .unwrap_or(0.0)
}

/// SIGTERM, up to 10 s to exit, then SIGKILL; reaps the child.
pub fn stop(child: &mut Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .stderr(std::process::Stdio::null())
        .status();
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
}
