//! The status page end to end: a real `surge serve` with API keys and the default LLM.
//! A couple of streamed chats (the first one a cold start), then headless Chromium
//! renders `/status?key=…` (the page fetches `/status.json` itself, passing the key on)
//! and the numbers in the rendered DOM are checked against `/admin/pools` and
//! `/status.json` taken just before and just after — while a long stream is in flight.
//! And: both pages need an admin key (401 without one, 403 for a tenant's).
//!
//! Needs `chromium` (scripts/setup.sh installs Debian's; `SURGE_CHROMIUM` names another).

mod support;

use std::io::{BufRead, Read};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::gateway::{start_gateway, wait_until, Gateway};
use support::http;
use support::worker::LLM;

const ADMIN: &str = "sk-status-admin";
const TENANT: &str = "sk-status-tenant";

/// Keys, and a pool that keeps its worker (idle timeout far away) so the numbers hold
/// still while the browser renders.
const CONFIG: &str = r#"
autoscale_interval = 0.5
[defaults]
concurrency = 4
idle_timeout = 600

[[keys]]
key = "sk-status-admin"
name = "ops"
admin = true
[[keys]]
key = "sk-status-tenant"
name = "tenant"
"#;

/// How long one headless Chromium run may take.
const BROWSER_LIMIT: Duration = Duration::from_secs(60);

fn keyed_gateway() -> &'static Gateway {
    static GW: OnceLock<Gateway> = OnceLock::new();
    GW.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap().keep();
        let cfg = dir.join("surge.toml");
        std::fs::write(&cfg, CONFIG).unwrap();
        start_gateway(&["--config", cfg.to_str().unwrap()])
    })
}

/// GET with `key` (if any) as a bearer token: status, content type and body.
fn get(gw: &Gateway, path: &str, key: Option<&str>) -> (u16, String, String) {
    let mut req = http::agent().get(&gw.url(path));
    if let Some(k) = key {
        req = req.set("Authorization", &format!("Bearer {k}"));
    }
    let resp = match req.call() {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("GET {path}: {e}"),
    };
    let ctype = resp.content_type().to_string();
    (resp.status(), ctype, resp.into_string().unwrap_or_default())
}

fn get_json(gw: &Gateway, path: &str) -> Value {
    let (status, _, body) = get(gw, path, Some(ADMIN));
    assert_eq!(status, 200, "{path}: {body}");
    serde_json::from_str(&body).unwrap()
}

fn llm_pool(status_or_pools: &Value) -> Value {
    status_or_pools["pools"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["model"] == LLM)
        .cloned()
        .unwrap_or_else(|| panic!("no {LLM} pool in {status_or_pools}"))
}

#[test]
fn the_status_page_needs_an_admin_key() {
    let gw = keyed_gateway();
    for path in ["/status", "/", "/status.json"] {
        let (status, ctype, body) = get(gw, path, None);
        assert_eq!(status, 401, "{path} without a key: {body}");
        assert!(ctype.starts_with("application/json"), "{ctype}");
        let e: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(e["error"]["code"], "invalid_api_key", "{body}");

        let (status, _, body) = get(gw, path, Some("sk-nobody"));
        assert_eq!(status, 401, "{path} with an unknown key: {body}");

        let (status, _, body) = get(gw, path, Some(TENANT));
        assert_eq!(status, 403, "{path} with a tenant's key: {body}");
        let e: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(e["error"]["code"], "forbidden", "{body}");

        let (status, ctype, body) = get(gw, path, Some(ADMIN));
        assert_eq!(status, 200, "{path} with the admin key: {body}");
        if path == "/status.json" {
            assert_eq!(ctype, "application/json");
            let v: Value = serde_json::from_str(&body).unwrap();
            assert_eq!(v["object"], "surge.status", "{v}");
            assert_eq!(llm_pool(&v)["max_workers"], 1, "{v}");
        } else {
            assert_eq!(ctype, "text/html");
            assert!(body.contains("status.json"), "{body}");
        }
    }
    // A browser passes the key in the query string.
    let with = |key: &str| get(gw, &format!("/status?key={key}"), None).0;
    assert_eq!(with(ADMIN), 200);
    assert_eq!(with(TENANT), 403);
    assert_eq!(with("sk-nobody"), 401);
    assert_eq!(get(gw, &format!("/status.json?key={ADMIN}"), None).0, 200);
}

