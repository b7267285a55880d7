//! A local stand-in for the package index's JSON API and the Hugging Face Hub's resolve
//! URLs, on 127.0.0.1, so error paths (bad checksums, corrupt wheels, slow or dropped
//! downloads) can be exercised without the real services.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sha2::{Digest, Sha256};
use tiny_http::{Header, Response, Server};

#[derive(Clone)]
pub struct Wheel {
    pub bytes: Vec<u8>,
    /// sha256 the index claims (defaults to the real one).
    pub claimed_sha256: String,
    /// Whether the index reports the size (absent size skips the free-space pre-check).
    pub report_size: bool,
}

#[derive(Default)]
struct State {
    /// package -> (version, filename, wheel)
    packages: HashMap<String, (String, String, Wheel)>,
    /// hf "org/repo/file" -> bytes
    hf_files: HashMap<String, Vec<u8>>,
    auth_headers: Vec<String>,
    /// Start offsets of the `Range` requests for files.
    range_starts: Vec<usize>,
}

pub struct FakeSources {
    pub base: String,
    state: Arc<Mutex<State>>,
    downloads: Arc<AtomicUsize>,
    /// Bytes per 10 ms tick when streaming files (0 = unthrottled).
    throttle: Arc<AtomicUsize>,
    /// When non-zero, the next file download is cut after this many bytes.
    cut_after: Arc<AtomicUsize>,
    /// List wheel URLs relative to the JSON page, as some index mirrors do.
    relative_urls: Arc<AtomicBool>,
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// A wheel (zip) holding `members`, stored uncompressed so it is quick to build.
pub fn make_wheel(members: &[(&str, &[u8])]) -> Vec<u8> {
    let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let opts =
        zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    for (name, data) in members {
        w.start_file(*name, opts).unwrap();
        w.write_all(data).unwrap();
    }
    w.finish().unwrap().into_inner()
}

/// Deterministic incompressible bytes.
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..len)
        .map(|_| {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (x >> 33) as u8
        })
        .collect()
}

impl FakeSources {
    pub fn start() -> FakeSources {
        let server = Server::http("127.0.0.1:0").unwrap();
        let port = server.server_addr().to_ip().unwrap().port();
        let base = format!("http://127.0.0.1:{port}");
        let state = Arc::new(Mutex::new(State::default()));
        let downloads = Arc::new(AtomicUsize::new(0));
        let throttle = Arc::new(AtomicUsize::new(0));
        let cut_after = Arc::new(AtomicUsize::new(0));
        let relative_urls = Arc::new(AtomicBool::new(false));
        let ctx = Arc::new(Ctx {
            state: state.clone(),
            downloads: downloads.clone(),
            throttle: throttle.clone(),
            cut_after: cut_after.clone(),
            relative_urls: relative_urls.clone(),
            base: base.clone(),
        });
        std::thread::spawn(move || {
            for req in server.incoming_requests() {
                let ctx = ctx.clone();
                std::thread::spawn(move || handle(req, &ctx));
            }
        });
        FakeSources {
            base,
            state,
            downloads,
            throttle,
            cut_after,
            relative_urls,
        }
    }

    /// From now on the JSON API lists wheel URLs as `../../files/NAME` (relative).
    pub fn use_relative_urls(&self) {
        self.relative_urls.store(true, Ordering::SeqCst);
    }

    pub fn add_wheel(&self, package: &str, version: &str, wheel: Wheel) {
        let filename = format!("{}-{version}-py3-none-any.whl", package.replace('-', "_"));
        self.state
            .lock()
            .unwrap()
            .packages
            .insert(package.to_string(), (version.to_string(), filename, wheel));
    }

    pub fn add_hf_file(&self, repo_file: &str, bytes: Vec<u8>) {
        self.state
            .lock()
            .unwrap()
            .hf_files
            .insert(repo_file.to_string(), bytes);
    }

    /// Cuts the connection of the next file download after `bytes` bytes.
    pub fn cut_next_download_after(&self, bytes: usize) {
        self.cut_after.store(bytes, Ordering::SeqCst);
    }

    pub fn range_starts(&self) -> Vec<usize> {
        self.state.lock().unwrap().range_starts.clone()
    }

    pub fn set_throttle(&self, bytes_per_tick: usize) {
        self.throttle.store(bytes_per_tick, Ordering::SeqCst);
    }

    /// Full (non-probe) file downloads served so far.
    pub fn downloads(&self) -> usize {
        self.downloads.load(Ordering::SeqCst)
    }

    pub fn auth_headers(&self) -> Vec<String> {
        self.state.lock().unwrap().auth_headers.clone()
    }
}

impl Wheel {
    pub fn honest(bytes: Vec<u8>) -> Wheel {
        Wheel {
            claimed_sha256: sha256_hex(&bytes),
            bytes,
            report_size: true,
        }
    }
}

fn header(k: &str, v: &str) -> Header {
    Header::from_bytes(k.as_bytes(), v.as_bytes()).unwrap()
}

struct Ctx {
    state: Arc<Mutex<State>>,
    downloads: Arc<AtomicUsize>,
    throttle: Arc<AtomicUsize>,
    cut_after: Arc<AtomicUsize>,
    relative_urls: Arc<AtomicBool>,
    base: String,
}

