//! End to end through the real `surge serve`: one gateway (with the default models in the
//! shared test cache) shared by every test; workers cold-start on the first request.

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::gateway::{alive, gateway, start_gateway, wait_until, worker_pids, Gateway};
use support::http::{self, Form};
use support::speech;
use support::worker::{kill, wait_exit, LLM, WHISPER};

fn chat(model: &str, extra: Value) -> Value {
    let mut body = json!({
        "model": model,
        "messages": [{"role": "user", "content": "What is the capital of France?"}],
        "max_tokens": 8,
        "temperature": 0,
    });
    body.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    body
}

fn assert_error(status: u16, body: &Value, want_status: u16, code: Option<&str>) {
    assert_eq!(status, want_status, "{body}");
    let e = &body["error"];
    assert!(e["message"].is_string(), "{body}");
    assert!(e["type"].is_string(), "{body}");
    if let Some(c) = code {
        assert_eq!(e["code"], c, "{body}");
    }
}

#[test]
fn models_lists_names_and_aliases() {
    let gw = gateway();
    let (status, text) = http::get(&gw.url("/v1/models"));
    assert_eq!(status, 200, "{text}");
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["object"], "list");
    let ids: Vec<&str> = v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    for id in [LLM, "smollm2", WHISPER, "whisper-1"] {
        assert!(ids.contains(&id), "{id} missing from {ids:?}");
    }
    let (status, text) = http::get(&gw.url("/v1/models/smollm2"));
    assert_eq!(status, 200, "{text}");
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        (v["id"].as_str(), v["root"].as_str()),
        (Some("smollm2"), Some(LLM))
    );
    let (status, text) = http::get(&gw.url("/v1/models/gpt-4"));
    assert_error(
        status,
        &serde_json::from_str(&text).unwrap(),
        404,
        Some("model_not_found"),
    );
    assert_eq!(http::get(&gw.url("/health")).0, 200);
    assert_eq!(http::get(&gw.url("/ready")).0, 200);
}

#[test]
fn chat_completion_cold_starts_a_worker() {
    let gw = gateway();
    let (status, v) = http::post(&gw.url("/v1/chat/completions"), &chat("smollm2", json!({})));
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["object"], "chat.completion");
    let text = v["choices"][0]["message"]["content"].as_str().unwrap();
    assert!(!text.is_empty(), "{v}");
    assert!(v["usage"]["completion_tokens"].as_u64().unwrap() > 0, "{v}");
}

fn stream(gw: &Gateway, path: &str, body: Value) -> Vec<String> {
    let (status, mut reader) = http::open_stream(&gw.url(path), &body);
    assert_eq!(status, 200);
    http::read_sse(&mut *reader, Instant::now())
        .into_iter()
        .map(|e| e.data)
        .collect()
}

fn is_usage_chunk(data: &str) -> bool {
    serde_json::from_str::<Value>(data).is_ok_and(|v| {
        v["choices"].as_array().is_some_and(|c| c.is_empty()) && !v["usage"].is_null()
    })
}

#[test]
fn streams_pass_through_and_the_usage_chunk_only_when_asked() {
    let gw = gateway();
    let events = stream(
        gw,
        "/v1/chat/completions",
        chat("smollm2", json!({"stream": true})),
    );
    assert!(events.len() >= 4, "{events:?}");
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    assert!(!events.iter().any(|e| is_usage_chunk(e)), "{events:?}");
    let content: String = events[..events.len() - 1]
        .iter()
        .filter_map(|e| serde_json::from_str::<Value>(e).ok())
        .filter_map(|v| {
            v["choices"][0]["delta"]["content"]
                .as_str()
                .map(String::from)
        })
        .collect();
    assert!(!content.is_empty(), "{events:?}");

    let events = stream(
        gw,
        "/v1/chat/completions",
        chat(
            LLM,
            json!({"stream": true, "stream_options": {"include_usage": true}}),
        ),
    );
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    let usage: Vec<_> = events.iter().filter(|e| is_usage_chunk(e)).collect();
    assert_eq!(usage.len(), 1, "{events:?}");
    // The usage chunk is the last one before [DONE].
    assert!(is_usage_chunk(&events[events.len() - 2]), "{events:?}");
}

#[test]
fn completions_work() {
    let gw = gateway();
    let body = json!({"model": "smollm2", "prompt": "The capital of France is", "max_tokens": 5});
    let (status, v) = http::post(&gw.url("/v1/completions"), &body);
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["object"], "text_completion");
    assert!(v["choices"][0]["text"].is_string(), "{v}");
    let mut body = body;
    body["stream"] = json!(true);
    let events = stream(gw, "/v1/completions", body);
    assert!(events.len() >= 3, "{events:?}");
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    assert!(!events.iter().any(|e| is_usage_chunk(e)), "{events:?}");
}

