//! Reading the target's Prometheus `/metrics` once a second during the run, so the
//! server's side (workers starting and ready, queue depth, cold starts, rejections) sits
//! on the same timeline as the latencies users saw. Only the few series surge exports are
//! parsed (summed over models); a target without them (a peer) simply has no timeline.

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use surge_protocol::prom;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::client::Target;

/// One scrape, values summed over every model.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct MetricsSample {
    /// Seconds from the start of the run.
    pub t: f64,
    /// `surge_workers{state="ready"}`.
    pub workers_ready: f64,
    /// `surge_workers{state="starting"}`.
    pub workers_starting: f64,
    /// Every other state (draining, failed, …).
    pub workers_other: f64,
    /// `surge_queue_depth`: requests waiting for a worker.
    pub queue_depth: f64,
    /// `surge_in_flight_requests`.
    pub in_flight: f64,
    /// Cumulative cold starts (`surge_cold_start_duration_seconds_count`).
    pub cold_starts: f64,
    /// Cumulative `surge_rejections_total` (queue full, queue timeout, rate limits).
    pub rejections: f64,
}

/// Parses Prometheus text exposition; `None` when none of surge's series is present.
pub fn parse(text: &str, t: f64) -> Option<MetricsSample> {
    let mut s = MetricsSample {
        t,
        ..MetricsSample::default()
    };
    let mut seen = false;
    for sample in prom::parse(text) {
        let slot = match sample.name.as_str() {
            "surge_workers" => match sample.label("state") {
                Some("ready") => &mut s.workers_ready,
                Some("starting") => &mut s.workers_starting,
                _ => &mut s.workers_other,
            },
            "surge_queue_depth" => &mut s.queue_depth,
            "surge_in_flight_requests" => &mut s.in_flight,
            "surge_cold_start_duration_seconds_count" => &mut s.cold_starts,
            "surge_rejections_total" => &mut s.rejections,
            _ => continue,
        };
        *slot += sample.value;
        seen = true;
    }
    seen.then_some(s)
}

/// Scrapes `{base}/metrics` every `every` until `stop` turns true, then once more.
/// Gives up after three failed scrapes in a row with no success before (not surge, or
/// no `/metrics`): returns what it has.
pub async fn scrape_loop(
    target: Arc<Target>,
    start: Instant,
    every: Duration,
    mut stop: watch::Receiver<bool>,
) -> Vec<MetricsSample> {
    let url = format!("{}/metrics", target.base);
    let mut out = Vec::new();
    let mut failures = 0;
    let mut tick = tokio::time::interval_at(start, every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let last = tokio::select! {
            _ = tick.tick() => false,
            _ = stop.changed() => true,
        };
        let t = start.elapsed().as_secs_f64();
        match fetch(&target, &url).await.and_then(|text| parse(&text, t)) {
            Some(s) => {
                out.push(s);
                failures = 0;
            }
            None => failures += 1,
        }
        if last || *stop.borrow() || (out.is_empty() && failures >= 3) {
            return out;
        }
    }
}

async fn fetch(target: &Target, url: &str) -> Option<String> {
    let resp = target
        .client
        .get(url)
        .timeout(Duration::from_secs(2))
        .send()
        .await
        .ok()?;
    if !resp.status().is_success() {
        return None;
    }
    resp.text().await.ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_surge_series_summed_over_models() {
        let text = r#"# HELP surge_workers Workers by model and state
# TYPE surge_workers gauge
surge_workers{model="smollm2-135m-instruct",state="ready"} 2
surge_workers{model="whisper-tiny.en",state="ready"} 1
surge_workers{model="smollm2-135m-instruct",state="starting"} 1
surge_workers{model="whisper-tiny.en",state="draining"} 1
surge_queue_depth{model="smollm2-135m-instruct"} 5
surge_queue_depth{model="whisper-tiny.en"} 0
surge_in_flight_requests{model="smollm2-135m-instruct"} 16
surge_cold_start_duration_seconds_bucket{model="whisper-tiny.en",le="0.5"} 2
surge_cold_start_duration_seconds_count{model="whisper-tiny.en"} 2
surge_cold_start_duration_seconds_count{model="smollm2-135m-instruct"} 3
surge_rejections_total{reason="queue full, really"} 4 1700000000000
surge_requests_total{model="x",route="chat",status="200"} 99
"#;
        let s = parse(text, 1.5).unwrap();
        assert_eq!(
            s,
            MetricsSample {
                t: 1.5,
                workers_ready: 3.0,
                workers_starting: 1.0,
                workers_other: 1.0,
                queue_depth: 5.0,
                in_flight: 16.0,
                cold_starts: 5.0,
                rejections: 4.0,
            }
        );
        assert_eq!(parse("llamacpp_tokens 3\n# nothing of ours", 0.0), None);
        assert_eq!(parse("<html>404</html>", 0.0), None);
    }
}
