//! Tests of the CloudEvents exporter: real SQLite, a real file and a real HTTP server.
use super::*;

fn record(id: &str) -> UsageRecord {
    UsageRecord::example(id, "acme", 1_764_900_000_123)
}

/// Commits rows `from..to` (ids `r{i}`) straight into `usage`, as the ledger's writer would.
fn insert(db: &Path, from: usize, to: usize) {
    let conn = super::super::ledger::open(db).unwrap();
    for i in from..to {
        conn.execute(
            "INSERT INTO usage (request_id, time_ms, tenant, key_id, model, route, status,
             finish_reason, prompt_tokens, completion_tokens, audio_seconds, queue_seconds,
             cold_start_seconds, execution_seconds, cost_usd, price_version, device)
             VALUES (?1, ?2, 'acme', 'k1', 'm', 'chat_completions', 200, 'stop', 3, 4,
             0.0, 0.01, 0.0, 0.05, 0.001, 'v1', 'cpu')",
            params![format!("r{i}"), 1_764_900_000_000i64 + i as i64],
        )
        .unwrap();
    }
}

fn config(file: Option<PathBuf>, url: Option<String>, interval_ms: u64) -> ExportConfig {
    ExportConfig {
        file,
        url,
        source: "test".into(),
        interval: Duration::from_millis(interval_ms),
    }
}

fn wait_for(what: &str, done: impl Fn() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "timed out: {what}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn ids(events: &[serde_json::Value]) -> Vec<String> {
    events
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_string())
        .collect()
}

fn expected(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("r{i}")).collect()
}

#[test]
fn cloud_event_has_openmeters_shape() {
    let e = cloud_event(&record("req-1"), "surge-eu1");
    assert_eq!(e["specversion"], "1.0");
    assert_eq!(e["type"], "surge.usage");
    assert_eq!(e["id"], "req-1");
    assert_eq!(e["source"], "surge-eu1");
    assert_eq!(e["subject"], "acme");
    assert_eq!(e["time"], "2025-12-05T02:00:00.123Z");
    assert_eq!(e["datacontenttype"], "application/json");
    assert_eq!(e["data"]["completion_tokens"], 20);
    assert_eq!(e["data"]["finish_reason"], "stop");
    assert_eq!(e["data"]["price_version"], "v1");
    assert_eq!(rfc3339_ms(0), "1970-01-01T00:00:00.000Z");
    assert_eq!(rfc3339_ms(951_782_400_007), "2000-02-29T00:00:00.007Z");
    assert_eq!(rfc3339_ms(-1), "1969-12-31T23:59:59.999Z");
}

#[test]
fn file_sink_exports_each_row_once_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let (db, out) = (dir.path().join("ledger.db"), dir.path().join("usage.jsonl"));
    insert(&db, 0, 3);
    // What a crash mid-append leaves: a torn line, which must not swallow the next event.
    std::fs::write(&out, "{\"torn").unwrap();
    let ex = Exporter::start(&db, config(Some(out.clone()), None, 20)).unwrap();
    wait_for("3 exported", || ex.exported() == 3);
    ex.stop();
    // A restart resumes at the saved cursor; rows committed after start are exported at
    // the latest by the final pass of stop (the interval is far too long to get there).
    let ex = Exporter::start(&db, config(Some(out.clone()), None, 3_600_000)).unwrap();
    insert(&db, 3, 5);
    ex.stop();
    let text = std::fs::read_to_string(&out).unwrap();
    assert!(text.starts_with("{\"torn\n{"), "{text}");
    let lines: Vec<serde_json::Value> = text
        .lines()
        .skip(1)
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(ids(&lines), expected(5));
    assert!(lines
        .iter()
        .all(|e| e["specversion"] == "1.0" && e["source"] == "test"));
    let conn = super::super::ledger::open(&db).unwrap();
    let cursor: i64 = conn
        .query_row("SELECT last_rowid FROM export_cursors", [], |r| r.get(0))
        .unwrap();
    assert_eq!(cursor, 5);
}

#[test]
fn http_sink_retries_until_accepted_and_never_resends() {
    let server = Arc::new(tiny_http::Server::http("127.0.0.1:0").unwrap());
    let url = format!(
        "http://{}/api/v1/events",
        server.server_addr().to_ip().unwrap()
    );
    // Every POST: the status it got, its content type, its events.
    type Post = (u16, String, Vec<serde_json::Value>);
    let posts = Arc::new(std::sync::Mutex::new(Vec::<Post>::new()));
    let handler = {
        let (server, posts) = (server.clone(), posts.clone());
        std::thread::spawn(move || {
            for mut req in server.incoming_requests() {
                let ct = req.headers().iter().find(|h| h.field.equiv("Content-Type"));
                let ct = ct.map(|h| h.value.to_string()).unwrap_or_default();
                let mut body = String::new();
                let _ = std::io::Read::read_to_string(req.as_reader(), &mut body);
                let events = serde_json::from_str(&body).unwrap_or_default();
                let mut posts = posts.lock().unwrap();
                let code = if posts.len() < 2 { 503 } else { 200 };
                posts.push((code, ct, events));
                let _ = req.respond(tiny_http::Response::empty(code));
            }
        })
    };
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("ledger.db");
    insert(&db, 0, 4);
    let ex = Exporter::start(&db, config(None, Some(url.clone()), 20)).unwrap();
    wait_for("4 exported", || ex.exported() == 4);
    // Several intervals with nothing new: no POST at all.
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(ex.failures(), 2);
    ex.stop();
    // A restart has nothing to send either.
    let ex = Exporter::start(&db, config(None, Some(url), 20)).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(ex.exported(), 0);
    ex.stop();
    server.unblock();
    handler.join().unwrap();
    let posts = posts.lock().unwrap();
    let codes: Vec<u16> = posts.iter().map(|p| p.0).collect();
    assert_eq!(
        codes,
        [503, 503, 200],
        "two refused, one accepted, none after"
    );
    for (_, ct, events) in posts.iter() {
        assert_eq!(ct, "application/cloudevents-batch+json");
        assert_eq!(
            ids(events),
            expected(4),
            "the same batch, in order, each time"
        );
    }
}
