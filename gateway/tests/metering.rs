//! Metering end to end through the real `surge serve` and the default LLM: usage records
//! as the client received them, budgets under concurrency, `/v1/usage`, the capacity
//! ledger, `kill -9`, the usage report and the CloudEvents export.
//!
//! Most tests share one gateway with keys, prices and a budget from [`CONFIG`], and
//! read its ledger database directly (the real SQLite file the gateway writes). Tests
//! that measure a whole gateway's life (busy time, a crash) start their own.

mod support;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use rusqlite::{Connection, OptionalExtension};
use serde_json::{json, Value};
use support::gateway::{start_gateway, wait_until, Gateway};
use support::http;
use support::speech;
use support::worker::{kill, wait_exit, LLM, WHISPER};

const ADMIN: &str = "sk-e2e-admin";
const TENANT_A: &str = "sk-e2e-a";
const TENANT_B: &str = "sk-e2e-b";
const BUDGETED: &str = "sk-e2e-budget";

/// Tokens priced so a worst case is exact: 10 completion tokens cost $0.01, prompt
/// tokens nothing; the budgeted key's $0.10 covers ten requests of `max_tokens: 10`.
const CONFIG: &str = r#"
[defaults]
concurrency = 8
queue_size = 256

[billing]
price_version = "e2e-1"
bill = "tokens"
[[billing.prices]]
completion_per_1k = 1.0
execution_second = 0.001
reserved_worker_hour = 0.36

[[keys]]
key = "sk-e2e-admin"
name = "ops"
admin = true
[[keys]]
key = "sk-e2e-a"
name = "tenant-a"
[[keys]]
key = "sk-e2e-b"
name = "tenant-b"
[[keys]]
key = "sk-e2e-budget"
name = "tenant-budget"
budget_usd = 0.10
budget_period = "total"
"#;

struct Metered {
    gw: Gateway,
    data: PathBuf,
    export: PathBuf,
}

/// The shared metered gateway, with its data directory and export file.
fn metered() -> &'static Metered {
    static M: OnceLock<Metered> = OnceLock::new();
    M.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap().keep();
        let export = dir.join("usage.jsonl");
        let cfg = dir.join("surge.toml");
        let text = format!(
            "{CONFIG}\n[usage_export]\nfile = {:?}\ninterval = 0.2\n",
            export.to_str().unwrap()
        );
        std::fs::write(&cfg, text).unwrap();
        let data = dir.join("data");
        let gw = start_gateway(&[
            "--config",
            cfg.to_str().unwrap(),
            "--data-dir",
            data.to_str().unwrap(),
        ]);
        Metered { gw, data, export }
    })
}

fn chat(max_tokens: u64, stream: bool) -> Value {
    json!({
        "model": LLM,
        "messages": [{"role": "user", "content": "Count from one to one hundred in words."}],
        "max_tokens": max_tokens,
        "temperature": 0,
        "ignore_eos": true,
        "stream": stream,
    })
}

/// POSTs `body` with `key`; the status, the body and the `x-request-id`.
fn post(gw: &Gateway, path: &str, key: &str, body: &Value) -> (u16, Value, Option<String>) {
    let resp = match http::agent()
        .post(&gw.url(path))
        .set("Authorization", &format!("Bearer {key}"))
        .send_string(&body.to_string())
    {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("POST {path}: {e}"),
    };
    let id = resp.header("x-request-id").map(str::to_string);
    let status = resp.status();
    let v = serde_json::from_str(&resp.into_string().unwrap_or_default()).unwrap_or(Value::Null);
    (status, v, id)
}

fn get(gw: &Gateway, path: &str, key: &str) -> (u16, Value) {
    let resp = match http::agent()
        .get(&gw.url(path))
        .set("Authorization", &format!("Bearer {key}"))
        .call()
    {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("GET {path}: {e}"),
    };
    let status = resp.status();
    (status, resp.into_json().unwrap_or(Value::Null))
}

fn ledger(data: &Path) -> Connection {
    Connection::open(data.join("ledger.db")).unwrap()
}