/// A headless Chromium, killed with its whole process group (the renderer and the
/// other helpers) if it is dropped still running: overstayed, or the test failed.
struct Browser {
    child: Child,
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Not reaped yet (only `try_wait` reaps, and it returned `None`), so the group
        // id is still this browser's.
        if matches!(self.child.try_wait(), Ok(None)) {
            unsafe { libc::kill(-(self.child.id() as i32), libc::SIGKILL) };
            let _ = self.child.wait();
        }
    }
}

fn chromium_path() -> String {
    let path = std::env::var("SURGE_CHROMIUM").unwrap_or_else(|_| "chromium".into());
    let found = Command::new(&path)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        found,
        "no `{path}`: the status page test needs headless Chromium (scripts/setup.sh \
         installs Debian's; SURGE_CHROMIUM names another)"
    );
    path
}

/// Runs headless Chromium on `url` with `args`, with a profile in `dir`; its stdout.
fn chromium(dir: &std::path::Path, args: &[&str], url: &str) -> String {
    let mut child = Command::new(chromium_path())
        .args([
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--no-default-browser-check",
            "--hide-scrollbars",
            "--virtual-time-budget=8000",
        ])
        .arg(format!("--user-data-dir={}", dir.join("profile").display()))
        .args(args)
        .arg(url)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .expect("start chromium");
    let mut stdout = child.stdout.take().unwrap();
    let mut browser = Browser { child };
    let reader = std::thread::spawn(move || {
        let mut out = String::new();
        let _ = stdout.read_to_string(&mut out);
        out
    });
    let start = Instant::now();
    let status = loop {
        if let Some(s) = browser.child.try_wait().unwrap() {
            break s;
        }
        assert!(
            start.elapsed() < BROWSER_LIMIT,
            "chromium still running after {BROWSER_LIMIT:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    drop(browser);
    let out = reader.join().unwrap();
    assert!(status.success(), "chromium: {status}");
    out
}

/// The opening tag of the element that `attr` (e.g. `id="usage-requests"`) starts in.
fn tag<'a>(dom: &'a str, attr: &str) -> Option<&'a str> {
    let at = dom.find(attr)?;
    let open = dom[..at].rfind('<')?;
    let close = at + dom[at..].find('>')?;
    Some(&dom[open..close])
}

/// The value of attribute `name` in an opening tag.
fn attribute<'a>(tag: &'a str, name: &str) -> Option<&'a str> {
    let start = format!(" {name}=\"");
    let v = &tag[tag.find(&start)? + start.len()..];
    Some(&v[..v.find('"')?])
}

/// The `data-value` of the element in `html` carrying `attr`.
fn value(html: &str, attr: &str) -> Option<String> {
    attribute(tag(html, attr)?, "data-value").map(str::to_string)
}

fn number(html: &str, attr: &str) -> f64 {
    let v = value(html, attr).unwrap_or_else(|| panic!("no {attr} with a data-value"));
    v.parse()
        .unwrap_or_else(|_| panic!("{attr}: data-value {v:?} is not a number"))
}

/// The rendered card of `model`'s pool.
fn pool_card<'a>(dom: &'a str, model: &str) -> &'a str {
    let head = format!("class=\"card pool\" data-model=\"{model}\"");
    let start = dom
        .find(&head)
        .unwrap_or_else(|| panic!("no card for {model} in the DOM"));
    let end = start + dom[start..].find("</section>").unwrap();
    &dom[start..end]
}