#[test]
fn gateway_errors_are_openai_shaped() {
    let gw = gateway();
    let chat_url = gw.url("/v1/chat/completions");
    let (s, v) = http::post(&chat_url, &chat("gpt-4", json!({})));
    assert_error(s, &v, 404, Some("model_not_found"));
    assert_eq!(v["error"]["param"], "model");
    let (s, text) = http::get(&gw.url("/v1/nothing"));
    assert_error(s, &serde_json::from_str(&text).unwrap(), 404, None);
    // Wrong method on an inference route: 404 like OpenAI's "Invalid URL".
    let (s, text) = http::get(&chat_url);
    assert_error(s, &serde_json::from_str(&text).unwrap(), 404, None);
    let (s, v) = http::post_raw(&chat_url, b"{\"model\": \"smollm2\", ");
    assert_error(s, &v, 400, None);
    let (s, v) = http::post(&chat_url, &json!({"messages": []}));
    assert_error(s, &v, 400, None);
    assert_eq!(v["error"]["param"], "model");
    let (s, v) = http::post(&chat_url, &chat("whisper-1", json!({})));
    assert_error(s, &v, 400, None);
    assert_eq!(v["error"]["param"], "model");
    let r = Form::new()
        .text("model", "smollm2")
        .file("file", "a.wav", &speech::wav(16_000, &[0; 1600]))
        .post(&gw.url("/v1/audio/transcriptions"));
    assert_error(r.status, &r.json(), 400, None);
    // Over the JSON body limit (4 MiB by default): refused on Content-Length alone,
    // before the client sends the body (as curl does with `Expect: 100-continue`).
    let head = raw_head(
        gw,
        &format!(
            "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nExpect: 100-continue\r\n\r\n",
            (4 << 20) + 1
        ),
    );
    assert!(head.starts_with("HTTP/1.1 413"), "{head}");
    assert!(head.contains("invalid_request_error"), "{head}");
}

/// Sends raw request bytes and reads the response until the connection closes.
fn raw_head(gw: &Gateway, request: &str) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", gw.port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

#[test]
fn transcriptions_route_by_the_model_field() {
    let gw = gateway();
    let url = gw.url("/v1/audio/transcriptions");
    // 3 s of a quiet tone: a 96 KB upload, larger than pingora's 64 KiB retry buffer,
    // so it is forwarded as a subrequest with the body preset.
    let samples: Vec<i16> = (0..48_000)
        .map(|i| ((i as f32 * 0.05).sin() * 300.0) as i16)
        .collect();
    let audio = speech::wav(16_000, &samples);
    let r = Form::new()
        .text("model", "whisper-1")
        .file("file", "tone.wav", &audio)
        .post(&url);
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(r.json()["text"].is_string(), "{}", r.text);
    // `model` after a large file is found as well: the whole body is read first.
    let r = Form::new()
        .file("file", "tone.wav", &audio)
        .text("model", "whisper-1")
        .post(&url);
    assert_eq!(r.status, 200, "{}", r.text);
    let r = Form::new()
        .file("file", "tone.wav", &audio)
        .text("model", "no-such-whisper")
        .post(&url);
    assert_error(r.status, &r.json(), 404, Some("model_not_found"));
    // A small upload is read whole, so the field is found wherever it is.
    let small = speech::wav(16_000, &samples[..8_000]);
    let r = Form::new()
        .file("file", "tone.wav", &small)
        .text("model", WHISPER)
        .post(&url);
    assert_eq!(r.status, 200, "{}", r.text);
}

/// JSON bodies over the 64 KiB retry buffer with `model` (and `stream_options`) at the
/// end: routed, streamed and metered like small ones.
#[test]
fn large_json_bodies_are_routed_by_their_last_keys() {
    let gw = gateway();
    let pad = "x".repeat(100_000);
    let body = |stream: bool| {
        let mut text = chat(LLM, json!({"user": pad, "stream": stream})).to_string();
        // Move `model` and `stream_options` to the end of the text.
        text = text.replace(&format!("\"model\":\"{LLM}\","), "");
        text.pop();
        text.push_str(&format!(
            ",\"stream_options\":{{\"include_usage\":true}},\"model\":\"{LLM}\"}}"
        ));
        assert!(text.len() > 100_000 && text.ends_with(&format!("\"{LLM}\"}}")));
        text
    };
    let r = http::agent()
        .post(&gw.url("/v1/chat/completions"))
        .set("Content-Type", "application/json")
        .send_string(&body(false))
        .expect("large chat");
    assert_eq!(r.status(), 200);
    let v: Value = serde_json::from_str(&r.into_string().unwrap()).unwrap();
    assert_eq!(v["object"], "chat.completion", "{v}");

    let r = http::agent()
        .post(&gw.url("/v1/chat/completions"))
        .set("Content-Type", "application/json")
        .send_string(&body(true))
        .expect("large streaming chat");
    assert_eq!(r.status(), 200);
    let mut reader = BufReader::new(r.into_reader());
    let events: Vec<String> = http::read_sse(&mut reader, Instant::now())
        .into_iter()
        .map(|e| e.data)
        .collect();
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    assert!(is_usage_chunk(&events[events.len() - 2]), "{events:?}");
}

