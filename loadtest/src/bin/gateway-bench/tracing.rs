//! 5. Tracing: what exporting OpenTelemetry traces adds to a request (its spans created
//!    in the gateway and its worker, and handed to their batch exporters, which send them
//!    as OTLP/HTTP JSON on threads of their own). Two gateways side by side, alike but for
//!    `OTEL_EXPORTER_OTLP_ENDPOINT`, measured exactly as the overhead is
//!    ([`crate::overhead::compare`]), so the comparisons read alike.
//!
//! The traced gateway exports to a sink that this bench runs on a loopback port (a
//! thread that answers every request with 200 `{}` and counts the spans in each
//! `/v1/traces` batch), with every request sampled (`OTEL_TRACES_SAMPLER_ARG=1`) and
//! the batch processor's own interval (`OTEL_BSP_SCHEDULE_DELAY` as this bench got it,
//! else the SDK's 5000 ms). The other has `OTEL_EXPORTER_OTLP_ENDPOINT` removed from its
//! environment (and no `--config`), so it creates no spans at all. The sink's parsing
//! runs on the same machine as both gateways, as a collector beside them would. Each
//! gateway gets its own scratch `--data-dir` (removed at the end), as in
//! [`crate::metering`].
//!
//! Afterwards the sink must have received more spans than the traced gateway served
//! requests (a request makes several: the gateway's request, auth, queue and upstream
//! spans, the worker's), and no more of the gateway's request spans than it served
//! requests (more would be spans from elsewhere, the untraced gateway for one), so that
//! the figures compare tracing on and off.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use surge_loadtest::bench::{ratio, Deadline};
use surge_loadtest::server::stop;
use surge_loadtest::speech::TempDir;

use crate::overhead::{on_off_json, print_comparison, side_by_side, Target};
use crate::surge::spawn_gateway_env;
use crate::Args;

const ENDPOINT: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";
/// Honoured by the OTLP exporter instead of the base URL in some SDK versions: removed
/// from both gateways, so the traced one's spans go to the sink and the other's nowhere.
const TRACES_ENDPOINT: &str = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT";
/// The gateway's service name in its spans' resource (its workers': `surge-worker`).
const GATEWAY_SERVICE: &str = "surge-gateway";
/// The attribute that only the gateway's request span carries, one per request.
const REQUEST_ID: &str = "surge.request_id";

/// The figures of the traced gateway (`on`) and the untraced one (`off`).
pub struct Tracing {
    on: Target,
    off: Target,
    /// Chats sent to each gateway (warm-up included).
    requests: usize,
    /// What the sink received: the proof that the traced gateway exported its spans.
    spans: Spans,
    /// The batch processor's export interval (`OTEL_BSP_SCHEDULE_DELAY`).
    schedule_delay_ms: u64,
}

/// What the OTLP sink received.
#[derive(Clone, Default, Debug, PartialEq)]
pub struct Spans {
    /// Trace batches (`POST /v1/traces` with an OTLP JSON body).
    batches: usize,
    /// Spans in them.
    total: usize,
    /// Spans per `service.name` of their resource.
    by_service: BTreeMap<String, usize>,
    /// The gateway's request spans (one per inference request it served).
    gateway_requests: usize,
    /// Trace batches whose body was not OTLP JSON (their spans are not counted).
    unreadable: usize,
    /// Requests to anything but `POST /v1/traces` (answered too, not counted).
    other: usize,
}

impl Spans {
    fn add(&mut self, b: Spans) {
        self.batches += b.batches;
        self.total += b.total;
        for (service, n) in b.by_service {
            *self.by_service.entry(service).or_default() += n;
        }
        self.gateway_requests += b.gateway_requests;
        self.unreadable += b.unreadable;
        self.other += b.other;
    }

    fn to_json(&self, requests: usize) -> Value {
        json!({
            "received": self.total,
            "per_request": ratio(self.total as f64, requests as f64),
            "batches": self.batches,
            "by_service": self.by_service,
            "gateway_request_spans": self.gateway_requests,
            "unreadable_batches": self.unreadable,
            "other_requests": self.other,
        })
    }
}

