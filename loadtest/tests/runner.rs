//! The whole `run` path against a small scripted HTTP server on loopback (real sockets,
//! real timing): SSE timing and token counts, error statuses and bodies, per-request
//! timeouts, the max_duration wall, max_in_flight drops, and the files written. The
//! server picks its behaviour from the request's `model` field.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

use surge_loadtest::run::{run, RunOptions, RunOutcome};
use surge_loadtest::speech::TempDir;

/// Serves forever on a background thread; returns the base URL.
fn scripted_server() -> String {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", l.local_addr().unwrap());
    std::thread::spawn(move || {
        for s in l.incoming().flatten() {
            std::thread::spawn(move || serve(s));
        }
    });
    base
}

fn serve(mut s: TcpStream) {
    let mut r = BufReader::new(s.try_clone().unwrap());
    let (mut line, mut len, mut path) = (String::new(), 0usize, String::new());
    loop {
        line.clear();
        if r.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        if path.is_empty() {
            path = line.split_whitespace().nth(1).unwrap_or("").to_string();
        }
        let l = line.to_ascii_lowercase();
        if let Some(v) = l.strip_prefix("content-length:") {
            len = v.trim().parse().unwrap_or(0);
        }
        if line == "\r\n" {
            break;
        }
    }
    let mut body = vec![0; len];
    let _ = r.read_exact(&mut body);
    let body = String::from_utf8_lossy(&body);
    let model = ["sse", "e503", "hang", "json"]
        .into_iter()
        .find(|m| body.contains(&format!("\"model\":\"{m}\"")))
        .unwrap_or(if path == "/metrics" { "metrics" } else { "" });
    let head = |status: &str, ct: &str| {
        format!("HTTP/1.1 {status}\r\nContent-Type: {ct}\r\nConnection: close\r\n\r\n")
    };
    let _ = match model {
        "sse" => {
            let _ = s.write_all(head("200 OK", "text/event-stream").as_bytes());
            for tok in ["a", "b", "c"] {
                std::thread::sleep(Duration::from_millis(50));
                let ev =
                    format!("data: {{\"choices\":[{{\"delta\":{{\"content\":\"{tok}\"}}}}]}}\n\n");
                let _ = s.write_all(ev.as_bytes());
                let _ = s.flush();
            }
            s.write_all(
                b"data: {\"choices\":[],\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":3}}\n\ndata: [DONE]\n\n",
            )
        }
        "json" => {
            let b = r#"{"choices":[{"message":{"content":"hi"}}],"usage":{"prompt_tokens":4,"completion_tokens":2}}"#;
            s.write_all(format!("{}{b}", head("200 OK", "application/json")).as_bytes())
        }
        "e503" => {
            let b = r#"{"error":{"message":"queue timeout","type":"server_error"}}"#;
            s.write_all(
                format!("{}{b}", head("503 Service Unavailable", "application/json")).as_bytes(),
            )
        }
        "hang" => {
            std::thread::sleep(Duration::from_secs(30));
            Ok(())
        }
        _ => s.write_all(head("404 Not Found", "text/plain").as_bytes()),
    };
}

fn go(dir: &TempDir, scenario: &str, fail_on: &[&str]) -> RunOutcome {
    let path = dir.path().join("s.toml");
    std::fs::write(&path, scenario).unwrap();
    run(&RunOptions {
        scenario: path,
        out: Some(dir.path().join("out")),
        fail_on: fail_on.iter().map(|s| s.to_string()).collect(),
        quiet: true,
        ..RunOptions::default()
    })
    .unwrap()
}

fn class(name: &str, model: &str, extra: &str) -> String {
    format!("[[class]]\nname = \"{name}\"\nkind = \"chat\"\nmodel = \"{model}\"\n{extra}\n")
}

