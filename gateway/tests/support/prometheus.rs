//! A real Prometheus (the `prometheus` binary scripts/setup.sh installs) for a test:
//! loopback only, its TSDB and config in a temp dir, killed and removed on drop — also
//! when the test panics — and killed by the kernel if the test thread dies first.

use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::worker::free_port;

pub struct Prometheus {
    child: Child,
    /// Config, TSDB and log; removed after the process is gone (fields drop in order).
    dir: tempfile::TempDir,
    pub base: String,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Panics with the way to install `binary` when it cannot be run.
pub fn require(binary: &str) -> PathBuf {
    let path = PathBuf::from(format!("/usr/bin/{binary}"));
    let found = if path.exists() {
        path
    } else {
        PathBuf::from(binary)
    };
    match Command::new(&found).arg("--version").output() {
        Ok(o) if o.status.success() => found,
        _ => panic!("{binary} not found: run scripts/setup.sh (it installs Prometheus; CI has it)"),
    }
}

impl Prometheus {
    /// Starts Prometheus scraping `target` (host:port, path /metrics) and evaluating
    /// `rule_files`, both every `every`, and waits until it is ready.
    pub fn start(target: &str, rule_files: &[PathBuf], every: &str) -> Prometheus {
        let binary = require("prometheus");
        let dir = tempfile::tempdir().expect("a temp dir");
        let rules: Vec<String> = rule_files
            .iter()
            .map(|p| {
                format!(
                    "  - {:?}\n",
                    p.canonicalize().expect("rule file").to_str().unwrap()
                )
            })
            .collect();
        let config = format!(
            "global:\n  scrape_interval: {every}\n  scrape_timeout: {every}\n  \
             evaluation_interval: {every}\nrule_files:\n{}scrape_configs:\n  \
             - job_name: surge\n    static_configs:\n      - targets: [\"{target}\"]\n",
            rules.concat()
        );
        let config_path = dir.path().join("prometheus.yml");
        std::fs::write(&config_path, config).unwrap();
        let log = std::fs::File::create(dir.path().join("prometheus.log")).unwrap();
        let port = free_port();
        let mut cmd = Command::new(binary);
        cmd.arg(format!("--config.file={}", config_path.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--log.level=warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
        // Without it, a test process killed outright (no Drop) would leave Prometheus.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let child = cmd.spawn().expect("spawn prometheus");
        let p = Prometheus {
            child,
            dir,
            base: format!("http://127.0.0.1:{port}"),
        };
        let start = Instant::now();
        while !matches!(ureq::get(&p.url("/-/ready")).timeout(Duration::from_secs(2)).call(), Ok(r) if r.status() == 200)
        {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "Prometheus not ready after 30 s; its log:\n{}",
                p.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        p
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("prometheus.log")).unwrap_or_default()
    }

    /// An instant query now: the `result` array, or Prometheus's error.
    pub fn query(&self, expr: &str) -> Result<Vec<Value>, String> {
        let resp = ureq::get(&self.url("/api/v1/query"))
            .query("query", expr)
            .timeout(Duration::from_secs(10))
            .call();
        let body: Value = match resp {
            Ok(r) => r.into_json().map_err(|e| e.to_string())?,
            Err(ureq::Error::Status(code, r)) => {
                let text = r.into_string().unwrap_or_default();
                return Err(format!("HTTP {code}: {text}"));
            }
            Err(e) => return Err(e.to_string()),
        };
        if body["status"] != "success" {
            return Err(body.to_string());
        }
        Ok(body["data"]["result"]
            .as_array()
            .cloned()
            .unwrap_or_default())
    }

    /// Every loaded rule (recording and alerting) as /api/v1/rules lists it: name,
    /// query, health, lastError, lastEvaluation...
    pub fn rules(&self) -> Vec<Value> {
        let body: Value = ureq::get(&self.url("/api/v1/rules"))
            .timeout(Duration::from_secs(10))
            .call()
            .expect("GET /api/v1/rules")
            .into_json()
            .expect("rules JSON");
        body["data"]["groups"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
            .collect()
    }
}