impl Tracing {
    pub fn to_json(&self) -> Value {
        let mut v = on_off_json(&self.on, &self.off);
        v["requests_per_gateway"] = json!(self.requests);
        v["spans"] = self.spans.to_json(self.requests);
        v["export"] = json!({
            "protocol": "http/json",
            "sampling_ratio": 1.0,
            "schedule_delay_ms": self.schedule_delay_ms,
        });
        v
    }
}

pub fn measure(args: &Args, deadline: &Deadline) -> Result<Tracing, String> {
    // Declared before the gateways, so dropped (stopped, removed) only after both have
    // stopped: the traced gateway flushes its last spans on its way out.
    let sink = Sink::start()?;
    let on_dir = TempDir::new("gateway-bench-tracing-on")?;
    let off_dir = TempDir::new("gateway-bench-tracing-off")?;
    let data_dir = |d: &TempDir| d.path().to_string_lossy().into_owned();
    let on_flags = ["--min-workers", "1", "--data-dir", &data_dir(&on_dir)];
    let on_env = [
        (ENDPOINT, Some(sink.endpoint.as_str())),
        (TRACES_ENDPOINT, None),
        ("OTEL_TRACES_SAMPLER_ARG", Some("1")),
    ];
    let (mut on, on_base) = spawn_gateway_env(args, &on_flags, &on_env)?;
    let mut off: Option<std::process::Child> = None;
    let result = (|| {
        let off_flags = ["--min-workers", "1", "--data-dir", &data_dir(&off_dir)];
        let off_env = [(ENDPOINT, None), (TRACES_ENDPOINT, None)];
        let (child, off_base) = spawn_gateway_env(args, &off_flags, &off_env)?;
        let off_child = off.insert(child);
        let [on_figs, off_figs] = side_by_side(
            args,
            deadline,
            [
                ("tracing on", &on_base, &mut on),
                ("tracing off", &off_base, off_child),
            ],
        )?;
        let requests = 20 + on_figs.seq.len() + on_figs.closed.len();
        let delay = schedule_delay_ms();
        eprintln!("tracing: waiting for the traced gateway's last span batches");
        let spans = wait_spans(&sink, requests, Duration::from_millis(delay));
        check_spans(&spans, requests)?;
        Ok(Tracing {
            on: on_figs,
            off: off_figs,
            requests,
            spans,
            schedule_delay_ms: delay,
        })
    })();
    if let Some(c) = off.as_mut() {
        stop(c);
    }
    stop(&mut on);
    result
}

/// The batch span processor's export interval the traced gateway and its workers run
/// with: this bench's `OTEL_BSP_SCHEDULE_DELAY` (they inherit it), else the SDK's 5000 ms.
fn schedule_delay_ms() -> u64 {
    std::env::var("OTEL_BSP_SCHEDULE_DELAY")
        .ok()
        .and_then(|d| d.trim().parse().ok())
        .unwrap_or(5000)
}

/// Waits for the traced gateway's last batches (the batch processors send theirs every
/// `delay`): until more spans than `requests` have arrived and then `delay` and a second
/// have passed without a new batch; gives up after three times that and ten seconds.
/// Returns what the sink has received by then.
fn wait_spans(sink: &Sink, requests: usize, delay: Duration) -> Spans {
    let quiet = delay + Duration::from_secs(1);
    let limit = Instant::now() + quiet * 3 + Duration::from_secs(10);
    let mut last = sink.spans();
    let mut changed = Instant::now();
    loop {
        std::thread::sleep(Duration::from_millis(100));
        let now = sink.spans();
        if now != last {
            last = now;
            changed = Instant::now();
        }
        if (last.total > requests && changed.elapsed() >= quiet) || Instant::now() >= limit {
            return last;
        }
    }
}

/// The traced gateway must have exported more spans than it served `requests` (each
/// request makes several), all of them readable, and no more request spans than
/// requests: else the figures are not of tracing on and off.
fn check_spans(s: &Spans, requests: usize) -> Result<(), String> {
    if s.unreadable > 0 {
        return Err(format!(
            "the OTLP sink got {} trace batches it could not read as OTLP JSON",
            s.unreadable
        ));
    }
    if s.total <= requests {
        return Err(format!(
            "the traced gateway exported {} spans ({} batches) for {requests} requests; \
             expected several per request",
            s.total, s.batches
        ));
    }
    if s.gateway_requests > requests {
        return Err(format!(
            "the OTLP sink received {} gateway request spans for the {requests} requests \
             sent to the traced gateway: spans came from elsewhere",
            s.gateway_requests
        ));
    }
    Ok(())
}

