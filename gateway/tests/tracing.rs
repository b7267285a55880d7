//! Traces end to end: a real `surge serve` and its real workers export OTLP/HTTP JSON to
//! a small receiver in this test, and one streamed chat and one transcription each come
//! back as one trace — gateway and worker spans with the right parents and the GenAI
//! attributes.

mod support;

use std::collections::HashMap;
use std::io::BufReader;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::gateway::{start_gateway_env, wait_until};
use support::http;
use support::speech;
use support::worker::{LLM, WHISPER};

/// One span as the receiver got it.
#[derive(Debug, Clone)]
struct Span {
    service: String,
    trace: String,
    id: String,
    parent: String,
    name: String,
    attrs: HashMap<String, Value>,
}

/// An OTLP/HTTP receiver on loopback: every span POSTed to `/v1/traces`.
fn receiver() -> (String, Arc<Mutex<Vec<Span>>>) {
    let server = tiny_http::Server::http("127.0.0.1:0").unwrap();
    let url = format!("http://{}", server.server_addr().to_ip().unwrap());
    let spans = Arc::new(Mutex::new(Vec::new()));
    let sink = spans.clone();
    std::thread::spawn(move || {
        for mut req in server.incoming_requests() {
            let mut body = String::new();
            let _ = req.as_reader().read_to_string(&mut body);
            if let Ok(v) = serde_json::from_str::<Value>(&body) {
                sink.lock().unwrap().extend(parse(&v));
            }
            let _ = req.respond(tiny_http::Response::from_string("{}").with_status_code(200));
        }
    });
    (url, spans)
}

/// The spans of an `ExportTraceServiceRequest` in OTLP's JSON encoding.
fn parse(v: &Value) -> Vec<Span> {
    let mut out = Vec::new();
    for rs in v["resourceSpans"].as_array().into_iter().flatten() {
        let service = attrs(&rs["resource"]["attributes"])
            .remove("service.name")
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        for ss in rs["scopeSpans"].as_array().into_iter().flatten() {
            for s in ss["spans"].as_array().into_iter().flatten() {
                let text = |k: &str| s[k].as_str().unwrap_or_default().to_string();
                out.push(Span {
                    service: service.clone(),
                    trace: text("traceId"),
                    id: text("spanId"),
                    parent: text("parentSpanId"),
                    name: text("name"),
                    attrs: attrs(&s["attributes"]),
                });
            }
        }
    }
    out
}

fn attrs(list: &Value) -> HashMap<String, Value> {
    let mut out = HashMap::new();
    for a in list.as_array().into_iter().flatten() {
        let v = &a["value"];
        let value = ["stringValue", "intValue", "doubleValue", "boolValue"]
            .iter()
            .find_map(|k| v.get(*k).cloned())
            .unwrap_or(Value::Null);
        out.insert(a["key"].as_str().unwrap_or_default().to_string(), value);
    }
    out
}

/// The span named `name` in `trace` (panics with every span of the trace if missing).
fn find<'a>(spans: &'a [Span], trace: &str, service: &str, name: &str) -> &'a Span {
    spans
        .iter()
        .find(|s| s.trace == trace && s.service == service && s.name == name)
        .unwrap_or_else(|| {
            let names: Vec<_> = spans
                .iter()
                .filter(|s| s.trace == trace)
                .map(|s| (&s.service, &s.name))
                .collect();
            panic!("no {service} span {name:?} in trace {trace}: {names:?}")
        })
}

fn int(s: &Span, key: &str) -> i64 {
    match &s.attrs.get(key) {
        Some(Value::String(t)) => t.parse().unwrap_or(-1),
        Some(v) => v.as_i64().unwrap_or(-1),
        None => panic!("{} has no {key}: {:?}", s.name, s.attrs),
    }
}

