//! Prometheus helpers shared by every worker kind's metrics: registering a collector
//! and returning it, the common plain metrics, and the text exposition for `/metrics`.

use prometheus::core::Collector;
use prometheus::{
    histogram_opts, opts, Encoder, Histogram, IntCounter, IntCounterVec, IntGauge, Registry,
    TextEncoder,
};

/// Registers `c` with `r` and hands it back (collectors are shared handles).
pub fn register<C: Collector + Clone + 'static>(r: &Registry, c: C) -> prometheus::Result<C> {
    r.register(Box::new(c.clone()))?;
    Ok(c)
}

pub fn gauge(r: &Registry, name: &str, help: &str) -> prometheus::Result<IntGauge> {
    register(r, IntGauge::with_opts(opts!(name, help))?)
}

pub fn counter(r: &Registry, name: &str, help: &str) -> prometheus::Result<IntCounter> {
    register(r, IntCounter::with_opts(opts!(name, help))?)
}

pub fn histogram(
    r: &Registry,
    name: &str,
    help: &str,
    buckets: Vec<f64>,
) -> prometheus::Result<Histogram> {
    register(
        r,
        Histogram::with_opts(histogram_opts!(name, help, buckets))?,
    )
}

/// `surge_worker_requests_total{endpoint, status}`, which every worker kind exports.
pub fn requests_by_status(r: &Registry) -> prometheus::Result<IntCounterVec> {
    register(
        r,
        IntCounterVec::new(
            opts!(
                "surge_worker_requests_total",
                "Requests by endpoint and status"
            ),
            &["endpoint", "status"],
        )?,
    )
}

/// Everything in `r` in Prometheus' text format.
pub fn render(r: &Registry) -> String {
    let mut buf = Vec::new();
    let _ = TextEncoder::new().encode(&r.gather(), &mut buf);
    String::from_utf8(buf).unwrap_or_default()
}