/// The spans of one OTLP JSON trace batch (`resourceSpans[].scopeSpans[].spans[]`), or
/// `None` for a body that is not one.
fn count(body: &[u8]) -> Option<Spans> {
    let v: Value = serde_json::from_slice(body).ok()?;
    let mut s = Spans {
        batches: 1,
        ..Spans::default()
    };
    for rs in v.get("resourceSpans")?.as_array()? {
        let service = rs
            .pointer("/resource/attributes")
            .and_then(|a| attribute(a, "service.name"))
            .unwrap_or("unknown")
            .to_string();
        let mut n = 0;
        for ss in rs["scopeSpans"].as_array().into_iter().flatten() {
            for span in ss["spans"].as_array().into_iter().flatten() {
                n += 1;
                let is_request = service == GATEWAY_SERVICE
                    && span
                        .get("attributes")
                        .and_then(|a| a.as_array())
                        .is_some_and(|a| a.iter().any(|kv| kv["key"] == REQUEST_ID));
                s.gateway_requests += usize::from(is_request);
            }
        }
        s.total += n;
        *s.by_service.entry(service).or_default() += n;
    }
    Some(s)
}

/// The string value of attribute `key` in an OTLP JSON attribute list.
fn attribute<'a>(attributes: &'a Value, key: &str) -> Option<&'a str> {
    attributes
        .as_array()?
        .iter()
        .find(|kv| kv["key"] == key)?
        .pointer("/value/stringValue")?
        .as_str()
}