/// A streaming request that waits for a busy one-slot worker gets `: waiting`
/// heartbeats; when the queue timeout passes first it gets an error event and
/// `[DONE]`, and when the slot frees it gets the stream.
#[test]
fn waiting_streams_get_heartbeats() {
    let gw = start_gateway(&[
        "--max-workers",
        "1",
        "--concurrency",
        "1",
        "--sse-heartbeat",
        "0.1",
        "--queue-timeout",
        "2",
    ]);
    let (busy, _) = long_stream_on_one_worker(&gw);
    let short = chat(LLM, json!({"stream": true, "max_tokens": 4}));
    let lines = |reader: &mut dyn BufRead| -> Vec<String> {
        let mut out = Vec::new();
        let mut line = String::new();
        while reader.read_line(&mut line).unwrap_or(0) > 0 {
            if !line.trim().is_empty() {
                out.push(line.trim_end().to_string());
            }
            line.clear();
        }
        out
    };

    // The queue timeout passes while the long stream holds the slot.
    let mut waiting = open_chat_stream(&gw, &short, Duration::from_secs(30));
    let got = lines(&mut *waiting);
    let beats = got.iter().filter(|l| l.starts_with(": waiting")).count();
    assert!(beats >= 3, "{got:?}");
    let error = got
        .iter()
        .find(|l| l.starts_with("data: {"))
        .expect("error event");
    let v: Value = serde_json::from_str(&error["data: ".len()..]).unwrap();
    assert!(v["error"]["message"].is_string(), "{v}");
    assert_eq!(
        got.last().map(String::as_str),
        Some("data: [DONE]"),
        "{got:?}"
    );

    // This time the slot frees: the long stream's client goes away.
    let mut waiting = open_chat_stream(&gw, &short, Duration::from_secs(60));
    let mut first = String::new();
    waiting.read_line(&mut first).unwrap();
    assert!(first.starts_with(": waiting"), "{first:?}");
    drop(busy);
    let got = lines(&mut *waiting);
    assert_eq!(
        got.last().map(String::as_str),
        Some("data: [DONE]"),
        "{got:?}"
    );
    assert!(
        got.iter().any(|l| l.contains("chat.completion.chunk")),
        "{got:?}"
    );
}