/// The usage row of `request_id`, once the ledger's writer committed it (≤ 1 s).
fn record(data: &Path, request_id: &str) -> HashMap<String, Value> {
    let mut row = None;
    let found = wait_until(Duration::from_secs(10), || {
        row = ledger(data)
            .query_row(
                "SELECT json_object('status', status, 'finish_reason', finish_reason,
                    'prompt_tokens', prompt_tokens, 'completion_tokens', completion_tokens,
                    'execution_seconds', execution_seconds, 'cost_usd', cost_usd,
                    'tenant', tenant, 'key_id', key_id, 'price_version', price_version,
                    'queue_seconds', queue_seconds, 'device', device,
                    'audio_seconds', audio_seconds, 'route', route)
                 FROM usage WHERE request_id = ?1",
                [request_id],
                |r| r.get::<_, String>(0),
            )
            .optional()
            .unwrap();
        row.is_some()
    });
    assert!(found, "no usage record for {request_id}");
    serde_json::from_str(&row.unwrap()).unwrap()
}

/// A streamed chat read over a raw socket: the client reads `keep` token chunks, takes
/// whatever else already arrived, and hangs up. It is billed exactly the tokens of the
/// last chunk it received — not 0, not `max_tokens` — and the record says `cancelled`.
#[test]
fn a_client_that_hangs_up_is_billed_the_tokens_it_received() {
    let m = metered();
    let body = chat(200, true).to_string();
    let mut sock = TcpStream::connect(("127.0.0.1", m.gw.port)).unwrap();
    write!(
        sock,
        "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TENANT_A}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut reader = BufReader::new(sock.try_clone().unwrap());
    let mut request_id = None;
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        if let Some(v) = line.to_ascii_lowercase().strip_prefix("x-request-id:") {
            request_id = Some(v.trim().to_string());
        }
        if line == "\r\n" {
            break;
        }
    }
    let request_id = request_id.expect("an x-request-id header");
    let mut decoder = surge_protocol::sse::Decoder::default();
    let mut received = 0u64;
    let mut token_chunks = 0;
    let mut take = |bytes: &[u8], received: &mut u64, chunks: &mut usize| {
        for e in decoder.push(bytes) {
            let Some(d) = e.data else { continue };
            let Ok(v) = serde_json::from_str::<Value>(&d) else {
                continue;
            };
            if let Some(n) = v["surge_meter"]["completion_tokens"].as_u64() {
                *received = (*received).max(n);
                *chunks += usize::from(n > 0);
            }
        }
    };
    while token_chunks < 20 {
        let buf = reader.fill_buf().unwrap().to_vec();
        assert!(!buf.is_empty(), "the stream ended early");
        reader.consume(buf.len());
        take(&buf, &mut received, &mut token_chunks);
    }
    // Whatever else is already here was received too; then hang up.
    sock.set_nonblocking(true).unwrap();
    let mut rest = Vec::new();
    let _ = reader.get_mut().read_to_end(&mut rest);
    take(&rest, &mut received, &mut token_chunks);
    drop(reader);
    sock.shutdown(std::net::Shutdown::Both).unwrap();
    drop(sock);

    let r = record(&m.data, &request_id);
    assert_eq!(r["finish_reason"], "cancelled", "{r:?}");
    assert_eq!(r["status"], 200);
    assert_eq!(r["completion_tokens"], received, "{r:?}");
    assert!((20..200).contains(&received), "{received}");
    assert!(r["prompt_tokens"].as_u64().unwrap() > 10, "{r:?}");
    assert!(r["execution_seconds"].as_f64().unwrap() > 0.0, "{r:?}");
    assert_eq!(r["tenant"], "tenant-a");
    // Tokens billed: the completion tokens at $1 per 1k.
    let cost = r["cost_usd"].as_f64().unwrap();
    assert!((cost - received as f64 / 1000.0).abs() < 1e-9, "{r:?}");
}

