//! Logs and traces for both processes of the one binary (`surge serve` and the `surge
//! worker`s it spawns).
//!
//! Logs go to stderr through `tracing-subscriber` (filter: `SURGE_LOG`). Traces are off
//! unless an OTLP endpoint is configured — `otlp_endpoint` in the gateway's config, or
//! `OTEL_EXPORTER_OTLP_ENDPOINT` (a base URL; `/v1/traces` is appended) — and then
//! `tracing` spans are exported as OTLP/HTTP JSON by the SDK's batch processor, on a
//! thread of its own (a slow collector never blocks a request; spans beyond its queue are
//! dropped). The gateway samples a share of new traces (`otlp_sampling_ratio`,
//! `OTEL_TRACES_SAMPLER_ARG`, default 1); a trace the client started (`traceparent`)
//! and every worker follow their parent's decision. Off, no exporter or OpenTelemetry
//! layer is installed: spans are created as before and cost what `tracing` costs.

use opentelemetry::trace::TracerProvider as _;
use opentelemetry::KeyValue;
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
use opentelemetry_sdk::Resource;
use tracing::Level;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// Where and how much to trace.
#[derive(Debug, Clone, PartialEq)]
pub struct TraceConfig {
    /// OTLP/HTTP base URL (`http://collector:4318`).
    pub endpoint: String,
    /// Share of new traces kept, 0–1.
    pub sampling_ratio: f64,
}

impl TraceConfig {
    /// From the environment (`OTEL_EXPORTER_OTLP_ENDPOINT`, `OTEL_TRACES_SAMPLER_ARG`).
    pub fn from_env() -> Option<TraceConfig> {
        let endpoint = std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT").ok()?;
        let ratio = std::env::var("OTEL_TRACES_SAMPLER_ARG")
            .ok()
            .and_then(|r| r.parse().ok())
            .unwrap_or(1.0);
        let blank = endpoint.trim().is_empty();
        (!blank).then_some(TraceConfig {
            endpoint,
            sampling_ratio: ratio,
        })
    }
}

/// Flushes and stops the exporter when dropped (the end of `main`).
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        if let Some(p) = self.provider.take() {
            let _ = p.shutdown();
        }
    }
}

/// Installs the global subscriber: stderr logs, and traces to `trace` when set.
/// `service` names this process in the traces (`surge-gateway`, `surge-worker`).
pub fn init(service: &'static str, trace: Option<TraceConfig>) -> Telemetry {
    let filter = EnvFilter::try_from_env("SURGE_LOG")
        // symphonia logs a client's undecodable upload at ERROR level; the client
        // already gets the reason in its 400, so keep it out of the worker's log.
        .unwrap_or_else(|_| "info,symphonia=off".into());
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let provider = trace.and_then(|t| match provider(service, &t) {
        Ok(p) => Some(p),
        Err(e) => {
            eprintln!(
                "traces are off: the OTLP exporter for {} failed: {e}",
                t.endpoint
            );
            None
        }
    });
    // The log filter (`SURGE_LOG`) is the log's alone: `SURGE_LOG=warn` must not turn
    // the request spans off. Traces take surge's own spans, at info and above.
    let spans = Targets::new()
        .with_target("surge_gateway", Level::INFO)
        .with_target("surge_runtime", Level::INFO);
    let otel = provider.as_ref().map(|p| {
        tracing_opentelemetry::layer()
            .with_tracer(p.tracer("surge"))
            .with_filter(spans)
    });
    tracing_subscriber::registry()
        .with(fmt.with_filter(filter))
        .with(otel)
        .init();
    if let Some(p) = &provider {
        surge_runtime::server::trace::set_enabled(true);
        opentelemetry::global::set_tracer_provider(p.clone());
        opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    }
    Telemetry { provider }
}

fn provider(service: &'static str, t: &TraceConfig) -> Result<SdkTracerProvider, String> {
    let endpoint = format!("{}/v1/traces", t.endpoint.trim_end_matches('/'));
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpJson)
        .with_endpoint(endpoint)
        .build()
        .map_err(|e| e.to_string())?;
    let ratio = t.sampling_ratio.clamp(0.0, 1.0);
    let resource = Resource::builder()
        .with_service_name(service)
        .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
        .build();
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
            ratio,
        ))))
        .with_resource(resource)
        .build())
}
