//! HTTP routes of the LLM worker. Handlers only parse, validate and hand jobs to the
//! engine; everything slow happens off the async runtime: generation on the engine
//! thread, parsing, chat-template rendering and tokenization on the blocking pool.

use std::sync::{Arc, OnceLock};
use std::time::Instant;

use axum::body::Body;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use tokio::sync::Semaphore;
use tracing::Instrument;

use crate::llm::{ChatTemplate, Grammars, Tokenizer};
use crate::server::{self, parse_json, ApiError, Lifecycle, ModelIds, WorkerInfo};

use super::api::{ChatCompletionRequest, CompletionRequest};
use super::metrics::WorkerMetrics;
use super::respond::{self, Endpoint, Reply};
use super::scheduler::EngineHandle;
use super::trace;
use super::validate::{self, Limits, Validated};

/// What exists once the model has loaded.
pub struct Ready {
    pub tokenizer: Arc<Tokenizer>,
    pub template: ChatTemplate,
    /// Compiles `response_format` schemas and tool-call grammars.
    pub grammars: Grammars,
    pub limits: Limits,
    pub engine: EngineHandle,
}

pub struct AppState {
    pub ids: ModelIds,
    pub max_body_bytes: usize,
    pub life: Lifecycle,
    pub ready: OnceLock<Ready>,
    pub metrics: Arc<WorkerMetrics>,
}

impl WorkerInfo for AppState {
    fn kind(&self) -> &'static str {
        "llm"
    }
    fn model_ids(&self) -> &ModelIds {
        &self.ids
    }
    fn life(&self) -> &Lifecycle {
        &self.life
    }
    fn render_metrics(&self) -> String {
        self.metrics.render()
    }
}

pub fn router(state: Arc<AppState>) -> Router {
    server::base_router::<AppState>()
        .route("/v1/chat/completions", post(chat))
        .route("/v1/completions", post(completions))
        .with_state(state)
}

async fn chat(State(st): State<Arc<AppState>>, headers: HeaderMap, body: Body) -> Response {
    handle(st, &headers, body, Endpoint::Chat).await
}

async fn completions(State(st): State<Arc<AppState>>, headers: HeaderMap, body: Body) -> Response {
    handle(st, &headers, body, Endpoint::Completion).await
}

async fn handle(
    st: Arc<AppState>,
    headers: &HeaderMap,
    body: Body,
    endpoint: Endpoint,
) -> Response {
    let arrived = Instant::now();
    let span = trace::request_span(headers, endpoint, &st.ids.name);
    // Log lines while the request is handled carry its trace id.
    let work = generate(&st, body, endpoint, arrived, span.clone());
    let resp = match work.instrument(span.clone()).await {
        Ok(r) => r,
        Err(e) => {
            span.record("error.type", e.code());
            e.into_response()
        }
    };
    st.metrics
        .requests
        .with_label_values(&[endpoint.name(), resp.status().as_str()])
        .inc();
    resp
}

async fn generate(
    st: &Arc<AppState>,
    body: Body,
    endpoint: Endpoint,
    arrived: Instant,
    span: tracing::Span,
) -> Result<Response, ApiError> {
    if let Some(e) = st.life.admission_error() {
        return Err(e);
    }
    let ready = st.ready.get().ok_or(ApiError::Loading)?;
    let bytes = server::read_body(body, st.max_body_bytes).await?;
    let (model, validated) = validate_off_runtime(st.clone(), bytes, endpoint).await?;
    trace::validated(&span, &validated);
    let mut receivers = Vec::with_capacity(validated.jobs.len());
    for job in &validated.jobs {
        let rx = ready
            .engine
            .submit(job.clone(), arrived)
            .ok_or_else(|| ApiError::Internal("the engine is not running".into()))?;
        receivers.push(rx);
    }
    let stream = validated.stream;
    let mut reply = Reply::new(
        endpoint,
        model.as_deref().unwrap_or(&st.ids.name),
        validated,
    );
    reply.span = span;
    if stream {
        Ok(respond::stream(reply, receivers))
    } else {
        respond::complete(reply, receivers).await
    }
}