fn handle(req: tiny_http::Request, ctx: &Ctx) {
    let (st, base) = (&*ctx.state, ctx.base.as_str());
    let url = req.url().to_string();
    let range_start = req
        .headers()
        .iter()
        .find(|h| h.field.equiv("Range"))
        .and_then(|h| h.value.as_str().strip_prefix("bytes=").map(str::to_string))
        .and_then(|r| r.split('-').next().and_then(|s| s.parse::<usize>().ok()));
    let range_is_probe = req
        .headers()
        .iter()
        .any(|h| h.field.equiv("Range") && h.value.as_str() == "bytes=0-0");
    if let Some(auth) = req
        .headers()
        .iter()
        .find(|h| h.field.equiv("Authorization"))
    {
        st.lock().unwrap().auth_headers.push(auth.value.to_string());
    }

    // Package index JSON API.
    if let Some(pkg) = url
        .strip_prefix("/pypi/")
        .and_then(|r| r.strip_suffix("/json"))
    {
        let state = st.lock().unwrap();
        let Some((version, filename, wheel)) = state.packages.get(pkg) else {
            let _ = req.respond(Response::from_string("not found").with_status_code(404));
            return;
        };
        let url = if ctx.relative_urls.load(Ordering::SeqCst) {
            format!("../../files/{filename}")
        } else {
            format!("{base}/files/{filename}")
        };
        let mut file = serde_json::json!({
            "filename": filename,
            "url": url,
            "digests": {"sha256": wheel.claimed_sha256},
            "packagetype": "bdist_wheel",
        });
        if wheel.report_size {
            file["size"] = wheel.bytes.len().into();
        }
        let doc =
            serde_json::json!({"info": {"name": pkg}, "releases": {version.as_str(): [file]}});
        let _ = req.respond(
            Response::from_string(doc.to_string())
                .with_header(header("Content-Type", "application/json")),
        );
        return;
    }
    if let Some(filename) = url.strip_prefix("/files/") {
        let bytes = st
            .lock()
            .unwrap()
            .packages
            .values()
            .find(|(_, f, _)| f == filename)
            .map(|(_, _, w)| w.bytes.clone());
        return serve_bytes(req, bytes, range_start, false, ctx);
    }
    // Hub resolve URL: /{org}/{repo}/resolve/{rev}/{file}
    let parts: Vec<&str> = url.trim_start_matches('/').splitn(5, '/').collect();
    if parts.len() == 5 && parts[2] == "resolve" {
        let key = format!("{}/{}/{}", parts[0], parts[1], parts[4]);
        let bytes = st.lock().unwrap().hf_files.get(&key).cloned();
        return serve_bytes(req, bytes, range_start, range_is_probe, ctx);
    }
    let _ = req.respond(Response::from_string("no such route").with_status_code(404));
}

fn serve_bytes(
    req: tiny_http::Request,
    bytes: Option<Vec<u8>>,
    range_start: Option<usize>,
    probe: bool,
    ctx: &Ctx,
) {
    let Some(bytes) = bytes else {
        let _ = req.respond(Response::from_string("not found").with_status_code(404));
        return;
    };
    let total = bytes.len();
    let etag = format!("\"{}\"", sha256_hex(&bytes));
    let common = [
        header("ETag", &etag),
        header("X-Repo-Commit", "0123456789abcdef0123456789abcdef01234567"),
    ];
    if probe {
        let mut resp = Response::from_data(bytes[..1.min(total)].to_vec())
            .with_status_code(206)
            .with_header(header("Content-Range", &format!("bytes 0-0/{total}")));
        for h in common {
            resp = resp.with_header(h);
        }
        let _ = req.respond(resp);
        return;
    }
    ctx.downloads.fetch_add(1, Ordering::SeqCst);
    let start = range_start.unwrap_or(0).min(total);
    if range_start.is_some() {
        ctx.state.lock().unwrap().range_starts.push(start);
    }
    let cut = ctx.cut_after.swap(0, Ordering::SeqCst);
    let status = if range_start.is_some() { 206 } else { 200 };
    let body = Throttled {
        data: bytes[start..].to_vec(),
        pos: 0,
        per_tick: ctx.throttle.load(Ordering::SeqCst),
        cut_at: (cut > 0).then_some(cut),
    };
    let mut headers = common.to_vec();
    if status == 206 {
        headers.push(header(
            "Content-Range",
            &format!("bytes {start}-{}/{total}", total.saturating_sub(1)),
        ));
    }
    let len = total - start;
    // A Content-Length body (tiny_http would switch to chunked above 32 KiB), as CDNs send.
    let resp = Response::new(status.into(), headers, body, Some(len), None)
        .with_chunked_threshold(usize::MAX);
    let _ = req.respond(resp);
}

struct Throttled {
    data: Vec<u8>,
    pos: usize,
    per_tick: usize,
    /// Fail the body here, so the server drops the connection mid-transfer.
    cut_at: Option<usize>,
}

impl Read for Throttled {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let mut n = buf.len().min(self.data.len() - self.pos);
        if let Some(cut) = self.cut_at {
            if self.pos >= cut {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::ConnectionReset,
                    "cut",
                ));
            }
            n = n.min(cut - self.pos);
        }
        if self.per_tick > 0 {
            std::thread::sleep(Duration::from_millis(10));
            n = n.min(self.per_tick);
        }
        buf[..n].copy_from_slice(&self.data[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}