#[test]
fn streams_errors_and_files() {
    let base = scripted_server();
    let dir = TempDir::new("lt-runner").unwrap();
    let scenario = format!(
        "target = \"{base}\"\n[schedule]\nkind = \"constant\"\nrps = 10\nduration = 1\n{}{}{}",
        class("s", "sse", "stream = true"),
        class("j", "json", ""),
        class("e", "e503", ""),
    );
    let o = go(
        &dir,
        &scenario,
        &[
            "status_5xx == 0",
            "class.s.ttft_p50 < 1",
            "errors_http_503 >= 1",
        ],
    );
    let t = &o.report.totals;
    assert_eq!((t.sent, t.ok + t.errors), (10, 10));
    let g = |n: &str| o.report.classes.iter().find(|c| c.name == n).unwrap();
    let (s, j, e) = (g("s"), g("j"), g("e"));
    assert!(
        s.sent > 0 && j.sent > 0 && e.sent > 0,
        "weights 1:1:1 over 10 requests"
    );
    assert_eq!(e.errors_by_kind["http_503"], e.sent);
    assert_eq!(s.errors + j.errors, 0);
    assert_eq!(s.tokens_out, 3 * s.sent as u64, "usage chunk's count");
    assert_eq!(j.tokens_out, 2 * j.sent as u64);
    // First token after ~50 ms, gaps ~50 ms.
    let ttft = s.ttft.p50.unwrap();
    assert!((0.04..0.5).contains(&ttft), "ttft {ttft}");
    let itl = s.itl.p50.unwrap();
    assert!((0.03..0.3).contains(&itl), "itl {itl}");
    assert_eq!(s.itl.count, 2 * s.ok);
    // Only the 5xx assertion fails, and it says so.
    assert_eq!(o.failures.len(), 1, "{:?}", o.failures);
    assert!(
        o.failures[0].contains("status_5xx == 0") && o.failures[0].contains(&e.sent.to_string())
    );
    // The error body is kept; every file is there; no /metrics at this server.
    let lines = std::fs::read_to_string(dir.path().join("out/requests.jsonl")).unwrap();
    assert_eq!(lines.lines().count(), 10);
    assert!(lines.contains("queue timeout"));
    assert!(o.report.server.is_none());
    assert!(dir.path().join("out/plot.svg").exists());
    assert!(dir.path().join("out/report.json").exists());
}

#[test]
fn timeouts_drops_and_the_hard_wall() {
    let base = scripted_server();
    let dir = TempDir::new("lt-runner").unwrap();
    // 20 arrivals in 2 s at a server that never answers, at most 3 in flight, 0.5 s
    // request timeout: requests time out, arrivals beyond 3 in flight are dropped.
    let scenario = format!(
        "target = \"{base}\"\ntimeout = 0.5\n[limits]\nmax_in_flight = 3\n[schedule]\nkind = \"constant\"\nrps = 10\nduration = 2\n{}",
        class("h", "hang", "")
    );
    let start = std::time::Instant::now();
    let o = go(&dir, &scenario, &[]);
    let t = &o.report.totals;
    assert_eq!(t.arrivals, 20);
    assert_eq!(t.sent + t.dropped, 20);
    assert!(
        t.dropped > 0 && t.sent >= 3,
        "{} sent, {} dropped",
        t.sent,
        t.dropped
    );
    assert_eq!(t.errors_by_kind["timeout"], t.sent);
    assert!(start.elapsed() < Duration::from_secs(5));

    // The hard wall: max_duration 1 s cancels what runs then and sends nothing after.
    let scenario = format!(
        "target = \"{base}\"\n[limits]\nmax_duration = 1.0\n[schedule]\nkind = \"constant\"\nrps = 4\nduration = 3\n{}",
        class("h", "hang", "")
    );
    let start = std::time::Instant::now();
    let o = go(&dir, &scenario, &["errors == 0"]);
    let t = &o.report.totals;
    assert_eq!((o.report.planned, t.sent, o.report.not_sent), (12, 4, 8));
    assert_eq!(t.errors_by_kind["cancelled"], 4);
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(o.failures, ["FAILED errors == 0: errors was 4"]);
}