#[test]
fn expect_100_continue_is_answered() {
    let gw = gateway();
    let body = chat("smollm2", json!({"max_tokens": 2})).to_string();
    let mut s = TcpStream::connect(("127.0.0.1", gw.port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(300))).unwrap();
    write!(
        s,
        "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .unwrap();
    let mut reader = BufReader::new(s.try_clone().unwrap());
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    assert!(line.starts_with("HTTP/1.1 100"), "{line:?}");
    line.clear();
    reader.read_line(&mut line).unwrap(); // blank line after the 100
    s.write_all(body.as_bytes()).unwrap();
    let mut rest = String::new();
    reader.read_to_string(&mut rest).unwrap();
    assert!(rest.starts_with("HTTP/1.1 200"), "{rest}");
    assert!(rest.contains("chat.completion"), "{rest}");
}

#[test]
fn metrics_show_requests_and_cold_starts() {
    let gw = gateway();
    let (status, v) = http::post(&gw.url("/v1/chat/completions"), &chat(LLM, json!({})));
    assert_eq!(status, 200, "{v}");
    let (status, text) = http::get(&gw.url("/metrics"));
    assert_eq!(status, 200);
    let sample = |series: &str| surge_protocol::prom::value_of(&text, series).unwrap_or(0.0);
    assert!(
        sample(&format!(
            "surge_requests_total{{model=\"{LLM}\",route=\"chat_completions\",status=\"200\"}}"
        )) >= 1.0,
        "{text}"
    );
    assert!(
        sample(&format!(
            "surge_cold_start_duration_seconds_count{{model=\"{LLM}\"}}"
        )) >= 1.0,
        "{text}"
    );
    assert!(
        sample(&format!(
            "surge_tokens_total{{kind=\"completion\",model=\"{LLM}\"}}"
        )) >= 1.0,
        "{text}"
    );
}

/// Issue 13, defect 4: the CPU budget is real. The shared gateway runs the default pool
/// config: no `worker_cores`, so every CPU pool is charged an equal share of
/// `cpu_budget` (1 core each for the two default models on a 2-core machine) and the
/// shares add up to no more than the budget. The LLM worker is started with `--threads`
/// = its share, reports that many compute threads in `/health` (read with the gateway's
/// own health client) and, having served a request, runs at most that many minus one
/// helper threads in each compute pool (before the fix: one per core beyond the first,
/// whatever it was charged).
#[test]
fn cpu_workers_run_on_the_cores_they_are_charged() {
    use support::procfs::{cmdline, pool_threads, thread_names};
    let gw = gateway();
    let (status, v) = http::post(&gw.url("/v1/chat/completions"), &chat(LLM, json!({})));
    assert_eq!(status, 200, "{v}");
    let (pid, args) = worker_pids(gw)
        .into_iter()
        .find_map(|pid| {
            let args = cmdline(pid)?;
            args.iter().any(|a| a == LLM).then_some((pid, args))
        })
        .expect("an LLM worker");
    let (_, text) = http::get(&gw.url("/admin/pools"));
    let view: Value = serde_json::from_str(&text).unwrap();
    let charged: f64 = view["pools"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["device"] == "cpu")
        .map(|p| p["worker_cost"].as_f64().unwrap())
        .sum();
    let budget = view["budget"]["cpu"]["capacity"].as_f64().unwrap();
    let used = view["budget"]["cpu"]["used"].as_f64().unwrap();
    assert!(used <= budget, "{used} cores in use of {budget}: {view}");
    // Every pool is charged at least one whole core: the shares can only all fit when
    // there are no more CPU pools than cores (a cache holding more models than the
    // machine has cores evicts instead; `used` above is what runs).
    let cpu_pools = view["pools"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["device"] == "cpu")
        .count();
    if cpu_pools as f64 <= budget {
        assert!(
            charged <= budget,
            "{charged} cores charged of {budget}: {view}"
        );
    }
    let share = support::gateway::pool_view(gw, LLM)["worker_cost"]
        .as_f64()
        .unwrap();
    let threads = share.ceil() as usize;
    let flag = threads.to_string();
    assert!(
        args.windows(2).any(|w| w[0] == "--threads" && w[1] == flag),
        "{args:?}"
    );
    let socket = args
        .iter()
        .find_map(|a| a.strip_prefix("unix:"))
        .expect("a unix socket");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let reply = rt
        .block_on(surge_protocol::worker::health::get(
            std::path::Path::new(socket),
            Duration::from_secs(5),
        ))
        .expect("the worker answers /health");
    assert_eq!(reply.code, 200);
    let health = reply.health.expect("a protocol /health body");
    assert_eq!(health.threads, Some(threads), "{health:?}");
    let (kernel, candle) = pool_threads(pid);
    assert!(
        kernel < threads && candle < threads,
        "{:?}",
        thread_names(pid)
    );
    // Memory is the budget's second dimension: the machine's share is known, and the
    // ready worker is charged its measured resident memory (VmRSS, read at ready and
    // raised at each tick), not the estimate from its weights.
    let memory = &view["budget"]["cpu"]["memory"];
    let capacity = memory["capacity"].as_f64().expect("cpu_memory_budget");
    assert!(
        capacity > 0.0 && memory["used"].as_f64().unwrap() > 0.0,
        "{view}"
    );
    let pool = support::gateway::pool_view(gw, LLM);
    let estimate = pool["worker_memory_bytes"].as_f64().unwrap();
    let worker = pool["workers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["pid"] == pid)
        .expect("the worker in its pool's view")
        .clone();
    let charged = worker["memory_bytes"].as_f64().unwrap();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        .expect("VmRSS")
        * 1024.0;
    assert!(
        charged >= rss * 0.5 && charged <= rss * 2.0,
        "charged {charged} B, resident {rss} B (estimate {estimate} B): {pool}"
    );
}

/// API keys from the config file: no or a wrong key → 401; a key over its
/// requests-per-second → 429 with `Retry-After` and `x-ratelimit-*` headers. (An unknown
/// model keeps these requests from starting workers: keys are checked before routing.)
#[test]
fn api_keys_and_rate_limits() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("surge.toml");
    std::fs::write(
        &cfg,
        "[[keys]]\nkey = \"sk-test\"\nname = \"tester\"\nrequests_per_second = 1\n",
    )
    .unwrap();
    let gw = start_gateway(&["--config", cfg.to_str().unwrap()]);
    let body = json!({"model": "no-such-model", "messages": []}).to_string();
    let post = |key: Option<&str>| {
        let mut req =
            ureq::post(&gw.url("/v1/chat/completions")).set("Content-Type", "application/json");
        if let Some(k) = key {
            req = req.set("Authorization", &format!("Bearer {k}"));
        }
        match req.send_string(&body) {
            Ok(r) => r,
            Err(ureq::Error::Status(_, r)) => r,
            Err(e) => panic!("{e}"),
        }
    };
    for key in [None, Some("sk-wrong")] {
        let r = post(key);
        let status = r.status();
        let v: Value = r.into_json().unwrap();
        assert_error(status, &v, 401, Some("invalid_api_key"));
    }
    // The first request is admitted (and gets the router's 404), the next is over quota.
    let r = post(Some("sk-test"));
    assert_eq!(r.status(), 404);
    let r = post(Some("sk-test"));
    assert_eq!(r.status(), 429);
    assert!(r.header("retry-after").is_some());
    assert_eq!(r.header("x-ratelimit-limit-requests"), Some("1"));
    assert_eq!(r.header("x-ratelimit-remaining-requests"), Some("0"));
    let v: Value = r.into_json().unwrap();
    assert_eq!(v["error"]["type"], "rate_limit_error");
    // Listings need a key, without counting against its quota; probes do not.
    let (status, text) = http::get(&gw.url("/v1/models"));
    assert_error(
        status,
        &serde_json::from_str(&text).unwrap(),
        401,
        Some("invalid_api_key"),
    );
    let r = ureq::get(&gw.url("/v1/models"))
        .set("Authorization", "Bearer sk-test")
        .call()
        .expect("listing with a key");
    assert_eq!(r.status(), 200);
    assert_eq!(http::get(&gw.url("/health")).0, 200);
}

/// Opens a streaming chat whose body reads time out after `read_timeout` (a hang fails
/// the test instead of blocking it).
fn open_chat_stream(gw: &Gateway, body: &Value, read_timeout: Duration) -> Box<dyn BufRead> {
    let agent = ureq::AgentBuilder::new()
        .timeout_connect(Duration::from_secs(10))
        .timeout_read(read_timeout)
        .build();
    let resp = agent
        .post(&gw.url("/v1/chat/completions"))
        .send_string(&body.to_string())
        .unwrap_or_else(|e| panic!("streaming chat: {e}"));
    assert_eq!(resp.status(), 200);
    Box::new(BufReader::new(resp.into_reader()))
}

/// The next `n` SSE data payloads (fewer if the stream ends).
fn next_events(reader: &mut dyn BufRead, n: usize) -> Vec<String> {
    let mut out = Vec::new();
    let mut line = String::new();
    while out.len() < n {
        line.clear();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            break;
        }
        if let Some(d) = line.trim_end().strip_prefix("data:") {
            out.push(d.trim_start().to_string());
        }
    }
    out
}

