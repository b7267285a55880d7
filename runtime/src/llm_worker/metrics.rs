//! The worker's Prometheus metrics (`GET /metrics`): what the gateway and dashboards need
//! to see inside one worker — batch occupancy, KV use, token throughput, step time.

use prometheus::{
    histogram_opts, Histogram, HistogramVec, IntCounter, IntCounterVec, IntGauge, Registry,
};

use crate::server::metrics::{counter, gauge, histogram, register, render, requests_by_status};

pub struct WorkerMetrics {
    registry: Registry,
    /// `surge_worker_startup_seconds{phase}`, set once at ready.
    pub startup: prometheus::GaugeVec,
    pub running: IntGauge,
    pub waiting: IntGauge,
    pub kv_tokens_reserved: IntGauge,
    pub kv_tokens_capacity: IntGauge,
    pub prompt_tokens: IntCounter,
    pub generated_tokens: IntCounter,
    pub step_seconds: Histogram,
    pub batch_size: Histogram,
    pub queue_seconds: Histogram,
    pub ttft_seconds: Histogram,
    pub requests: IntCounterVec,
    pub cancelled: IntCounter,
    /// Prefix cache: sequences that looked, found a prefix, and the tokens it gave
    /// (hit rate = hits / lookups), and what it holds.
    pub prefix_cache_lookups: IntCounter,
    pub prefix_cache_hits: IntCounter,
    pub prefix_cache_hit_tokens: IntCounter,
    pub prefix_cache_tokens: IntGauge,
    /// `surge_worker_prefill_tokens_per_second{prompt_tokens}`: each sequence's prompt
    /// tokens it prefilled (the cached ones left out) ÷ admission → first token, by
    /// prompt length ([`prompt_length_bucket`]).
    pub prefill_tokens_per_second: HistogramVec,
}

/// The `prompt_tokens` label of a prompt of `n` tokens: prefill speed falls with
/// length (attention grows with it), so it is read per length class.
pub fn prompt_length_bucket(n: usize) -> &'static str {
    match n {
        0..=255 => "1-255",
        256..=1023 => "256-1023",
        1024..=4095 => "1024-4095",
        _ => "4096+",
    }
}

impl WorkerMetrics {
    pub fn new() -> prometheus::Result<Self> {
        let r = Registry::new();
        let lat = vec![
            0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
        ];
        Ok(WorkerMetrics {
            running: gauge(
                &r,
                "surge_worker_running_sequences",
                "Sequences in the running batch",
            )?,
            waiting: gauge(
                &r,
                "surge_worker_waiting_sequences",
                "Sequences waiting for admission",
            )?,
            kv_tokens_reserved: gauge(
                &r,
                "surge_worker_kv_cache_reserved_tokens",
                "KV-cache tokens reserved by admitted sequences",
            )?,
            kv_tokens_capacity: gauge(
                &r,
                "surge_worker_kv_cache_capacity_tokens",
                "KV-cache tokens the memory budget allows",
            )?,
            prompt_tokens: counter(
                &r,
                "surge_worker_prompt_tokens_total",
                "Prompt tokens prefilled",
            )?,
            generated_tokens: counter(
                &r,
                "surge_worker_generated_tokens_total",
                "Completion tokens generated",
            )?,
            step_seconds: histogram(
                &r,
                "surge_worker_step_duration_seconds",
                "Wall time of one batched forward step",
                vec![0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0],
            )?,
            batch_size: histogram(
                &r,
                "surge_worker_batch_sequences",
                "Sequences in one step",
                vec![1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0],
            )?,
            queue_seconds: histogram(
                &r,
                "surge_worker_queue_wait_seconds",
                "Time from arrival to admission into the batch",
                lat.clone(),
            )?,
            ttft_seconds: histogram(
                &r,
                "surge_worker_time_to_first_token_seconds",
                "Time from arrival to the first generated token",
                lat,
            )?,
            requests: requests_by_status(&r)?,
            cancelled: counter(
                &r,
                "surge_worker_cancelled_sequences_total",
                "Sequences dropped because the client went away",
            )?,
            prefix_cache_lookups: counter(
                &r,
                "surge_worker_prefix_cache_lookups_total",
                "Admitted sequences that looked for a cached prompt prefix",
            )?,
            prefix_cache_hits: counter(
                &r,
                "surge_worker_prefix_cache_hits_total",
                "Admitted sequences that reused a cached prompt prefix",
            )?,
            prefix_cache_hit_tokens: counter(
                &r,
                "surge_worker_prefix_cache_hit_tokens_total",
                "Prompt tokens taken from the prefix cache instead of prefilled",
            )?,
            prefix_cache_tokens: gauge(
                &r,
                "surge_worker_prefix_cache_tokens",
                "KV-cache tokens held by the prefix cache",
            )?,
            prefill_tokens_per_second: register(
                &r,
                HistogramVec::new(
                    histogram_opts!(
                        "surge_worker_prefill_tokens_per_second",
                        "Prompt tokens prefilled per second of admission to first token, by prompt length",
                        vec![25.0, 50.0, 100.0, 200.0, 400.0, 800.0, 1600.0, 3200.0, 6400.0]
                    ),
                    &["prompt_tokens"],
                )?,
            )?,
            startup: crate::server::startup::startup_gauge(&r)?,
            registry: r,
        })
    }

    pub fn render(&self) -> String {
        render(&self.registry)
    }
}
