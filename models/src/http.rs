//! HTTP for sources: JSON look-ups and streamed downloads with retries and resume.
//!
//! Uses ureq with the platform's root certificates (a site's TLS proxy may sign with a
//! private CA that only the system store knows).

use std::fs::File;
use std::io::{Seek, SeekFrom, Write};
use std::path::Path;
use std::time::Duration;

use crate::error::{ModelsError, Result};
use crate::fsutil::{copy_hashing, map_copy_err};
use crate::progress::Progress;
use crate::Cancel;

#[derive(Clone)]
pub struct Http {
    agent: ureq::Agent,
    /// Attempts per request, the first one included.
    attempts: u32,
    backoff: Duration,
}

/// Why one attempt failed: retry transient faults, give up at once on a definite answer.
enum Failure {
    Transient(String),
    Definite(String),
}

impl Http {
    /// `SURGE_HTTP_ATTEMPTS` (default 4), `SURGE_HTTP_BACKOFF_MS` (default 500, doubled
    /// per retry) and `SURGE_HTTP_READ_TIMEOUT_S` (default 60: a stalled transfer counts as
    /// dropped and is resumed) tune the retry policy; tests lower them to fail fast.
    pub fn from_env() -> Self {
        let attempts = env_u64("SURGE_HTTP_ATTEMPTS", 4).max(1) as u32;
        let backoff = Duration::from_millis(env_u64("SURGE_HTTP_BACKOFF_MS", 500));
        let agent = ureq::AgentBuilder::new()
            .timeout_connect(Duration::from_secs(15))
            .timeout_read(Duration::from_secs(env_u64(
                "SURGE_HTTP_READ_TIMEOUT_S",
                60,
            )))
            .user_agent(concat!("surge/", env!("CARGO_PKG_VERSION")))
            .build();
        Http {
            agent,
            attempts,
            backoff,
        }
    }

    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    /// GETs a JSON document, retrying transient failures.
    pub fn get_json(
        &self,
        url: &str,
        source_name: &str,
        cancel: &Cancel,
    ) -> Result<serde_json::Value> {
        self.with_retries(source_name, cancel, || {
            let resp = self.agent.get(url).call().map_err(classify)?;
            resp.into_json::<serde_json::Value>()
                .map_err(|e| Failure::Transient(format!("reading {url}: {e}")))
        })
    }

    /// Streams `url` into `file`, resuming with a `Range` request after a dropped
    /// connection instead of starting over. Returns the final length.
    pub fn download(
        &self,
        url: &str,
        file: &mut File,
        path: &Path,
        progress: &mut Progress,
        source_name: &str,
        cancel: &Cancel,
    ) -> Result<u64> {
        let mut io_error: Option<ModelsError> = None;
        let result = self.with_retries(source_name, cancel, || {
            let have = file
                .seek(SeekFrom::End(0))
                .map_err(|e| Failure::Definite(e.to_string()))?;
            let mut req = self.agent.get(url);
            if have > 0 {
                req = req.set("Range", &format!("bytes={have}-"));
            }
            let resp = req.call().map_err(classify)?;
            if have > 0 && resp.status() != 206 {
                // The server ignored the range: start from scratch.
                file.set_len(0)
                    .map_err(|e| Failure::Definite(e.to_string()))?;
                file.seek(SeekFrom::Start(0))
                    .map_err(|e| Failure::Definite(e.to_string()))?;
            }
            let start = file
                .stream_position()
                .map_err(|e| Failure::Definite(e.to_string()))?;
            progress.set_position(start);
            // ureq ends the body quietly when the server closes early, so compare what
            // arrived with what was announced and treat a short body as a dropped link.
            let announced: Option<u64> = resp.header("Content-Length").and_then(|v| v.parse().ok());
            let mut reader = resp.into_reader();
            let mut writer = WriteCounter {
                file: &mut *file,
                err: None,
            };
            match copy_hashing(&mut reader, &mut writer, cancel, |n| progress.inc(n)) {
                Ok((got, _)) if announced.is_some_and(|want| got < want) => {
                    Err(Failure::Transient(format!(
                        "connection closed after {got} of {} bytes",
                        announced.unwrap_or_default()
                    )))
                }
                Ok(_) => Ok(()),
                Err(e) => {
                    if let Some(werr) = writer.err.take() {
                        // A local write failure (disk full) is not the network's fault.
                        io_error = Some(ModelsError::io("writing download", path, werr));
                        return Err(Failure::Definite("local write failed".into()));
                    }
                    if cancel.is_cancelled() {
                        return Err(Failure::Definite("cancelled".into()));
                    }
                    Err(Failure::Transient(format!("connection dropped: {e}")))
                }
            }
        });
        if let Some(e) = io_error {
            return Err(e);
        }
        if cancel.is_cancelled() {
            return Err(ModelsError::Interrupted);
        }
        result?;
        file.flush()
            .and_then(|_| file.sync_all())
            .map_err(|e| map_copy_err(e, path, cancel))?;
        file.stream_position()
            .map_err(|e| ModelsError::io("seek", path, e))
    }