/// Requests parsed and validated at once, at most; the others wait (asynchronously) for
/// a slot. Like TGI's validation workers: a few threads, whatever the load.
fn validation_slots() -> &'static Semaphore {
    static SLOTS: OnceLock<Semaphore> = OnceLock::new();
    SLOTS.get_or_init(|| {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        Semaphore::new(cores.max(2))
    })
}

/// Parses and validates a request body on tokio's blocking pool. Rendering the chat
/// template and tokenizing a long prompt (megabytes, near the body limit) takes CPU time
/// that, on the runtime's two worker threads, would stall every other request's I/O —
/// health checks and streams included. Errors are the validator's, unchanged.
async fn validate_off_runtime(
    st: Arc<AppState>,
    bytes: Vec<u8>,
    endpoint: Endpoint,
) -> Result<(Option<String>, Validated), ApiError> {
    let _slot = validation_slots()
        .acquire()
        .await
        .map_err(|_| ApiError::Internal("request validation is shut down".into()))?;
    tokio::task::spawn_blocking(move || validate_request(&st, &bytes, endpoint))
        .await
        .map_err(|e| ApiError::Internal(format!("request validation failed: {e}")))?
}

/// The request's `model` and its jobs, or the 400 (404 for an unknown model) to answer.
fn validate_request(
    st: &AppState,
    bytes: &[u8],
    endpoint: Endpoint,
) -> Result<(Option<String>, Validated), ApiError> {
    let ready = st.ready.get().ok_or(ApiError::Loading)?;
    match endpoint {
        Endpoint::Chat => {
            let req: ChatCompletionRequest = parse_json(bytes)?;
            let model = req.model.clone();
            st.ids.check(model.as_deref())?;
            let v = validate::chat(req, ready)?;
            Ok((model, v))
        }
        Endpoint::Completion => {
            let req: CompletionRequest = parse_json(bytes)?;
            let model = req.model.clone();
            st.ids.check(model.as_deref())?;
            let v = validate::completion(req, &ready.tokenizer, &ready.limits)?;
            Ok((model, v))
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::net::{SocketAddr, TcpStream};
    use std::sync::mpsc;
    use std::time::Duration;

    use super::*;
    use crate::llm::test_support::test_gguf_path;
    use crate::llm::GgufFile;
    use crate::llm_worker::api::ChatMessageIn;
    use crate::server::ModelIds;

    /// A ready worker's state with the test model's tokenizer and template and no engine
    /// (the requests below never pass validation).
    fn state(max_body_bytes: usize) -> Arc<AppState> {
        let gguf = GgufFile::open(test_gguf_path()).expect("open the test GGUF");
        let tokenizer = Tokenizer::from_gguf(&gguf).expect("tokenizer");
        let template = ChatTemplate::from_gguf(&gguf, None).expect("template");
        let metrics = Arc::new(WorkerMetrics::new().expect("metrics"));
        let (tx, _rx) = std::sync::mpsc::channel();
        let st = Arc::new(AppState {
            ids: ModelIds::new("m", []),
            max_body_bytes,
            life: Lifecycle::default(),
            ready: OnceLock::new(),
            metrics: metrics.clone(),
        });
        let limits = Limits {
            max_context: 8192,
            default_max_tokens: 16,
            max_sequence_tokens: 8192,
            max_n: 4,
        };
        let engine = EngineHandle::new(tx, metrics);
        let grammars = Grammars::new(tokenizer.clone(), tokenizer.vocab_size(), &[]);
        let ready = Ready {
            tokenizer: Arc::new(tokenizer),
            template,
            grammars,
            limits,
            engine,
        };
        assert!(st.ready.set(ready).is_ok());
        st.life.set_ready(0.0);
        st
    }

    /// One HTTP/1.1 exchange on a fresh connection: (status, body, when it ended). `sent`
    /// gets a message once the request is written.
    fn exchange(
        addr: SocketAddr,
        request: &[u8],
        sent: Option<mpsc::Sender<()>>,
    ) -> (u16, String, Instant) {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
        s.write_all(request).unwrap();
        if let Some(tx) = sent {
            tx.send(()).unwrap();
        }
        let mut out = Vec::new();
        s.read_to_end(&mut out).unwrap();
        let done = Instant::now();
        let text = String::from_utf8_lossy(&out).into_owned();
        let status = text
            .get(9..12)
            .and_then(|c| c.parse().ok())
            .unwrap_or_else(|| panic!("not an HTTP response: {text:.200}"));
        let body = text
            .split_once("\r\n\r\n")
            .map_or("", |(_, b)| b)
            .to_string();
        (status, body, done)
    }

    /// A chat request of `messages` messages, `bytes` long in all: words drawn from a
    /// seeded generator, so the tokenizer's word cache does not make it cheap.
    fn long_chat(messages: usize, bytes: usize) -> Vec<u8> {
        let mut seed = 0x2545_f491_4f6c_dd1d_u64;
        let per = bytes / messages;
        let msgs: Vec<ChatMessageIn> = (0..messages)
            .map(|i| {
                let mut text = String::with_capacity(per);
                while text.len() + 12 < per {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    let len = 2 + (seed % 9) as usize;
                    text.extend((0..len).map(|k| (b'a' + ((seed >> (5 * k)) % 26) as u8) as char));
                    text.push(' ');
                }
                let role = if i % 2 == 0 { "user" } else { "assistant" };
                ChatMessageIn::text(role, text)
            })
            .collect();
        let req = ChatCompletionRequest {
            messages: Some(msgs),
            ..ChatCompletionRequest::default()
        };
        let body = serde_json::to_vec(&req).unwrap();
        let mut out = format!(
            "POST /v1/chat/completions HTTP/1.1\r\nHost: w\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        )
        .into_bytes();
        out.extend(body);
        out
    }

    /// While long prompts (1 MiB, a thousand messages; about a second each to render and
    /// tokenize on one core, five near the 4 MiB body limit) are validated, `/health` on
    /// the same worker still answers at once: the work runs on the blocking pool, not on
    /// the runtime's two worker threads (the worker's own runtime shape). Before, both
    /// threads stalled and `/health` answered only after a long prompt's 400. Validation
    /// errors are unchanged (the prompts are too long: 400).
    #[test]
    fn health_answers_while_long_prompts_are_validated() {
        const LIMIT: usize = 4 << 20;
        let st = state(LIMIT);
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        listener.set_nonblocking(true).unwrap();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.spawn(async move {
            let l = tokio::net::TcpListener::from_std(listener).unwrap();
            axum::serve(l, router(st)).await.unwrap();
        });

        // One long request per runtime worker thread: before the blocking pool, they
        // stalled both.
        let request = Arc::new(long_chat(1000, 1 << 20));
        let (tx, sent) = mpsc::channel();
        let long: Vec<_> = (0..2)
            .map(|_| {
                let (request, tx) = (request.clone(), tx.clone());
                std::thread::spawn(move || exchange(addr, &request, Some(tx)))
            })
            .collect();
        for _ in 0..long.len() {
            sent.recv().unwrap();
        }
        std::thread::sleep(Duration::from_millis(50));
        let asked = Instant::now();
        let (status, body, health_done) = exchange(
            addr,
            b"GET /health HTTP/1.1\r\nHost: w\r\nConnection: close\r\n\r\n",
            None,
        );
        let health_s = health_done.duration_since(asked).as_secs_f64();
        assert_eq!(status, 200, "{body}");
        for h in long {
            let (status, body, done) = h.join().unwrap();
            assert_eq!(status, 400, "{body:.300}");
            assert!(body.contains("context_length_exceeded"), "{body:.300}");
            eprintln!(
                "long prompt validated {:.3} s after /health was asked; /health took {health_s:.3} s",
                done.duration_since(asked).as_secs_f64()
            );
            // /health answered while the long prompts were still being worked on.
            assert!(health_done < done, "/health waited for the long prompts");
        }
        assert!(health_s < 2.0, "/health took {health_s:.3} s");
        rt.shutdown_background();
    }
}