/// Asserts `got` lies between the values of `before` and `after` (equal when the
/// gateway did not change in between).
fn between(what: &str, got: f64, before: &Value, after: &Value) {
    let (a, b) = (before.as_f64().unwrap(), after.as_f64().unwrap());
    let (lo, hi) = (a.min(b), a.max(b));
    assert!(
        lo - 1e-9 <= got && got <= hi + 1e-9,
        "{what}: the page shows {got}, the gateway said {a} before and {b} after"
    );
}

fn streamed_chat(max_tokens: u32) -> Value {
    json!({
        "model": LLM,
        "messages": [{"role": "user", "content": "Tell me about the sea."}],
        "max_tokens": max_tokens,
        "ignore_eos": true,
        "temperature": 0,
        "stream": true,
    })
}

/// Sends a streamed chat with `TENANT`'s key and reads it to the end.
fn chat(gw: &Gateway) {
    let resp = http::agent()
        .post(&gw.url("/v1/chat/completions"))
        .set("Authorization", &format!("Bearer {TENANT}"))
        .send_string(&streamed_chat(8).to_string())
        .expect("a chat");
    let body = resp.into_string().unwrap();
    assert!(body.contains("[DONE]"), "{body}");
}

/// A long stream kept open (read a line at a time) until `stop` is set, then dropped:
/// the client hangs up and the gateway cancels it.
fn long_stream(gw: &Gateway, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<()> {
    let url = gw.url("/v1/chat/completions");
    std::thread::spawn(move || {
        let resp = http::agent()
            .post(&url)
            .set("Authorization", &format!("Bearer {TENANT}"))
            .send_string(&streamed_chat(2000).to_string())
            .expect("a long stream");
        let mut lines = std::io::BufReader::new(resp.into_reader()).lines();
        while !stop.load(Ordering::SeqCst) {
            match lines.next() {
                Some(Ok(l)) if l.contains("[DONE]") => return,
                Some(Ok(_)) => {}
                _ => return,
            }
        }
    })
}

#[test]
fn the_rendered_page_shows_what_the_gateway_reports() {
    let gw = keyed_gateway();
    let dir = tempfile::tempdir().unwrap();
    let t0 = Instant::now();

    // Cold: no worker and no cold start yet.
    let cold = get_json(gw, "/status.json");
    assert_eq!(llm_pool(&cold)["workers"]["ready"], 0, "{cold}");
    assert!(
        !cold["cold_starts"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["model"] == LLM),
        "{cold}"
    );
    chat(gw);
    chat(gw);

    // A stream in flight while the browser renders.
    let stop = Arc::new(AtomicBool::new(false));
    let streaming = long_stream(gw, stop.clone());
    let in_flight = || llm_pool(&get_json(gw, "/admin/pools"))["in_flight"] == 1;
    assert!(
        wait_until(Duration::from_secs(30), in_flight),
        "the long stream never got a slot"
    );
    // The usage of the two chats is in the ledger (it commits within a second).
    assert!(wait_until(Duration::from_secs(15), || {
        get_json(gw, "/status.json")["usage"]["total"]["requests"]
            .as_u64()
            .unwrap()
            >= 2
    }));

    let pools_before = llm_pool(&get_json(gw, "/admin/pools"));
    let before = get_json(gw, "/status.json");
    let url = gw.url(&format!("/status?key={ADMIN}"));
    let dom = chromium(dir.path(), &["--dump-dom"], &url);
    let after = get_json(gw, "/status.json");
    let pools_after = llm_pool(&get_json(gw, "/admin/pools"));

    // The page rendered /status.json (fetched with the key it was opened with).
    assert!(dom.contains("id=\"conn-text\">live<"), "not live: {dom}");
    let stamp = tag(&dom, "data-rendered=")
        .and_then(|t| attribute(t, "data-rendered"))
        .and_then(|v| v.parse::<f64>().ok())
        .expect("the body's data-rendered");
    between("render time", stamp, &before["time"], &after["time"]);

    // Pool numbers: as /admin/pools and /status.json said around the same time.
    let card = pool_card(&dom, LLM);
    let (pb, pa) = (llm_pool(&before), llm_pool(&after));
    for (field, admin) in [
        ("ready", "ready"),
        ("starting", "starting"),
        ("in_flight", "in_flight"),
        ("queued", "queued"),
    ] {
        let shown = number(card, &format!("data-field=\"{field}\""));
        between(field, shown, &pools_before[admin], &pools_after[admin]);
    }
    assert_eq!(number(card, "data-field=\"ready\""), 1.0);
    assert_eq!(number(card, "data-field=\"in_flight\""), 1.0);
    assert_eq!(number(card, "data-field=\"queued\""), 0.0);
    assert_eq!(number(card, "data-field=\"failed\""), 0.0);
    assert_eq!(number(card, "data-field=\"max_workers\""), 1.0);
    for (field, json) in [
        ("requests", "requests"),
        ("ttft_p50", "ttft_p50_seconds"),
        ("ttft_p95", "ttft_p95_seconds"),
        ("error_rate", "error_rate"),
    ] {
        let shown = number(card, &format!("data-field=\"{field}\""));
        between(field, shown, &pb["window"][json], &pa["window"][json]);
    }
    // Two chats (the stream is counted when it ends), both streamed: TTFTs exist.
    assert!(number(card, "data-field=\"requests\"") >= 2.0);
    assert!(number(card, "data-field=\"ttft_p50\"") > 0.0);
    assert_eq!(number(card, "data-field=\"error_rate\""), 0.0);

    // Cold starts: the one the first chat caused, as /admin/pools timed its worker.
    let rows: Vec<&str> = dom
        .match_indices("<tr data-cold-start=")
        .map(|(i, _)| {
            let end = i + dom[i..].find("</tr>").unwrap();
            &dom[i..end]
        })
        .collect();
    let listed = before["cold_starts"].as_array().unwrap();
    assert_eq!(rows.len(), listed.len(), "{listed:?}");
    let mine: Vec<&&str> = rows
        .iter()
        .filter(|r| r.contains(&format!("data-model=\"{LLM}\"")))
        .collect();
    assert_eq!(mine.len(), 1, "one cold start of {LLM}: {rows:?}");
    let worker = &pools_before["workers"][0];
    assert_eq!(
        number(mine[0], "data-field=\"worker\""),
        worker["id"].as_f64().unwrap()
    );
    let seconds = number(mine[0], "data-field=\"seconds\"");
    assert!(
        (seconds - worker["cold_start_seconds"].as_f64().unwrap()).abs() < 1e-6,
        "cold start {seconds} s on the page, {worker} in /admin/pools"
    );
    // The cold-start path's scale-up.
    assert!(
        dom.contains(&format!(
            "data-scale-event=\"\" data-model=\"{LLM}\" data-direction=\"up\" data-reason=\"panic\""
        )),
        "no scale-up listed"
    );

    // Usage from the ledger: the two chats at least.
    let shown = number(&dom, "id=\"usage-requests\"");
    between(
        "usage requests",
        shown,
        &before["usage"]["total"]["requests"],
        &after["usage"]["total"]["requests"],
    );
    assert!(number(&dom, "id=\"usage-completion-tokens\"") >= 16.0);
    assert!(number(&dom, "id=\"usage-execution-seconds\"") > 0.0);

    // A screenshot of the same page, into the test's temp dir.
    let shot = dir.path().join("status-page.png");
    let arg = format!("--screenshot={}", shot.display());
    chromium(dir.path(), &[&arg, "--window-size=1280,900"], &url);
    let png = std::fs::read(&shot).expect("the screenshot");
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG");
    assert!(
        png.len() > 10_000,
        "a blank screenshot? {} bytes",
        png.len()
    );

    stop.store(true, Ordering::SeqCst);
    streaming.join().unwrap();
    eprintln!(
        "status page: checked in {:.1} s; screenshot {} bytes",
        t0.elapsed().as_secs_f64(),
        png.len()
    );
}