/// A burst far over capacity (1 worker × 4 slots + 8 queued) gets 200s and 429s with
/// `Retry-After`, never a 5xx.
#[test]
fn burst_over_capacity_gets_200_or_429() {
    let gw = start_gateway(&[
        "--max-workers",
        "1",
        "--concurrency",
        "4",
        "--queue-size",
        "8",
        // Long enough that a slow CI machine does not turn waiting requests into 503s.
        "--queue-timeout",
        "300",
    ]);
    let url = gw.url("/v1/chat/completions");
    let body = chat("smollm2", json!({"max_tokens": 4})).to_string();
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(30));
    let threads: Vec<_> = (0..30)
        .map(|_| {
            let (url, body, barrier) = (url.clone(), body.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                let resp = match http::agent()
                    .post(&url)
                    .set("Content-Type", "application/json")
                    .send_string(&body)
                {
                    Ok(r) => r,
                    Err(ureq::Error::Status(_, r)) => r,
                    Err(e) => panic!("POST {url}: {e}"),
                };
                let status = resp.status();
                let retry_after = resp.header("retry-after").map(String::from);
                let text = resp.into_string().unwrap_or_default();
                (status, retry_after, text)
            })
        })
        .collect();
    let results: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    let ok = results.iter().filter(|r| r.0 == 200).count();
    let limited = results.iter().filter(|r| r.0 == 429).count();
    for (status, retry_after, text) in &results {
        assert!(matches!(status, 200 | 429), "{status}: {text}");
        if *status == 429 {
            assert!(retry_after.is_some(), "429 without Retry-After: {text}");
            let v: Value = serde_json::from_str(text).unwrap();
            assert_error(*status, &v, 429, None);
        }
    }
    assert!(ok >= 4, "{ok} succeeded, {limited} limited");
    assert!(limited >= 1, "{ok} succeeded, {limited} limited");
}

/// Opens a long streaming chat on a one-worker gateway and reads its first events;
/// returns the open stream and the pid of the one worker serving it.
fn long_stream_on_one_worker(gw: &Gateway) -> (Box<dyn BufRead>, Vec<u32>) {
    let body = json!({
        "model": "smollm2",
        "messages": [{"role": "user", "content": "Count from 1 to 1000, one number per line."}],
        "max_tokens": 2000,
        // The stream must outlast what the tests do meanwhile.
        "ignore_eos": true,
        "temperature": 0,
        "stream": true,
    });
    let mut reader = open_chat_stream(gw, &body, Duration::from_secs(60));
    let first = next_events(&mut *reader, 3);
    assert_eq!(first.len(), 3, "{first:?}");
    let pids = worker_pids(gw);
    assert_eq!(pids.len(), 1, "{pids:?}");
    (reader, pids)
}

