//! The autoscaler end to end: a real `surge serve` with fast scaling settings and the
//! real default LLM, watched through `/admin/pools`, `/metrics` and /proc.

mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::gateway::{start_gateway, wait_until, worker_pids, Gateway};
use support::http;
use support::worker::LLM;

/// A gateway whose pools scale within seconds.
fn fast_gateway(dir: &tempfile::TempDir, pool: &str) -> Gateway {
    let cfg = dir.path().join("surge.toml");
    let text = format!(
        "cpu_budget = 16\nautoscale_interval = 0.2\n[defaults]\nconcurrency = 2\n\
         target_utilization = 1.0\nstable_window = 3\npanic_window = 0.6\nidle_timeout = 3\n\
         queue_size = 256\nqueue_timeout = 300\n{pool}\n"
    );
    std::fs::write(&cfg, text).unwrap();
    start_gateway(&["--config", cfg.to_str().unwrap()])
}

fn pool_view(gw: &Gateway) -> Value {
    support::gateway::pool_view(gw, LLM)
}

/// The sum of the samples named `name` that have every one of `labels`: each a pair as
/// written in the exposition (`state="ready"`) or a bare value some label has (a model).
fn metric(gw: &Gateway, name: &str, labels: &[&str]) -> f64 {
    use surge_protocol::prom;
    let (_, text) = http::get(&gw.url("/metrics"));
    let has = |s: &prom::Sample, x: &str| match prom::series(&format!("m{{{x}}}")) {
        Some((_, pairs)) => pairs.iter().all(|(k, v)| s.label(k) == Some(v.as_str())),
        None => s.labels.iter().any(|(_, v)| v == x),
    };
    prom::parse(&text)
        .iter()
        .filter(|s| s.name == name && labels.iter().all(|x| has(s, x)))
        .map(|s| s.value)
        .sum()
}

fn chat_body(max_tokens: u32) -> String {
    json!({
        "model": LLM,
        "messages": [{"role": "user", "content": "Tell me about the sea."}],
        "max_tokens": max_tokens,
        "ignore_eos": true,
        "temperature": 0,
    })
    .to_string()
}

fn post(url: &str, body: &str) -> u16 {
    match http::agent()
        .post(url)
        .set("Content-Type", "application/json")
        .send_string(body)
    {
        Ok(r) => {
            let _ = r.into_string();
            200
        }
        Err(ureq::Error::Status(code, _)) => code,
        Err(e) => panic!("POST {url}: {e}"),
    }
}

/// A burst of 12 concurrent requests at an empty pool (2 slots per worker) scales it to
/// at least 3 workers; after the idle timeout it is back to 0, with the events in the
/// metrics and no worker process left.
#[test]
fn a_burst_scales_from_zero_to_three_workers_and_back_to_zero() {
    let dir = tempfile::tempdir().unwrap();
    let gw = fast_gateway(&dir, "max_workers = 4");
    assert_eq!(pool_view(&gw)["ready"], 0);
    let url = gw.url("/v1/chat/completions");
    let body = chat_body(48);
    let done = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..12)
        .map(|_| {
            let (url, body) = (url.clone(), body.clone());
            std::thread::spawn(move || post(&url, &body))
        })
        .collect();
    // Watch the pool while the burst runs.
    let watcher = {
        let (done, admin) = (done.clone(), gw.url("/admin/pools"));
        std::thread::spawn(move || {
            let mut most = 0;
            while !done.load(Ordering::SeqCst) {
                let (_, text) = http::get(&admin);
                let v: Value = serde_json::from_str(&text).unwrap_or_default();
                for p in v["pools"].as_array().into_iter().flatten() {
                    if p["model"] == LLM {
                        let n =
                            p["ready"].as_u64().unwrap_or(0) + p["starting"].as_u64().unwrap_or(0);
                        most = most.max(n);
                    }
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            most
        })
    };
    let statuses: Vec<u16> = clients.into_iter().map(|c| c.join().unwrap()).collect();
    done.store(true, Ordering::SeqCst);
    let most = watcher.join().unwrap();
    assert!(statuses.iter().all(|&s| s == 200), "{statuses:?}");
    assert!(most >= 3, "at most {most} workers during the burst");
    let up = metric(&gw, "surge_scale_events_total", &[LLM, "direction=\"up\""]);
    assert!(up >= 3.0, "{up} scale-ups");

    // Idle: back to zero within idle_timeout plus a few ticks (generous for CI).
    let start = Instant::now();
    assert!(
        wait_until(Duration::from_secs(60), || {
            let p = pool_view(&gw);
            p["ready"] == 0 && p["starting"] == 0 && p["workers"].as_array().unwrap().is_empty()
        }),
        "{}",
        pool_view(&gw)
    );
    let took = start.elapsed();
    let p = pool_view(&gw);
    assert_eq!(p["desired"], 0, "{p}");
    assert_eq!(p["reason"], "idle", "{p}");
    assert!(
        took >= Duration::from_secs(2),
        "scaled down before idle_timeout: {took:?}"
    );
    let down = metric(
        &gw,
        "surge_scale_events_total",
        &[LLM, "direction=\"down\""],
    );
    assert!(down >= most as f64, "{down} scale-downs for {most} workers");
    assert_eq!(metric(&gw, "surge_workers", &[LLM, "state=\"ready\""]), 0.0);
    assert!(
        wait_until(Duration::from_secs(10), || worker_pids(&gw).is_empty()),
        "worker processes left: {:?}",
        worker_pids(&gw)
    );
}

/// A 10× spike (2 → 20 concurrent clients) over a warm pool finishes with no 5xx, and
/// the pool grows during it.
#[test]
fn a_ten_x_spike_over_a_warm_pool_has_no_5xx() {
    let dir = tempfile::tempdir().unwrap();
    let gw = fast_gateway(&dir, "min_workers = 1\nmax_workers = 4");
    assert!(
        wait_until(Duration::from_secs(60), || pool_view(&gw)["ready"] == 1),
        "{}",
        pool_view(&gw)
    );
    let url = gw.url("/v1/chat/completions");
    let body = chat_body(8);
    // Closed-loop clients: each sends requests back to back until its phase ends.
    let phase = |clients: usize, secs: f64| -> Vec<u16> {
        let until = Instant::now() + Duration::from_secs_f64(secs);
        let threads: Vec<_> = (0..clients)
            .map(|_| {
                let (url, body) = (url.clone(), body.clone());
                std::thread::spawn(move || {
                    let mut out = Vec::new();
                    while Instant::now() < until {
                        out.push(post(&url, &body));
                    }
                    out
                })
            })
            .collect();
        threads
            .into_iter()
            .flat_map(|t| t.join().unwrap())
            .collect()
    };
    let mut statuses = phase(2, 2.0);
    statuses.extend(phase(20, 5.0));
    let most = pool_view(&gw)["workers"].as_array().unwrap().len();
    statuses.extend(phase(2, 2.0));
    let errors: Vec<_> = statuses.iter().filter(|&&s| s >= 500).collect();
    assert!(
        errors.is_empty(),
        "{} of {} were 5xx",
        errors.len(),
        statuses.len()
    );
    assert!(statuses.iter().all(|&s| s == 200), "{statuses:?}");
    assert!(most >= 2, "the pool did not grow: {}", pool_view(&gw));
}