/// A stream read to the end is billed its final usage, which the client can see too.
#[test]
fn a_finished_stream_is_billed_its_usage() {
    let m = metered();
    let mut body = chat(12, true);
    body["stream_options"] = json!({"include_usage": true});
    let resp = http::agent()
        .post(&m.gw.url("/v1/chat/completions"))
        .set("Authorization", &format!("Bearer {TENANT_A}"))
        .send_string(&body.to_string())
        .unwrap();
    let id = resp.header("x-request-id").unwrap().to_string();
    let mut reader = BufReader::new(resp.into_reader());
    let events = http::read_sse(&mut reader, Instant::now());
    let usage: Value = events
        .iter()
        .filter_map(|e| serde_json::from_str::<Value>(&e.data).ok())
        .find(|v| v["usage"].is_object())
        .expect("a usage chunk")["usage"]
        .clone();
    let r = record(&m.data, &id);
    assert_eq!(r["finish_reason"], "length");
    assert_eq!(r["completion_tokens"], usage["completion_tokens"]);
    assert_eq!(r["completion_tokens"], 12);
    assert_eq!(r["prompt_tokens"], usage["prompt_tokens"]);
    assert_eq!(r["price_version"], "e2e-1");
    assert_eq!(r["device"], "cpu");
}

/// 50 concurrent requests against a budget that covers 10 worst cases: at most 10 run,
/// the rest get 429 `insufficient_quota` before any work, and the key never spends more
/// than its budget.
#[test]
fn concurrent_requests_cannot_overspend_a_budget() {
    let m = metered();
    let barrier = std::sync::Barrier::new(50);
    let results: Vec<(u16, Value)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..50)
            .map(|_| {
                s.spawn(|| {
                    barrier.wait();
                    let (status, v, _) =
                        post(&m.gw, "/v1/chat/completions", BUDGETED, &chat(10, false));
                    (status, v)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let ok = results.iter().filter(|(s, _)| *s == 200).count();
    assert!((1..=10).contains(&ok), "{ok} requests ran");
    for (status, v) in results.iter().filter(|(s, _)| *s != 200) {
        assert_eq!(*status, 429, "{v}");
        assert_eq!(v["error"]["code"], "insufficient_quota", "{v}");
        assert_eq!(v["error"]["type"], "insufficient_quota", "{v}");
    }
    let spent = || -> f64 {
        ledger(&m.data)
            .query_row(
                "SELECT COALESCE(SUM(cost_usd), 0) FROM usage WHERE tenant = 'tenant-budget'",
                [],
                |r| r.get(0),
            )
            .unwrap()
    };
    assert!(wait_until(Duration::from_secs(10), || spent()
        >= ok as f64 * 0.01 - 1e-9));
    assert!(spent() <= 0.10 + 1e-9, "spent {}", spent());
    // The refused requests were recorded too, as rejected and free.
    let rejected: i64 = ledger(&m.data)
        .query_row(
            "SELECT count(*) FROM usage WHERE tenant = 'tenant-budget' AND status = 429
             AND finish_reason = 'rejected' AND cost_usd = 0",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(rejected as usize, 50 - ok);
}

/// `/v1/usage` answers for the caller's own tenant; an admin key may name another; bad
/// input gets a 400 naming the parameter; an unknown key 401. Every request also
/// reaches the CloudEvents export file.
#[test]
fn usage_api_isolates_tenants_and_refuses_bad_input() {
    let m = metered();
    let (s, _, id_b) = post(&m.gw, "/v1/chat/completions", TENANT_B, &chat(4, false));
    assert_eq!(s, 200);
    let id_b = id_b.unwrap();
    record(&m.data, &id_b);
    let (s, v) = get(&m.gw, "/v1/usage?group_by=model", TENANT_B);
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["tenant"], "tenant-b");
    let rows = v["data"].as_array().unwrap();
    assert_eq!(rows.len(), 1, "{v}");
    assert_eq!(rows[0]["model"], LLM);
    assert!(rows[0]["completion_tokens"].as_u64().unwrap() >= 4, "{v}");
    // Tenant A sees none of B's requests, and may not ask for them.
    let (_, a) = get(&m.gw, "/v1/usage", TENANT_A);
    assert_ne!(a["tenant"], "tenant-b");
    let (s, v) = get(&m.gw, "/v1/usage?tenant=tenant-b", TENANT_A);
    assert_eq!(s, 403, "{v}");
    let (s, v) = get(&m.gw, "/v1/usage?tenant=tenant-b&group_by=day,key", ADMIN);
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["tenant"], "tenant-b");
    assert_eq!(v["data"][0]["key_id"], "config:tenant-b", "{v}");
    for (query, param) in [
        ("start=yesterday", "start"),
        ("end=2026-13-40", "end"),
        ("start=2026-12-05&end=2026-12-01", "start"),
        ("group_by=tenant", "group_by"),
        ("color=blue", "color"),
    ] {
        let (s, v) = get(&m.gw, &format!("/v1/usage?{query}"), TENANT_B);
        assert_eq!(s, 400, "{query}: {v}");
        assert_eq!(v["error"]["param"], param, "{query}: {v}");
    }
    let (s, _) = get(&m.gw, "/v1/usage", "sk-e2e-unknown");
    assert_eq!(s, 401);
    // The export file gets every record as a CloudEvent, within its interval.
    let exported = wait_until(Duration::from_secs(10), || {
        std::fs::read_to_string(&m.export).is_ok_and(|t| {
            t.lines()
                .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                .any(|e| e["id"] == id_b.as_str() && e["subject"] == "tenant-b")
        })
    });
    assert!(
        exported,
        "request {id_b} never reached {}",
        m.export.display()
    );
    // And the metrics: billed tokens by model and tenant, the export's events.
    use surge_protocol::prom;
    let (_, text) = http::get(&m.gw.url("/metrics"));
    let billed = prom::sum(
        &text,
        "surge_billed_tokens_total",
        &[
            ("tenant", "tenant-b"),
            ("kind", "completion"),
            ("model", LLM),
        ],
    );
    assert!(billed >= 4.0, "{billed}");
    let events = prom::sum(
        &text,
        "surge_usage_export_total",
        &[("outcome", "exported")],
    );
    assert!(events >= 1.0, "{events}");
}

/// A transcription is billed its audio length and execution, from the worker's
/// metering headers — also in a plain-text response, which has no `usage` to read.
#[test]
fn a_transcription_is_billed_its_audio() {
    let m = metered();
    let tone: Vec<i16> = (0..32_000)
        .map(|i| ((i as f32 * 0.05).sin() * 3000.0) as i16)
        .collect();
    let form = http::Form::new()
        .text("model", WHISPER)
        .text("response_format", "text")
        .file("file", "tone.wav", &speech::wav(16_000, &tone));
    let resp = http::agent()
        .post(&m.gw.url("/v1/audio/transcriptions"))
        .set("Authorization", &format!("Bearer {TENANT_A}"))
        .set("Content-Type", &http::Form::content_type())
        .send_bytes(&form.finish())
        .unwrap();
    let id = resp.header("x-request-id").unwrap().to_string();
    let _ = resp.into_string();
    let r = record(&m.data, &id);
    assert_eq!(r["route"], "audio_transcriptions");
    assert_eq!(r["status"], 200);
    assert!(
        (r["audio_seconds"].as_f64().unwrap() - 2.0).abs() < 0.01,
        "{r:?}"
    );
    assert!(r["execution_seconds"].as_f64().unwrap() > 0.0, "{r:?}");
    assert_eq!(r["completion_tokens"], 0);
}

/// The execution seconds billed to N concurrent requests (each its fair share of every
/// batch step it took part in) add up to the time the worker was busy, within 5%: what
/// a worker does is billed once, to the requests it did it for. Then `surge usage
/// report` reads the same ledger: requests, tokens and both sides of the comparison.
#[test]
fn fair_shares_add_up_to_the_worker_busy_time() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let cfg = dir.path().join("surge.toml");
    std::fs::write(&cfg, "[defaults]\nconcurrency = 8\n").unwrap();
    let mut gw = start_gateway(&[
        "--config",
        cfg.to_str().unwrap(),
        "--data-dir",
        data.to_str().unwrap(),
    ]);
    // A worker first, so its cold start is not part of the busy time measured.
    let (s, v) = http::post(&gw.url("/v1/chat/completions"), &chat(1, false));
    assert_eq!(s, 200, "{v}");
    std::thread::sleep(Duration::from_millis(300));
    let n = 4;
    std::thread::scope(|s| {
        for i in 0..n {
            let gw = &gw;
            s.spawn(move || {
                let (s, v) = http::post(&gw.url("/v1/chat/completions"), &chat(24 + 8 * i, false));
                assert_eq!(s, 200, "{v}");
            });
        }
    });
    kill(gw.child.id(), "-TERM");
    assert!(wait_exit(&mut gw.child, Duration::from_secs(30), "gateway").success());
    let conn = ledger(&data);
    let billed: f64 = conn
        .query_row("SELECT SUM(execution_seconds) FROM usage", [], |r| r.get(0))
        .unwrap();
    let busy_ms: i64 = conn
        .query_row(
            "SELECT SUM(end_ms - start_ms) FROM worker_spans WHERE phase = 'busy'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    let busy = busy_ms as f64 / 1000.0;
    eprintln!("billed {billed:.3} s of execution, worker busy {busy:.3} s");
    assert!(
        (billed - busy).abs() <= 0.05 * busy,
        "billed {billed:.3} s vs busy {busy:.3} s"
    );

    let out = support::worker::surge()
        .args([
            "usage",
            "report",
            "--json",
            "--data-dir",
            data.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let text = report.to_string();
    assert!(text.contains(LLM), "{report}");
    let csv = support::worker::surge()
        .args([
            "usage",
            "report",
            "--csv",
            "--data-dir",
            data.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(csv.status.success());
    assert!(String::from_utf8_lossy(&csv.stdout).lines().count() > 1);
}

/// `kill -9` of the gateway under load: the database opens cleanly (`PRAGMA
/// integrity_check`), no request is recorded twice, and every request that finished
/// more than the writer's flush window (1 s) before the kill is there. A gateway
/// restarted on the same ledger records on.
#[test]
fn kill_9_loses_at_most_the_flush_window() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let args = ["--data-dir", data.to_str().unwrap()];
    let mut gw = start_gateway(&args);
    let started = Instant::now();
    let done: std::sync::Mutex<Vec<(String, Instant)>> = Default::default();
    let stop = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let resp = http::agent()
                        .post(&gw.url("/v1/chat/completions"))
                        .send_string(&chat(2, false).to_string());
                    match resp {
                        Ok(r) if r.status() == 200 => {
                            let id = r.header("x-request-id").unwrap().to_string();
                            let _ = r.into_string();
                            done.lock().unwrap().push((id, Instant::now()));
                        }
                        _ => break,
                    }
                }
            });
        }
        std::thread::sleep(Duration::from_secs(4));
        kill(gw.child.id(), "-KILL");
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
    });
    let killed = Instant::now();
    let _ = gw.child.wait();
    let done = done.into_inner().unwrap();
    assert!(
        done.len() >= 8,
        "only {} requests in {:?}",
        done.len(),
        started.elapsed()
    );

    let conn = ledger(&data);
    let ok: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(ok, "ok");
    let (rows, ids): (i64, i64) = conn
        .query_row(
            "SELECT count(*), count(DISTINCT request_id) FROM usage",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!(rows, ids, "a request recorded twice");
    let mut lost = Vec::new();
    for (id, at) in &done {
        let there: Option<i64> = conn
            .query_row("SELECT 1 FROM usage WHERE request_id = ?1", [id], |r| {
                r.get(0)
            })
            .optional()
            .unwrap();
        if there.is_none() {
            lost.push(killed.duration_since(*at));
        }
    }
    eprintln!(
        "{} of {} finished requests lost: {lost:?}",
        lost.len(),
        done.len()
    );
    // The window plus the time a record takes from the response's end to the queue.
    let window = Duration::from_millis(1000 + 250);
    assert!(lost.iter().all(|age| *age <= window), "{lost:?}");
    drop(conn);

    let gw = start_gateway(&args);
    let (_, _, id) = post(&gw, "/v1/chat/completions", "none", &chat(2, false));
    record(&data, &id.unwrap());
}
/// `surge keys create|ls|revoke` against a gateway's data directory: a created key is
/// accepted, listings never show its secret, a revoked key is refused on its very next
/// request (no restart), and bad input is a clear CLI error. (The model does not exist, so
/// an accepted key gets 404 without starting a worker.)
#[test]
fn ledger_keys_work_and_revoke_at_once() {
    let data = tempfile::tempdir().unwrap();
    let dir = data.path().to_str().unwrap();
    let keys = |args: &[&str]| {
        let out = support::worker::surge()
            .args(["keys", "--data-dir", dir])
            .args(args)
            .output()
            .unwrap();
        let text = |b: &[u8]| String::from_utf8_lossy(b).trim().to_string();
        (out.status.success(), text(&out.stdout), text(&out.stderr))
    };
    let (ok, key, err) = keys(&["create", "--tenant", "acme", "--name", "ci", "--rps", "50"]);
    assert!(ok, "{err}");
    assert!(key.starts_with("sk-surge-"), "{key}");
    let id = key.split('-').nth(2).unwrap().to_string();
    let gw = start_gateway(&["--data-dir", dir]);
    let post = |auth: Option<&str>| {
        let mut req =
            ureq::post(&gw.url("/v1/chat/completions")).set("Content-Type", "application/json");
        if let Some(k) = auth {
            req = req.set("Authorization", &format!("Bearer {k}"));
        }
        let body = json!({"model": "no-such-model", "messages": []}).to_string();
        match req.send_string(&body) {
            Ok(r) => r.status(),
            Err(ureq::Error::Status(s, _)) => s,
            Err(e) => panic!("{e}"),
        }
    };
    assert_eq!(post(None), 401);
    assert_eq!(post(Some("sk-surge-00000000-nope")), 401);
    assert_eq!(post(Some(&key)), 404, "accepted, then no such model");
    let (ok, listing, err) = keys(&["ls", "--json"]);
    assert!(ok, "{err}");
    let rows: Value = serde_json::from_str(&listing).unwrap();
    assert_eq!(rows[0]["id"], id.as_str());
    assert_eq!(rows[0]["tenant"], "acme");
    assert!(
        !listing.contains(&key),
        "a listing must not show the secret"
    );
    let (ok, _, err) = keys(&["revoke", &id]);
    assert!(ok, "{err}");
    // Another live key keeps the gateway closed; the revoked one fails at once.
    assert!(keys(&["create", "--tenant", "other"]).0);
    assert_eq!(post(Some(&key)), 401);
    for bad in [
        vec!["create", "--tenant", " "],
        vec![
            "create",
            "--tenant",
            "t",
            "--budget",
            "-1",
            "--budget-period",
            "day",
        ],
        vec!["create", "--tenant", "t", "--budget", "5"],
        vec!["revoke", "no-such-id"],
    ] {
        let (ok, _, err) = keys(&bad);
        assert!(!ok && !err.is_empty(), "{bad:?} should fail with a message");
    }
}