    fn with_retries<T>(
        &self,
        source_name: &str,
        cancel: &Cancel,
        mut attempt: impl FnMut() -> std::result::Result<T, Failure>,
    ) -> Result<T> {
        let mut last = String::new();
        for i in 0..self.attempts {
            if cancel.is_cancelled() {
                return Err(ModelsError::Interrupted);
            }
            if i > 0 {
                let wait = self.backoff * 2u32.pow(i - 1);
                tracing::warn!(
                    source = source_name,
                    attempt = i + 1,
                    "retrying in {wait:?}: {last}"
                );
                cancel.sleep(wait);
            }
            match attempt() {
                Ok(v) => return Ok(v),
                Err(Failure::Definite(reason)) => {
                    if cancel.is_cancelled() {
                        return Err(ModelsError::Interrupted);
                    }
                    return Err(ModelsError::SourceRejected {
                        source_name: source_name.to_string(),
                        reason,
                    });
                }
                Err(Failure::Transient(reason)) => last = reason,
            }
        }
        Err(ModelsError::Unreachable {
            source_name: source_name.to_string(),
            attempts: self.attempts,
            reason: last,
        })
    }
}

/// 4xx answers are definite (retrying a 404 does not help); 5xx and transport errors are not.
fn classify(e: ureq::Error) -> Failure {
    match e {
        ureq::Error::Status(code, resp) if (400..500).contains(&code) && code != 429 => {
            Failure::Definite(format!("HTTP {code} for {}", resp.get_url()))
        }
        ureq::Error::Status(code, resp) => {
            Failure::Transient(format!("HTTP {code} for {}", resp.get_url()))
        }
        ureq::Error::Transport(t) => Failure::Transient(t.to_string()),
    }
}

/// Remembers a write error so the download loop can tell a full disk from a dropped
/// connection (both surface as an `io::Error` from the copy).
struct WriteCounter<'a> {
    file: &'a mut File,
    err: Option<std::io::Error>,
}

impl Write for WriteCounter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.file.write(buf).inspect_err(|e| {
            self.err = Some(std::io::Error::new(e.kind(), e.to_string()));
        })
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

/// Resolves `reference` (a link found in the document at `base`) to an absolute URL, as
/// a browser would: package-index mirrors may list files as `../../packages/…`.
pub fn join_url(base: &str, reference: &str) -> String {
    if reference.contains("://") {
        return reference.to_string();
    }
    let base = base.split(['?', '#']).next().unwrap_or(base);
    let Some((scheme, rest)) = base.split_once("://") else {
        return reference.to_string();
    };
    if let Some(net) = reference.strip_prefix("//") {
        return format!("{scheme}://{net}");
    }
    let (host, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let (reference, suffix) = match reference.find(['?', '#']) {
        Some(i) => (&reference[..i], &reference[i..]),
        None => (reference, ""),
    };
    let joined = if reference.starts_with('/') {
        reference.to_string()
    } else {
        let dir = &path[..path.rfind('/').map_or(0, |i| i + 1)];
        format!("{dir}{reference}")
    };
    // Remove `.` and `..` segments.
    let mut segments: Vec<&str> = Vec::new();
    let trailing = joined.ends_with('/') || joined.ends_with("/.") || joined.ends_with("/..");
    for seg in joined.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            s => segments.push(s),
        }
    }
    let mut out = format!("{scheme}://{host}/{}", segments.join("/"));
    if trailing && !segments.is_empty() {
        out.push('/');
    }
    out.push_str(suffix);
    out
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[cfg(test)]
mod tests {
    use super::join_url;

    #[test]
    fn joins_relative_urls_like_a_browser() {
        let json = "https://pypi.org/pypi/pkg-part1/json";
        assert_eq!(
            join_url(json, "../../packages/packages/be/b4/x.whl"),
            "https://pypi.org/packages/packages/be/b4/x.whl"
        );
        assert_eq!(
            join_url(json, "https://files.example/x.whl"),
            "https://files.example/x.whl"
        );
        assert_eq!(
            join_url(json, "/files/x.whl"),
            "https://pypi.org/files/x.whl"
        );
        assert_eq!(
            join_url(json, "x.whl#sha256=ab"),
            "https://pypi.org/pypi/pkg-part1/x.whl#sha256=ab"
        );
        assert_eq!(
            join_url(json, "//cdn.example/x.whl"),
            "https://cdn.example/x.whl"
        );
        assert_eq!(
            join_url("http://127.0.0.1:8080/pypi/p/json?x=1", "../../files/p.whl"),
            "http://127.0.0.1:8080/files/p.whl"
        );
        // More `..` than segments stays at the root.
        assert_eq!(
            join_url(json, "../../../../x.whl"),
            "https://pypi.org/x.whl"
        );
    }
}
