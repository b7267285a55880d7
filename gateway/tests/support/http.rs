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
    let mut decoder = surge_protocol::sse::Decoder::default();
    let mut out = Vec::new();
    loop {
        let chunk = match reader.fill_buf() {
            Ok([]) | Err(_) => break,
            Ok(b) => b.to_vec(),
        };
        reader.consume(chunk.len());
        for e in decoder.push(&chunk) {
            let done = e.is_done();
            let Some(data) = e.data else { continue };
            out.push(SseEvent {
                at: start.elapsed(),
                data,
            });
            if done {
                return out;
            }
        }
    }
    out
}

/// A streamed POST's JSON chunks, in order (`[DONE]` left out); panics unless 200.
#[allow(dead_code)]
pub fn stream_chunks(url: &str, body: &Value) -> Vec<Value> {
    let (status, mut reader) = open_stream(url, body);
    assert_eq!(status, 200, "{body}");
    read_sse(&mut reader, Instant::now())
        .into_iter()
        .filter(|e| e.data != "[DONE]")
        .map(|e| serde_json::from_str(&e.data).expect("a JSON chunk"))
        .collect()
}

/// A multipart/form-data body built by hand (ureq 2 has no multipart support).
pub struct Form {
    body: Vec<u8>,
}

const BOUNDARY: &str = "surge-test-boundary-7MA4YWxkTrZu0gW";

impl Default for Form {
    fn default() -> Self {
        Self::new()
    }
}

impl Form {
    pub fn new() -> Form {
        Form { body: Vec::new() }
    }

    pub fn text(mut self, name: &str, value: &str) -> Form {
        self.body.extend_from_slice(
            format!(
                "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n"
            )
            .as_bytes(),
        );
        self
    }

    pub fn file(mut self, name: &str, filename: &str, bytes: &[u8]) -> Form {
        self.body.extend_from_slice(
            format!(
                "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"{name}\"; \
                 filename=\"{filename}\"\r\nContent-Type: application/octet-stream\r\n\r\n"
            )
            .as_bytes(),
        );
        self.body.extend_from_slice(bytes);
        self.body.extend_from_slice(b"\r\n");
        self
    }

    pub fn content_type() -> String {
        format!("multipart/form-data; boundary={BOUNDARY}")
    }

    /// The finished body (closing boundary appended).
    pub fn finish(mut self) -> Vec<u8> {
        self.body
            .extend_from_slice(format!("--{BOUNDARY}--\r\n").as_bytes());
        self.body
    }

    /// POSTs the form to `url`.
    pub fn post(self, url: &str) -> Reply {
        post_bytes(url, &Form::content_type(), &self.finish())
    }
}

/// A response of any status with its headers and body text.
pub struct Reply {
    pub status: u16,
    headers: Vec<(String, String)>,
    pub text: String,
}

impl Reply {
    /// The body as JSON (panics with the body when it is not JSON).
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.text)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.text))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// POSTs `body` with `content_type`; returns the reply whatever its status.
pub fn post_bytes(url: &str, content_type: &str, body: &[u8]) -> Reply {
    let resp = match agent()
        .post(url)
        .set("Content-Type", content_type)
        .send_bytes(body)
    {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("POST {url}: {e}"),
    };
    let status = resp.status();
    let headers = resp
        .headers_names()
        .into_iter()
        .map(|n| {
            let v = resp.header(&n).unwrap_or_default().to_string();
            (n, v)
        })
        .collect();
    Reply {
        status,
        headers,
        text: resp.into_string().unwrap_or_default(),
    }
}
