//! A server's `/metrics` during a bench: fetched whole, read with
//! [`surge_protocol::prom`], polled until a condition holds.

use std::time::{Duration, Instant};

/// `GET {base}/metrics` as text.
pub fn fetch(base: &str) -> Result<String, String> {
    ureq::get(&format!("{base}/metrics"))
        .timeout(Duration::from_secs(5))
        .call()
        .map_err(|e| format!("/metrics: {e}"))?
        .into_string()
        .map_err(|e| format!("/metrics: {e}"))
}

/// Polls `/metrics` every 50 ms until `ok` holds for it; an error after `timeout`.
pub fn wait_for(base: &str, timeout: Duration, ok: impl Fn(&str) -> bool) -> Result<(), String> {
    let start = Instant::now();
    loop {
        if ok(&fetch(base)?) {
            return Ok(());
        }
        if start.elapsed() > timeout {
            return Err(format!("not after {} s", timeout.as_secs()));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
