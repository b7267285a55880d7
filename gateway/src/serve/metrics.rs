//! The gateway's Prometheus metrics (`GET /metrics`), named by Prometheus conventions.

use prometheus::{
    histogram_opts, opts, CounterVec, GaugeVec, HistogramVec, IntCounterVec, IntGaugeVec, Registry,
};
use surge_runtime::server::metrics::{register, render};

pub struct GatewayMetrics {
    registry: Registry,
    /// model, route, status
    pub requests: IntCounterVec,
    /// model, route
    pub request_seconds: HistogramVec,
    pub ttft_seconds: HistogramVec,
    pub inter_token_seconds: HistogramVec,
    /// model
    pub queue_wait_seconds: HistogramVec,
    pub queue_depth: IntGaugeVec,
    pub in_flight: IntGaugeVec,
    /// model, state
    pub workers: IntGaugeVec,
    /// model
    pub cold_start_seconds: HistogramVec,
    pub worker_seconds: CounterVec,
    pub tokens: IntCounterVec,
    pub audio_seconds: CounterVec,
    /// reason
    pub rejections: IntCounterVec,
    /// model, direction (up/down), reason (panic/stable/idle/evict)
    pub scale_events: IntCounterVec,
    /// model
    pub desired_workers: IntGaugeVec,
    /// model, window (stable/panic): the demand the autoscaler decided on
    pub scaler_concurrency: GaugeVec,
    /// model, phase (spawn/load/warmup/ready...): where a cold start's time went
    pub cold_start_phase_seconds: HistogramVec,
    /// model, tenant: what was billed (tenants come from API keys, so the label's
    /// values are bounded by the keys configured; `anonymous` without keys)
    pub billed_execution_seconds: CounterVec,
    pub billed_cost_usd: CounterVec,
    /// model, tenant, kind (prompt/completion)
    pub billed_tokens: IntCounterVec,
    /// outcome (recorded/failed): usage records handed to the ledger
    pub usage_records: IntCounterVec,
    /// outcome (exported/failed): the CloudEvents export's events and failed passes
    pub usage_export: IntCounterVec,
}

impl GatewayMetrics {
    /// Brings `surge_usage_export_total` up to the exporter's own counters.
    pub fn sync_export(&self, c: &crate::metering::export::Counters) {
        use std::sync::atomic::Ordering;
        for (outcome, now) in [
            ("exported", c.exported.load(Ordering::Relaxed)),
            ("failed", c.failures.load(Ordering::Relaxed)),
        ] {
            let counter = self.usage_export.with_label_values(&[outcome]);
            counter.inc_by(now.saturating_sub(counter.get()));
        }
    }

