//! Starting real `surge` processes for tests: the default models pulled by the project's
//! own `surge models pull`, and workers on loopback ports that exit with the test binary.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const LLM: &str = "smollm2-135m-instruct";
pub const WHISPER: &str = "whisper-tiny.en";

/// Waits up to `within` for `child` to exit; panics naming `what` otherwise.
pub fn wait_exit(child: &mut Child, within: Duration, what: &str) -> std::process::ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(start.elapsed() < within, "{what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Sends `signal` (`-TERM`, `-KILL`, …) to `pid` with kill(1).
pub fn kill(pid: u32, signal: &str) {
    let ok = Command::new("kill")
        .args([signal, &pid.to_string()])
        .status()
        .expect("run kill")
        .success();
    assert!(ok, "kill {signal} {pid}");
}

pub fn surge() -> Command {
    Command::new(env!("CARGO_BIN_EXE_surge"))
}

/// Pulls a catalog model into the default cache ($SURGE_HOME or ~/.cache/surge); a no-op
/// when it is already there, so test runs share one download.
pub fn ensure_model(name: &str) {
    let out = surge()
        .args(["models", "pull", name, "--quiet"])
        .output()
        .expect("run surge models pull");
    assert!(
        out.status.success(),
        "pull {name}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn unix_ns_now() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

/// Checks the `startup` object of a ready worker's `/health` body (see
/// `surge_runtime::server::routes::health_response`): every phase present and ≥ 0, their
/// sum ≤ `total_s`, and the spawn time taken from the environment [`Worker::start`] sets.
/// Never a speed assertion.
pub fn check_startup(health: &serde_json::Value) {
    let s = &health["startup"];
    assert!(s.is_object(), "no startup object in {health}");
    assert_eq!(s["exec_source"], "env", "{s}");
    let total = s["total_s"].as_f64().expect("total_s");
    let mut sum = 0.0;
    for phase in ["exec", "init", "resolve", "weights", "tokenizer", "warmup"] {
        let v = s[format!("{phase}_s")]
            .as_f64()
            .unwrap_or_else(|| panic!("{phase}_s missing from {s}"));
        assert!(v >= 0.0, "{phase}_s = {v} in {s}");
        sum += v;
    }
    assert!(
        sum <= total + 1e-9,
        "phases sum to {sum} > total {total}: {s}"
    );
    assert!(s["weights_s"].as_f64().unwrap() > 0.0, "{s}");
    let listening = s["listening_s"].as_f64().expect("listening_s");
    assert!((0.0..=total).contains(&listening), "{s}");
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub struct Worker {
    pub child: Child,
    pub base: String,
}

impl Worker {
    /// Starts `surge worker` for `model` with extra flags and waits until `/health` is 200.
    pub fn start(model: &str, extra: &[&str]) -> Worker {
        Self::start_with_env(model, extra, &[])
    }

    /// Like [`Worker::start`], with extra environment for the worker process only.
    pub fn start_with_env(model: &str, extra: &[&str], env: &[(&str, &str)]) -> Worker {
        ensure_model(model);
        let port = free_port();
        let child = surge()
            .args([
                "worker",
                "--model",
                model,
                "--listen",
                &format!("tcp:127.0.0.1:{port}"),
                "--exit-with-parent",
            ])
            .args(extra)
            .env("SURGE_LOG", "warn")
            .env("SURGE_SPAWNED_AT_UNIX_NS", unix_ns_now().to_string())
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .spawn()
            .expect("spawn surge worker");
        let w = Worker {
            child,
            base: format!("http://127.0.0.1:{port}"),
        };
        w.wait_ready(Duration::from_secs(180));
        w
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn wait_ready(&self, limit: Duration) {
        let start = Instant::now();
        while start.elapsed() < limit {
            if let Ok(r) = ureq::get(&self.url("/health"))
                .timeout(Duration::from_secs(2))
                .call()
            {
                if r.status() == 200 {
                    return;
                }
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("worker at {} not ready after {limit:?}", self.base);
    }

    /// A metric's value from `/metrics` (first sample whose name matches); 0 when absent.
    pub fn metric(&self, name: &str) -> f64 {
        let (_, text) = super::http::get(&self.url("/metrics"));
        surge_protocol::prom::value(&text, name, &[]).unwrap_or(0.0)
    }

    /// A labelled sample's value (the first with all these labels), e.g.
    /// `("surge_worker_requests_total", r#"endpoint="audio_transcriptions",status="200""#)`;
    /// 0 when absent.
    pub fn labelled_metric(&self, name: &str, labels: &str) -> f64 {
        let (_, text) = super::http::get(&self.url("/metrics"));
        surge_protocol::prom::value_of(&text, &format!("{name}{{{labels}}}")).unwrap_or(0.0)
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
