//! A real `surge serve` started for a test, and what tests look at from outside it.

use std::process::{Child, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use super::worker::{ensure_model, free_port, surge, LLM, WHISPER};

pub struct Gateway {
    pub child: Child,
    pub base: String,
    pub port: u16,
}

/// Killed on drop, so a failing test leaves no gateway behind (the shared one in a
/// `static` lives as long as the test process and goes with `--exit-with-parent`).
impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Gateway {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }
}

/// The shared gateway; it exits with the test process (`--exit-with-parent`).
pub fn gateway() -> &'static Gateway {
    static GW: OnceLock<Gateway> = OnceLock::new();
    GW.get_or_init(|| start_gateway(&[]))
}

/// Starts `surge serve` on a fresh port with `extra` arguments and waits for /health.
pub fn start_gateway(extra: &[&str]) -> Gateway {
    start_gateway_env(extra, &[])
}

/// [`start_gateway`] with environment variables `env` set for the gateway (and so for
/// the workers it spawns).
pub fn start_gateway_env(extra: &[&str], env: &[(&str, &str)]) -> Gateway {
    ensure_model(LLM);
    ensure_model(WHISPER);
    let port = free_port();
    let child = surge()
        .args([
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--no-pull",
            "--exit-with-parent",
        ])
        .args(extra)
        // A ledger of its own (API keys): keys a developer created in the default data
        // directory must not lock the tests out. `--data-dir` in `extra` wins.
        .env("SURGE_DATA_DIR", scratch_data_dir())
        .env("SURGE_LOG", "warn")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .spawn()
        .expect("spawn surge serve");
    let gw = Gateway {
        child,
        base: format!("http://127.0.0.1:{port}"),
        port,
    };
    let start = Instant::now();
    loop {
        if let Ok(r) = ureq::get(&gw.url("/health"))
            .timeout(Duration::from_secs(2))
            .call()
        {
            if r.status() == 200 {
                break;
            }
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "gateway not up after 60 s"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    gw
}

/// The gateway's child processes (its workers), from /proc.
pub fn worker_pids(gw: &Gateway) -> Vec<u32> {
    let mut pids = Vec::new();
    let tasks = format!("/proc/{}/task", gw.child.id());
    for task in std::fs::read_dir(tasks).into_iter().flatten().flatten() {
        let children = std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
        pids.extend(
            children
                .split_whitespace()
                .filter_map(|p| p.parse::<u32>().ok()),
        );
    }
    pids.sort_unstable();
    pids.dedup();
    pids
}

/// The process exists and is not a zombie.
pub fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        // State is the field after the parenthesised command name.
        stat.rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X")
    })
}

/// Waits (at most `limit`) until `f` holds.
pub fn wait_until(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    f()
}

/// `model`'s pool as `/admin/pools` shows it.
pub fn pool_view(gw: &Gateway, model: &str) -> serde_json::Value {
    let (status, text) = super::http::get(&gw.url("/admin/pools"));
    assert_eq!(status, 200, "{text}");
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    v["pools"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["model"] == model)
        .cloned()
        .unwrap_or_else(|| panic!("no {model} pool in {v}"))
}

/// A fresh directory for a gateway's ledger, removed with the test process's temp files.
fn scratch_data_dir() -> std::path::PathBuf {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static N: AtomicUsize = AtomicUsize::new(0);
    let d = std::env::temp_dir().join(format!(
        "surge-test-data-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("a scratch data dir");
    d
}
