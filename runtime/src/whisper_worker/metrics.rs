//! The Whisper worker's Prometheus metrics: queue and batch occupancy, step times, audio
//! seconds transcribed, requests by status.

use prometheus::{
    histogram_opts, opts, Counter, Histogram, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    Registry,
};

use crate::server::metrics::{counter, gauge, histogram, register, render, requests_by_status};

pub struct WhisperMetrics {
    registry: Registry,
    /// `surge_worker_startup_seconds{phase}`, set once at ready.
    pub startup: prometheus::GaugeVec,
    /// Jobs accepted but not yet started.
    pub waiting: IntGauge,
    /// Jobs the engine is working on.
    pub running: IntGauge,
    /// Engine steps by kind (`encode`, `decode`) and their batch sizes.
    pub step_seconds: HistogramVec,
    pub batch_size: HistogramVec,
    pub queue_seconds: Histogram,
    pub audio_seconds: Counter,
    pub requests: IntCounterVec,
    pub cancelled: IntCounter,
    /// Arrival → response ready, by endpoint (upload read, decode, queue, transcription).
    pub request_seconds: HistogramVec,
}

impl WhisperMetrics {
    pub fn new() -> prometheus::Result<Self> {
        let r = Registry::new();
        let lat = vec![
            0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
        ];
        let step_seconds = HistogramVec::new(
            histogram_opts!(
                "surge_worker_step_duration_seconds",
                "Wall time of one batched engine step",
                vec![0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0]
            ),
            &["kind"],
        )?;
        let batch_size = HistogramVec::new(
            histogram_opts!(
                "surge_worker_batch_sequences",
                "Windows or sequences in one engine step",
                vec![1.0, 2.0, 4.0, 8.0, 16.0, 32.0]
            ),
            &["kind"],
        )?;
        Ok(WhisperMetrics {
            waiting: gauge(
                &r,
                "surge_worker_waiting_sequences",
                "Transcriptions waiting for the engine",
            )?,
            running: gauge(
                &r,
                "surge_worker_running_sequences",
                "Transcriptions the engine is working on",
            )?,
            step_seconds: register(&r, step_seconds)?,
            batch_size: register(&r, batch_size)?,
            queue_seconds: histogram(
                &r,
                "surge_worker_queue_wait_seconds",
                "Time from arrival to the engine starting on a request",
                lat,
            )?,
            audio_seconds: register(
                &r,
                Counter::with_opts(opts!(
                    "surge_worker_audio_seconds_total",
                    "Seconds of audio transcribed"
                ))?,
            )?,
            requests: requests_by_status(&r)?,
            cancelled: counter(
                &r,
                "surge_worker_cancelled_sequences_total",
                "Transcriptions dropped because the client went away",
            )?,
            request_seconds: register(
                &r,
                HistogramVec::new(
                    histogram_opts!(
                        "surge_worker_request_duration_seconds",
                        "Time from a request's arrival to its response, by endpoint",
                        vec![0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0]
                    ),
                    &["endpoint"],
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