/// The capacity ledger: a worker's life reaches the ledger database as phase spans —
/// its start and its busy time at least — committed by the time a SIGTERMed gateway has
/// exited (the clean shutdown loses nothing).
#[test]
fn worker_phases_reach_the_ledger_by_shutdown() {
    let data = tempfile::tempdir().unwrap();
    let dir = data.path().to_str().unwrap();
    let mut gw = start_gateway(&["--data-dir", dir]);
    let (status, v) = http::post(&gw.url("/v1/chat/completions"), &chat(8, false));
    assert_eq!(status, 200, "{v}");
    kill(gw.child.id(), "-TERM");
    let exit = wait_exit(&mut gw.child, Duration::from_secs(30), "gateway");
    assert!(exit.success(), "{exit}");
    let conn = rusqlite::Connection::open(data.path().join("ledger.db")).unwrap();
    let mut q = conn
        .prepare("SELECT phase, sum(end_ms - start_ms) FROM worker_spans WHERE model = ?1 GROUP BY phase")
        .unwrap();
    let phases: std::collections::HashMap<String, i64> = q
        .query_map([LLM], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert!(
        phases.get("starting").is_some_and(|&ms| ms > 0),
        "{phases:?}"
    );
    assert!(phases.get("busy").is_some_and(|&ms| ms > 0), "{phases:?}");
}