/// A worker SIGKILLed mid-stream: the client gets an error event and `[DONE]` (no
/// hang), and the next request is served by a replacement worker.
#[test]
fn worker_killed_mid_stream_ends_the_stream_cleanly() {
    let gw = start_gateway(&["--max-workers", "1"]);
    let (mut reader, pids) = long_stream_on_one_worker(&gw);
    kill(pids[0], "-KILL");
    let rest = http::read_sse(&mut *reader, Instant::now());
    let rest: Vec<&str> = rest.iter().map(|e| e.data.as_str()).collect();
    assert_eq!(rest.last(), Some(&"[DONE]"), "{rest:?}");
    assert!(rest.len() >= 2, "{rest:?}");
    let error: Value = serde_json::from_str(rest[rest.len() - 2]).unwrap();
    assert!(error["error"]["message"].is_string(), "{rest:?}");
    assert!(wait_until(Duration::from_secs(10), || !alive(pids[0])));

    let (status, v) = http::post(&gw.url("/v1/chat/completions"), &chat("smollm2", json!({})));
    assert_eq!(status, 200, "{v}");
    let now = worker_pids(&gw);
    assert!(
        now.len() == 1 && now[0] != pids[0],
        "{now:?} (killed {pids:?})"
    );
}

/// A worker SIGKILLed before it answered a non-streaming request: the gateway sends
/// the request once more, to the replacement worker, and the client gets its 200.
#[test]
fn request_is_retried_when_its_worker_dies_before_answering() {
    let gw = start_gateway(&["--max-workers", "1"]);
    // Warm the pool so the kill below hits a worker that is mid-request.
    let (status, v) = http::post(&gw.url("/v1/chat/completions"), &chat("smollm2", json!({})));
    assert_eq!(status, 200, "{v}");
    let pids = worker_pids(&gw);
    assert_eq!(pids.len(), 1, "{pids:?}");
    let url = gw.url("/v1/chat/completions");
    let body = chat(
        "smollm2",
        json!({"max_tokens": 400, "messages": [{"role": "user", "content": "Count from 1 to 1000."}]}),
    );
    let client = std::thread::spawn(move || http::post(&url, &body));
    std::thread::sleep(Duration::from_millis(300));
    kill(pids[0], "-KILL");
    let (status, v) = client.join().unwrap();
    assert_eq!(status, 200, "{v}");
    assert!(v["choices"][0]["message"]["content"].is_string(), "{v}");
    let now = worker_pids(&gw);
    assert!(
        now.len() == 1 && now[0] != pids[0],
        "{now:?} (killed {pids:?})"
    );
}

/// An upload over 1 MiB (40 s of 16 kHz audio: speech, then silence) with `model`
/// after `file` goes through the gateway to the worker.
#[test]
fn large_audio_upload_is_transcribed() {
    if !speech::speech_tools() {
        eprintln!("SKIP: espeak-ng or sox missing");
        return;
    }
    let gw = gateway();
    let text = "The quick brown fox jumps over the lazy dog.";
    let dir = speech::scratch("gateway-large-upload");
    let clip = speech::speak(&dir, "fox", text, &["wav"]).remove(0);
    let mut samples = speech::pcm16(&clip.bytes);
    samples.resize(16_000 * 40, 0);
    let audio = speech::wav(16_000, &samples);
    assert!(audio.len() > 1 << 20, "{} bytes", audio.len());
    let r = Form::new()
        .file("file", "fox.wav", &audio)
        .text("model", "whisper-1")
        .post(&gw.url("/v1/audio/transcriptions"));
    assert_eq!(r.status, 200, "{}", r.text);
    let got = r.json()["text"].as_str().unwrap_or_default().to_string();
    assert!(speech::word_overlap(text, &got) >= 0.6, "{got:?}");
}