    pub fn new() -> prometheus::Result<Self> {
        let r = Registry::new();
        let lat = vec![
            0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
        ];
        let fine = vec![0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0];
        let billed = |name: &str, help: &str| {
            register(
                &r,
                CounterVec::new(opts!(name, help), &["model", "tenant"])?,
            )
        };
        Ok(GatewayMetrics {
            billed_execution_seconds: billed(
                "surge_billed_execution_seconds_total",
                "Execution seconds billed (each request's fair share of its worker's batch steps)",
            )?,
            billed_cost_usd: billed(
                "surge_billed_cost_usd_total",
                "Cost billed in USD, under the price list in force",
            )?,
            billed_tokens: register(
                &r,
                IntCounterVec::new(
                    opts!(
                        "surge_billed_tokens_total",
                        "Tokens billed, as the clients received them"
                    ),
                    &["model", "tenant", "kind"],
                )?,
            )?,
            usage_export: register(
                &r,
                IntCounterVec::new(
                    opts!(
                        "surge_usage_export_total",
                        "Usage events exported (exported) and failed delivery passes (failed)"
                    ),
                    &["outcome"],
                )?,
            )?,
            usage_records: register(
                &r,
                IntCounterVec::new(
                    opts!(
                        "surge_usage_records_total",
                        "Usage records handed to the ledger (failed: the ledger had stopped)"
                    ),
                    &["outcome"],
                )?,
            )?,
            requests: register(
                &r,
                IntCounterVec::new(
                    opts!(
                        "surge_requests_total",
                        "Requests by model, route and status"
                    ),
                    &["model", "route", "status"],
                )?,
            )?,
            request_seconds: register(
                &r,
                HistogramVec::new(
                    histogram_opts!(
                        "surge_request_duration_seconds",
                        "Time from arrival to the last byte",
                        lat.clone()
                    ),
                    &["model", "route"],
                )?,
            )?,
            ttft_seconds: register(
                &r,
                HistogramVec::new(
                    histogram_opts!(
                        "surge_time_to_first_token_seconds",
                        "Time from arrival to the first streamed token",
                        lat.clone()
                    ),
                    &["model"],
                )?,
            )?,
            inter_token_seconds: register(
                &r,
                HistogramVec::new(
                    histogram_opts!(
                        "surge_inter_token_latency_seconds",
                        "Time between streamed chunks",
                        fine
                    ),
                    &["model"],
                )?,
            )?,
            queue_wait_seconds: register(
                &r,
                HistogramVec::new(
                    histogram_opts!(
                        "surge_queue_wait_seconds",
                        "Time a request waited for a worker slot",
                        lat.clone()
                    ),
                    &["model"],
                )?,
            )?,
            queue_depth: register(
                &r,
                IntGaugeVec::new(
                    opts!("surge_queue_depth", "Requests waiting for a worker"),
                    &["model"],
                )?,
            )?,
            in_flight: register(
                &r,
                IntGaugeVec::new(
                    opts!(
                        "surge_in_flight_requests",
                        "Requests being served by workers"
                    ),
                    &["model"],
                )?,
            )?,
            workers: register(
                &r,
                IntGaugeVec::new(
                    opts!("surge_workers", "Workers by model and state"),
                    &["model", "state"],
                )?,
            )?,
            cold_start_seconds: register(
                &r,
                HistogramVec::new(
                    histogram_opts!(
                        "surge_cold_start_duration_seconds",
                        "Worker spawn to ready",
                        lat.clone()
                    ),
                    &["model"],
                )?,
            )?,
            worker_seconds: register(
                &r,
                CounterVec::new(
                    opts!(
                        "surge_worker_seconds_total",
                        "Seconds workers were alive (the cost of keeping them)"
                    ),
                    &["model"],
                )?,
            )?,
            tokens: register(
                &r,
                IntCounterVec::new(
                    opts!("surge_tokens_total", "Tokens by model and kind"),
                    &["model", "kind"],
                )?,
            )?,
            audio_seconds: register(
                &r,
                CounterVec::new(
                    opts!("surge_audio_seconds_total", "Seconds of audio transcribed"),
                    &["model"],
                )?,
            )?,
            rejections: register(
                &r,
                IntCounterVec::new(
                    opts!(
                        "surge_rejections_total",
                        "Requests the gateway refused, by reason"
                    ),
                    &["reason"],
                )?,
            )?,
            scale_events: register(
                &r,
                IntCounterVec::new(
                    opts!(
                        "surge_scale_events_total",
                        "Workers started or stopped by the autoscaler, by direction and reason"
                    ),
                    &["model", "direction", "reason"],
                )?,
            )?,
            desired_workers: register(
                &r,
                IntGaugeVec::new(
                    opts!("surge_desired_workers", "The autoscaler's desired workers"),
                    &["model"],
                )?,
            )?,
            scaler_concurrency: register(
                &r,
                GaugeVec::new(
                    opts!(
                        "surge_autoscaler_concurrency",
                        "Average demand (in flight + queued) over the stable and panic windows"
                    ),
                    &["model", "window"],
                )?,
            )?,
            cold_start_phase_seconds: register(
                &r,
                HistogramVec::new(
                    histogram_opts!(
                        "surge_cold_start_phase_seconds",
                        "Where a worker's cold start went, by phase",
                        vec![
                            0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                            30.0
                        ]
                    ),
                    &["model", "phase"],
                )?,
            )?,
            registry: r,
        })
    }

    pub fn render(&self) -> String {
        render(&self.registry)
    }

    /// The names of the gateway's own metric families.
    pub fn family_names(&self) -> Vec<String> {
        self.registry
            .gather()
            .iter()
            .map(|f| f.name().to_string())
            .collect()
    }
}