#[test]
fn a_chat_and_a_transcription_are_each_one_trace_across_gateway_and_worker() {
    let (url, spans) = receiver();
    let gw = start_gateway_env(
        &[],
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", url.as_str()),
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ],
    );
    // A streamed chat under the client's own trace.
    let client_trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let client_span = "00f067aa0ba902b7";
    let body = json!({
        "model": LLM, "stream": true, "max_tokens": 6, "temperature": 0,
        "messages": [{"role": "user", "content": "Say hello."}],
    });
    let resp = http::agent()
        .post(&gw.url("/v1/chat/completions"))
        .set(
            "traceparent",
            &format!("00-{client_trace}-{client_span}-01"),
        )
        .send_string(&body.to_string())
        .unwrap();
    let mut reader = BufReader::new(resp.into_reader());
    let events = http::read_sse(&mut reader, Instant::now());
    assert!(events.last().is_some_and(|e| e.data == "[DONE]"));
    // A transcription, its trace started by the gateway.
    let tone: Vec<i16> = (0..48_000)
        .map(|i| ((i as f32 * 0.05).sin() * 3000.0) as i16)
        .collect();
    let r = http::Form::new()
        .text("model", WHISPER)
        .file("file", "tone.wav", &speech::wav(16_000, &tone))
        .post(&gw.url("/v1/audio/transcriptions"));
    assert_eq!(r.status, 200, "{}", r.text);

    let complete = |s: &[Span]| {
        s.iter()
            .any(|s| s.service == "surge-worker" && s.name == "decode")
            && s.iter()
                .filter(|s| s.name.starts_with("transcription"))
                .count()
                >= 2
            && s.iter().filter(|s| s.name.starts_with("chat")).count() >= 2
    };
    let arrived = wait_until(Duration::from_secs(20), || complete(&spans.lock().unwrap()));
    let spans = spans.lock().unwrap().clone();
    assert!(arrived, "spans so far: {spans:#?}");

    // The chat: the client's trace, gateway → upstream → worker → engine phases.
    let chat = format!("chat {LLM}");
    let root = find(&spans, client_trace, "surge-gateway", &chat);
    assert_eq!(root.parent, client_span, "the client's span is the parent");
    assert_eq!(root.attrs["gen_ai.operation.name"], "chat");
    assert_eq!(root.attrs["gen_ai.request.model"], LLM);
    assert_eq!(int(root, "gen_ai.request.max_tokens"), 6);
    assert_eq!(int(root, "gen_ai.usage.output_tokens"), 6);
    assert!(int(root, "gen_ai.usage.input_tokens") > 5);
    assert_eq!(int(root, "http.response.status_code"), 200);
    for phase in ["auth", "queue", "upstream"] {
        let s = find(&spans, client_trace, "surge-gateway", phase);
        assert_eq!(s.parent, root.id, "{phase}");
    }
    let upstream = find(&spans, client_trace, "surge-gateway", "upstream");
    assert!(upstream.attrs["server.address"]
        .as_str()
        .is_some_and(|a| a.starts_with("unix:")));
    let worker = find(&spans, client_trace, "surge-worker", &chat);
    assert_eq!(
        worker.parent, upstream.id,
        "the worker's span is under upstream"
    );
    assert_eq!(int(worker, "gen_ai.usage.output_tokens"), 6);
    for phase in ["queue", "prefill", "decode"] {
        let s = find(&spans, client_trace, "surge-worker", phase);
        assert_eq!(s.parent, worker.id, "worker {phase}");
    }
    let engine_queue = find(&spans, client_trace, "surge-worker", "queue");
    assert!(int(engine_queue, "surge.batch_size_at_admission") >= 1);
    // The first request cold-started the LLM worker: its wait is a child of `queue`.
    let queue = find(&spans, client_trace, "surge-gateway", "queue");
    let cold = find(&spans, client_trace, "surge-gateway", "cold start");
    assert_eq!(cold.parent, queue.id);

    // The transcription: a trace of its own, the same shape.
    let name = format!("transcription {WHISPER}");
    let root = spans
        .iter()
        .find(|s| s.service == "surge-gateway" && s.name == name)
        .expect("the transcription's gateway span");
    assert!(root.parent.is_empty(), "no client trace: a root span");
    let upstream = find(&spans, &root.trace, "surge-gateway", "upstream");
    let worker = find(&spans, &root.trace, "surge-worker", &name);
    assert_eq!(worker.parent, upstream.id);
    for phase in ["decode audio", "queue", "encode", "decode"] {
        let s = find(&spans, &root.trace, "surge-worker", phase);
        assert_eq!(s.parent, worker.id, "worker {phase}");
    }
}