/// SIGTERM with a stream in flight: the stream finishes with `[DONE]`, new requests get
/// 503 (or a refused connection once the gateway is gone), the gateway exits 0 within
/// the grace period and its workers are gone.
#[test]
fn sigterm_drains_in_flight_streams_then_exits() {
    let mut gw = start_gateway(&[]);
    let body = json!({
        "model": "smollm2",
        "messages": [{"role": "user", "content": "Count from 1 to 100, separated by spaces."}],
        "max_tokens": 48,
        "temperature": 0,
        "stream": true,
    });
    let mut reader = open_chat_stream(&gw, &body, Duration::from_secs(60));
    let first = next_events(&mut *reader, 2);
    assert_eq!(first.len(), 2, "{first:?}");
    let pids = worker_pids(&gw);
    assert_eq!(pids.len(), 1, "{pids:?}");
    let gateway_pid = gw.child.id();
    kill(gateway_pid, "-TERM");
    std::thread::sleep(Duration::from_millis(300));

    let refused = match http::agent()
        .post(&gw.url("/v1/chat/completions"))
        .set("Content-Type", "application/json")
        .send_string(&chat("smollm2", json!({})).to_string())
    {
        Ok(r) => panic!("admitted while draining: {}", r.status()),
        Err(ureq::Error::Status(s, r)) => {
            let v: Value = r.into_json().unwrap();
            assert_error(s, &v, 503, None);
            true
        }
        Err(ureq::Error::Transport(_)) => false, // already gone
    };

    let rest = http::read_sse(&mut *reader, Instant::now());
    let rest: Vec<&str> = rest.iter().map(|e| e.data.as_str()).collect();
    assert_eq!(rest.last(), Some(&"[DONE]"), "{rest:?}");
    assert!(!rest.iter().any(|e| e.contains("\"error\"")), "{rest:?}");
    assert!(refused || !alive(gateway_pid));

    // The default grace is 30 s; the stream is done, so the exit is prompt.
    let status = wait_exit(
        &mut gw.child,
        Duration::from_secs(30),
        "gateway still running 30 s after the stream ended",
    );
    assert!(status.success(), "{status}");
    assert!(
        wait_until(Duration::from_secs(5), || pids.iter().all(|&p| !alive(p))),
        "workers {pids:?} outlived the gateway"
    );
}

/// The worker's own metric `name` (its /metrics over its Unix socket, found from the
/// worker's command line), or `None` when unreadable.
fn worker_metric(pid: u32, name: &str) -> Option<f64> {
    use std::os::unix::net::UnixStream;
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let args: Vec<String> = cmdline
        .split(|&b| b == 0)
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    let socket = args
        .iter()
        .find_map(|a| a.strip_prefix("unix:"))?
        .to_string();
    let mut s = UnixStream::connect(socket).ok()?;
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: w\r\nConnection: close\r\n\r\n")
        .ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let (_headers, body) = text.split_once("\r\n\r\n")?;
    surge_protocol::prom::value(body, name, &[])
}

/// A client that goes away mid-stream cancels its sequence in the worker (the gateway
/// closes the upstream connection; the worker frees the sequence's KV cache).
#[test]
fn client_disconnect_cancels_the_worker_sequence() {
    let gw = start_gateway(&["--max-workers", "1"]);
    let (reader, pids) = long_stream_on_one_worker(&gw);
    let cancelled = "surge_worker_cancelled_sequences_total";
    let before = worker_metric(pids[0], cancelled).expect("worker metrics");
    drop(reader);
    assert!(
        wait_until(Duration::from_secs(10), || {
            worker_metric(pids[0], cancelled).is_some_and(|v| v > before)
        }),
        "the worker never cancelled the sequence"
    );
    // The slot is free again: the next request is served at once.
    let (status, v) = http::post(&gw.url("/v1/chat/completions"), &chat("smollm2", json!({})));
    assert_eq!(status, 200, "{v}");
}

/// Issue 13, defect 1: requests that gave up waiting (queue timeout, or a client that
/// hung up) leave the queue at once. On a one-slot pool whose slot a long stream holds,
/// three queued requests time out with 503; then the depth gauge is 0, `/admin/pools`
/// shows nobody queued, and the next request queues again (503 at its timeout, not 429
/// `queue_full`). A client that disconnects while queued leaves the queue within a
/// second, long before its queue timeout.
#[test]
fn requests_that_stop_waiting_leave_the_queue() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("surge.toml");
    std::fs::write(
        &cfg,
        format!(
            "[models.{LLM}]\nconcurrency = 1\nmax_workers = 1\nqueue_size = 3\nqueue_timeout = 2\n"
        ),
    )
    .unwrap();
    let gw = start_gateway(&["--config", cfg.to_str().unwrap()]);
    let (_stream, _pids) = long_stream_on_one_worker(&gw);
    let depth = || {
        let (_, text) = http::get(&gw.url("/metrics"));
        surge_protocol::prom::value(&text, "surge_queue_depth", &[("model", LLM)])
    };
    let queued = || {
        support::gateway::pool_view(&gw, LLM)["queued"]
            .as_u64()
            .unwrap()
    };
    let url = gw.url("/v1/chat/completions");
    let waiters: Vec<_> = (0..3)
        .map(|_| {
            let url = url.clone();
            std::thread::spawn(move || http::post(&url, &chat(LLM, json!({}))))
        })
        .collect();
    for w in waiters {
        let (status, v) = w.join().unwrap();
        assert_error(status, &v, 503, Some("queue_timeout"));
    }
    // The pool's actor drops the expired waiters on its own turn, a moment after
    // their 503s went out (seen lagging under a loaded test run): allow it a second.
    let settled = std::time::Instant::now();
    while (depth() != Some(0.0) || queued() != 0)
        && settled.elapsed() < std::time::Duration::from_secs(1)
    {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert_eq!(depth(), Some(0.0));
    assert_eq!(queued(), 0);
    let (status, v) = http::post(&url, &chat(LLM, json!({})));
    assert_error(status, &v, 503, Some("queue_timeout"));

    // A client that hangs up while queued.
    let body = chat(LLM, json!({})).to_string();
    let mut s = TcpStream::connect(("127.0.0.1", gw.port)).unwrap();
    write!(
        s,
        "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    assert!(
        wait_until(Duration::from_secs(1), || queued() == 1),
        "the request never queued"
    );
    drop(s);
    let left = Instant::now();
    assert!(
        wait_until(Duration::from_secs(1), || queued() == 0
            && depth() == Some(0.0)),
        "a client that hung up still queued after {:?}",
        left.elapsed()
    );
}

