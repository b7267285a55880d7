//! A minimal blocking HTTP client for tests: JSON in, (status, JSON) out, and SSE reading.

use std::io::{BufRead, BufReader};
use std::time::{Duration, Instant};

use serde_json::Value;

pub fn agent() -> ureq::Agent {
    ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(300))
        .build()
}

/// POSTs JSON (or raw bytes) and returns the status and parsed body, whatever the status.
pub fn post_raw(url: &str, body: &[u8]) -> (u16, Value) {
    let resp = match agent()
        .post(url)
        .set("Content-Type", "application/json")
        .send_bytes(body)
    {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("POST {url}: {e}"),
    };
    let status = resp.status();
    let text = resp.into_string().unwrap_or_default();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

pub fn post(url: &str, body: &Value) -> (u16, Value) {
    post_raw(url, body.to_string().as_bytes())
}

pub fn get(url: &str) -> (u16, String) {
    match agent().get(url).call() {
        Ok(r) => (r.status(), r.into_string().unwrap_or_default()),
        Err(ureq::Error::Status(c, r)) => (c, r.into_string().unwrap_or_default()),
        Err(e) => panic!("GET {url}: {e}"),
    }
}

/// One SSE `data:` payload with the time it was read, relative to the request start.
pub struct SseEvent {
    pub at: Duration,
    pub data: String,
}

/// Opens a streaming POST; returns the status and a line reader over the body.
pub fn open_stream(url: &str, body: &Value) -> (u16, Box<dyn BufRead + Send>) {
    let resp = match agent().post(url).send_string(&body.to_string()) {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("POST {url}: {e}"),
    };
    (resp.status(), Box::new(BufReader::new(resp.into_reader())))
}

/// Reads every `data:` event until `[DONE]` (included) or the end of the body.
pub fn read_sse(reader: &mut dyn BufRead, start: Instant) -> Vec<SseEvent> {
    let mut out = Vec::new();
    let mut line = String::new();
    loop {
        line.clear();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            break;
        }
        if let Some(data) = line.trim_end().strip_prefix("data:") {
            let data = data.trim_start().to_string();
            let done = data == "[DONE]";
            out.push(SseEvent {
                at: start.elapsed(),
                data,
            });
            if done {
                break;
            }
        }
    }
    out
}