/// An OTLP/HTTP collector that only counts: a thread serving `127.0.0.1` on a free port,
/// answering 200 `{}` to every request. Stopped when dropped.
struct Sink {
    /// The base URL for `OTEL_EXPORTER_OTLP_ENDPOINT`.
    endpoint: String,
    server: Arc<tiny_http::Server>,
    spans: Arc<Mutex<Spans>>,
    stopping: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Sink {
    fn start() -> Result<Sink, String> {
        let server =
            tiny_http::Server::http("127.0.0.1:0").map_err(|e| format!("OTLP sink: {e}"))?;
        let port = server
            .server_addr()
            .to_ip()
            .map(|a| a.port())
            .ok_or("OTLP sink: no TCP address")?;
        let server = Arc::new(server);
        let spans = Arc::new(Mutex::new(Spans::default()));
        let stopping = Arc::new(AtomicBool::new(false));
        let thread = {
            let (server, spans, stopping) = (server.clone(), spans.clone(), stopping.clone());
            std::thread::Builder::new()
                .name("otlp-sink".into())
                .spawn(move || loop {
                    match server.recv() {
                        Ok(rq) => answer(rq, &spans),
                        Err(_) if stopping.load(Ordering::Relaxed) => break,
                        Err(_) => {} // a failed accept
                    }
                })
                .map_err(|e| format!("OTLP sink: {e}"))?
        };
        Ok(Sink {
            endpoint: format!("http://127.0.0.1:{port}"),
            server,
            spans,
            stopping,
            thread: Some(thread),
        })
    }

    /// What it has received so far.
    fn spans(&self) -> Spans {
        lock(&self.spans).clone()
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        self.stopping.store(true, Ordering::Relaxed);
        self.server.unblock();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn lock(spans: &Mutex<Spans>) -> std::sync::MutexGuard<'_, Spans> {
    spans.lock().unwrap_or_else(|e| e.into_inner())
}

/// Counts one request's spans and answers it 200 `{}` (an empty
/// `ExportTraceServiceResponse`: nothing rejected).
fn answer(mut rq: tiny_http::Request, spans: &Mutex<Spans>) {
    let traces =
        *rq.method() == tiny_http::Method::Post && rq.url().split('?').next() == Some("/v1/traces");
    let mut body = Vec::new();
    let read = rq.as_reader().read_to_end(&mut body).is_ok();
    let batch = if !traces {
        Spans {
            other: 1,
            ..Spans::default()
        }
    } else if let Some(b) = count(&body).filter(|_| read) {
        b
    } else {
        Spans {
            unreadable: 1,
            ..Spans::default()
        }
    };
    lock(spans).add(batch);
    let mut resp = tiny_http::Response::from_string("{}");
    if let Ok(h) = tiny_http::Header::from_bytes("Content-Type", "application/json") {
        resp = resp.with_header(h);
    }
    let _ = rq.respond(resp);
}

pub fn print(args: &Args, t: &Tracing) {
    let s = &t.spans;
    let services = s
        .by_service
        .iter()
        .map(|(service, n)| format!("{service} {n}"))
        .collect::<Vec<_>>()
        .join(", ");
    println!(
        "Tracing ({}, `max_tokens: 1`; {} sequential and {} rounds × {} closed-loop requests per gateway; \
         OTLP/HTTP JSON to a sink in the bench, every request sampled, batches every {} ms)\n",
        args.model,
        t.on.seq.len(),
        args.rounds,
        args.closed_requests,
        t.schedule_delay_ms,
    );
    print_comparison(
        args,
        ["metric", "tracing on", "tracing off", "on ÷ off"],
        "tracing",
        &t.on,
        &t.off,
    );
    println!(
        "Spans received from the traced gateway: {} in {} batches for {} requests ({:.1} per request; {services}); \
         its request spans: {}.",
        s.total,
        s.batches,
        t.requests,
        ratio(s.total as f64, t.requests as f64),
        s.gateway_requests,
    );
    if s.gateway_requests < t.requests {
        println!(
            "{} requests' spans did not arrive (dropped by a full export queue, or still \
             unsent).",
            t.requests - s.gateway_requests
        );
    }
    println!();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kv(key: &str, value: &str) -> Value {
        json!({"key": key, "value": {"stringValue": value}})
    }

    /// Spans are counted over every resource and scope, per service, and the gateway's
    /// request spans apart.
    #[test]
    fn counts_spans_of_an_otlp_batch() {
        let span = |attrs: Vec<Value>| json!({"name": "s", "attributes": attrs});
        let body = json!({"resourceSpans": [
            {
                "resource": {"attributes": [kv("service.name", "surge-gateway")]},
                "scopeSpans": [
                    {"spans": [span(vec![kv(REQUEST_ID, "r1")]), span(vec![])]},
                    {"spans": [span(vec![kv(REQUEST_ID, "r2")])]},
                ],
            },
            {
                "resource": {"attributes": [kv("service.name", "surge-worker")]},
                "scopeSpans": [{"spans": [span(vec![kv(REQUEST_ID, "x")]), span(vec![])]}],
            },
            {"scopeSpans": []},
        ]});
        let s = count(body.to_string().as_bytes()).unwrap();
        assert_eq!((s.batches, s.total, s.gateway_requests), (1, 5, 2));
        assert_eq!(s.by_service["surge-gateway"], 3);
        assert_eq!(s.by_service["surge-worker"], 2);
        assert_eq!(s.by_service["unknown"], 0);
        assert!(count(b"not json").is_none());
        assert!(count(b"{}").is_none());
    }

    /// The sink answers over HTTP and counts what it is sent.
    #[test]
    fn sink_counts_posted_batches() {
        let sink = Sink::start().unwrap();
        let body = json!({"resourceSpans": [{
            "resource": {"attributes": [kv("service.name", "surge-gateway")]},
            "scopeSpans": [{"spans": [{"name": "a"}, {"name": "b"}]}],
        }]});
        let url = format!("{}/v1/traces", sink.endpoint);
        for _ in 0..2 {
            let resp = ureq::post(&url)
                .set("Content-Type", "application/json")
                .send_string(&body.to_string())
                .unwrap();
            assert_eq!(resp.status(), 200);
            assert_eq!(resp.into_string().unwrap(), "{}");
        }
        ureq::post(&url).send_string("garbage").unwrap();
        ureq::post(&format!("{}/v1/logs", sink.endpoint))
            .send_string("{}")
            .unwrap();
        let s = sink.spans();
        assert_eq!((s.batches, s.total, s.unreadable, s.other), (2, 4, 1, 1));
        assert!(check_spans(&s, 3).is_err()); // an unreadable batch
        let ok = Spans {
            unreadable: 0,
            ..s.clone()
        };
        assert!(check_spans(&ok, 3).is_ok());
        assert!(check_spans(&ok, 4).is_err()); // not more spans than requests
    }
}