/// Issue 13, defect 2: an upload whose *filename* is `model` (`-F file=@model`) is
/// routed by its `model` field, not by the file's bytes.
#[test]
fn an_upload_named_model_is_routed_by_the_model_field() {
    let gw = gateway();
    let samples: Vec<i16> = (0..8_000)
        .map(|i| ((i as f32 * 0.05).sin() * 300.0) as i16)
        .collect();
    let audio = speech::wav(16_000, &samples);
    let r = Form::new()
        .file("file", "model", &audio)
        .text("model", "whisper-1")
        .post(&gw.url("/v1/audio/transcriptions"));
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(r.json()["text"].is_string(), "{}", r.text);
}

/// Issue 13, defect 3: the gateway's time to first token ends at the first chunk with
/// content, not at the empty role chunk the worker sends before prefill. A prompt long
/// enough that prefill takes a while shows the difference: the histogram's sum grows by
/// at least (nearly) the client's own time to first content.
#[test]
fn time_to_first_token_ends_at_the_first_content() {
    let gw = gateway();
    let ttft_sum = || {
        let (_, text) = http::get(&gw.url("/metrics"));
        surge_protocol::prom::value(
            &text,
            "surge_time_to_first_token_seconds_sum",
            &[("model", LLM)],
        )
        .unwrap_or(0.0)
    };
    // Warm: the cold start is not what is measured.
    let (status, _) = http::post(&gw.url("/v1/chat/completions"), &chat(LLM, json!({})));
    assert_eq!(status, 200);
    let passage = "The sea was calm and the boats rested in the harbour. ".repeat(40);
    let body = json!({
        "model": LLM,
        "messages": [{"role": "system", "content": "You are a helpful assistant."},
                     {"role": "user", "content": format!("{passage}\nSummarise this.")}],
        "max_tokens": 4,
        "temperature": 0,
        "stream": true,
    });
    let before = ttft_sum();
    let start = Instant::now();
    let (status, mut reader) = http::open_stream(&gw.url("/v1/chat/completions"), &body);
    assert_eq!(status, 200);
    let events = http::read_sse(&mut *reader, start);
    let first_content = events
        .iter()
        .find(|e| {
            serde_json::from_str::<Value>(&e.data).is_ok_and(|v| {
                v["choices"][0]["delta"]["content"]
                    .as_str()
                    .is_some_and(|c| !c.is_empty())
            })
        })
        .expect("a content chunk")
        .at;
    let grew = ttft_sum() - before;
    assert!(
        grew >= first_content.as_secs_f64() * 0.8,
        "TTFT sum grew by {grew:.3} s; the first content came after {first_content:?} (events: {:?})",
        events.iter().map(|e| e.at).collect::<Vec<_>>()
    );
}

/// The gateway's `/metrics` carries every live worker's engine metrics (workers listen
/// where Prometheus cannot reach), labelled with model and worker, each family once.
#[test]
fn worker_metrics_are_on_the_gateway_metrics() {
    let gw = gateway();
    let (status, v) = http::post(&gw.url("/v1/chat/completions"), &chat(LLM, json!({})));
    assert_eq!(status, 200, "{v}");
    let (_, text) = http::get(&gw.url("/metrics"));
    let samples = surge_protocol::prom::parse(&text);
    let generated: Vec<_> = samples
        .iter()
        .filter(|s| s.name == "surge_worker_generated_tokens_total")
        .collect();
    assert!(!generated.is_empty(), "{text}");
    assert!(generated
        .iter()
        .all(|s| s.label("model") == Some(LLM) && s.label("worker").is_some()));
    assert!(generated.iter().map(|s| s.value).sum::<f64>() >= 1.0);
    let mut types: Vec<&str> = text.lines().filter(|l| l.starts_with("# TYPE ")).collect();
    let n = types.len();
    types.sort_unstable();
    types.dedup();
    assert_eq!(types.len(), n, "a metric family declared twice");
}
