//! The report: per-request records folded into groups (the whole run, each class, each
//! phase of the profile) with counts, errors by status, latency percentiles, throughput
//! and goodput, plus the timeline and the server's metrics. Serialised as the JSON report
//! and read by the table, the plot and `--fail-on`.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Serialize;

use crate::client::Record;
use crate::scenario::{Limits, Slo};
use crate::schedule::Phase;
use crate::scrape::MetricsSample;
use crate::stats::Summary;
use crate::timeline::Bucket;

/// Counts and distributions of one set of requests.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Group {
    pub name: String,
    /// Seconds the rates below are divided by: the phase's length, or the sending window
    /// of the run for the totals and classes.
    pub window_s: f64,
    /// Arrivals, dropped ones included.
    pub arrivals: usize,
    pub sent: usize,
    pub ok: usize,
    pub errors: usize,
    /// Arrivals not sent because `max_in_flight` requests were running.
    pub dropped: usize,
    /// errors ÷ sent.
    pub error_rate: f64,
    /// Failed requests by kind: `http_503`, `timeout`, `connect`, `stream_error`, …
    pub errors_by_kind: BTreeMap<String, usize>,
    /// Every sent request by HTTP status (`0`: no response).
    pub status_counts: BTreeMap<u16, usize>,
    /// Time to first token (streamed, successful requests).
    pub ttft: Summary,
    /// Inter-token latency, every gap of every successful stream.
    pub itl: Summary,
    /// Intended send → last byte, successful requests.
    pub e2e: Summary,
    /// Actual − intended send time: how late the client itself was.
    pub send_lag: Summary,
    pub tokens_out: u64,
    pub audio_seconds: f64,
    /// Arrivals per second (the offered load).
    pub offered_rps: f64,
    /// Successful requests per second.
    pub rps: f64,
    /// Output tokens per second.
    pub tok_s: f64,
    /// Successful requests that met their class's SLO thresholds.
    pub good: usize,
    /// good ÷ sent (1 when nothing was sent).
    pub goodput: f64,
    /// good ÷ window.
    pub goodput_rps: f64,
}

/// Whether `r` succeeded and met `slo`. TTFT and inter-token thresholds apply only to
/// streamed requests; a stream that produced no token misses a TTFT threshold.
pub fn is_good(r: &Record, slo: &Slo) -> bool {
    if !r.ok() {
        return false;
    }
    let within = |x: Option<f64>, limit: Option<f64>| match (x, limit) {
        (_, None) => true,
        (Some(x), Some(l)) => x <= l,
        (None, Some(_)) => false,
    };
    within(Some(r.e2e), slo.e2e)
        && (!r.streamed
            || (within(r.ttft, slo.ttft) && (r.itl.is_empty() || within(r.mean_itl(), slo.itl))))
}

impl Group {
    /// Folds `records`; `slo` gives each record's thresholds (its class's).
    pub fn build<'a>(
        name: &str,
        window_s: f64,
        records: impl IntoIterator<Item = &'a Record>,
        slo: impl Fn(&Record) -> Slo,
    ) -> Group {
        let mut g = Group {
            name: name.to_string(),
            window_s,
            ..Group::default()
        };
        let (mut ttft, mut itl, mut e2e, mut lag) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for r in records {
            g.arrivals += 1;
            let Some(sent) = r.sent else {
                g.dropped += 1;
                continue;
            };
            g.sent += 1;
            lag.push(sent - r.intended);
            *g.status_counts.entry(r.status).or_default() += 1;
            g.tokens_out += r.tokens_out;
            g.audio_seconds += r.audio_seconds.unwrap_or(0.0);
            match &r.error {
                Some(kind) => {
                    g.errors += 1;
                    *g.errors_by_kind.entry(kind.clone()).or_default() += 1;
                }
                None => {
                    g.ok += 1;
                    e2e.push(r.e2e);
                    ttft.extend(r.ttft);
                    itl.extend_from_slice(&r.itl);
                    if is_good(r, &slo(r)) {
                        g.good += 1;
                    }
                }
            }
        }
        let per_s = |n: f64| if window_s > 0.0 { n / window_s } else { 0.0 };
        g.error_rate = if g.sent > 0 {
            g.errors as f64 / g.sent as f64
        } else {
            0.0
        };
        g.goodput = if g.sent > 0 {
            g.good as f64 / g.sent as f64
        } else {
            1.0
        };
        g.offered_rps = per_s(g.arrivals as f64);
        g.rps = per_s(g.ok as f64);
        g.tok_s = per_s(g.tokens_out as f64);
        g.goodput_rps = per_s(g.good as f64);
        (g.ttft, g.itl, g.e2e, g.send_lag) = (
            Summary::of(&ttft),
            Summary::of(&itl),
            Summary::of(&e2e),
            Summary::of(&lag),
        );
        g
    }

    /// Sent requests whose status is in `lo..=hi`.
    pub fn status_between(&self, lo: u16, hi: u16) -> usize {
        self.status_counts.range(lo..=hi).map(|(_, n)| n).sum()
    }
}

/// The server's side over the run, from its `/metrics`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ServerSummary {
    pub samples: usize,
    /// Cold starts during the run (last − first cumulative count).
    pub cold_starts: f64,
    pub rejections: f64,
    pub max_workers_ready: f64,
    pub max_workers_starting: f64,
    pub max_queue_depth: f64,
}

impl ServerSummary {
    pub fn of(samples: &[MetricsSample]) -> Option<ServerSummary> {
        let (first, last) = (samples.first()?, samples.last()?);
        let max = |f: fn(&MetricsSample) -> f64| samples.iter().map(f).fold(0.0, f64::max);
        Some(ServerSummary {
            samples: samples.len(),
            cold_starts: last.cold_starts - first.cold_starts,
            rejections: last.rejections - first.rejections,
            max_workers_ready: max(|s| s.workers_ready),
            max_workers_starting: max(|s| s.workers_starting),
            max_queue_depth: max(|s| s.queue_depth),
        })
    }
}

/// How the load was shaped.
#[derive(Debug, Clone, Serialize)]
pub struct ScheduleInfo {
    /// `constant`, `poisson`, `steps`, `spike` or `closed`.
    pub kind: String,
    pub duration_s: f64,
    /// Requests the open-loop schedule implies (area under its rate).
    pub expected_requests: Option<f64>,
    pub spacing: Option<crate::schedule::Spacing>,
    pub phases: Vec<Phase>,
    pub users: Option<usize>,
}

/// One `--fail-on` expression and how it came out.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub expr: String,
    pub value: Option<f64>,
    pub passed: bool,
}

/// The whole report (`report.json`).
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub name: String,
    pub target: String,
    /// Unix time of the run's start.
    pub started_unix: f64,
    /// Wall-clock length of the run, draining included.
    pub wall_s: f64,
    /// Stopped early by Ctrl-C.
    pub interrupted: bool,
    pub schedule: ScheduleInfo,
    pub limits: Limits,
    pub seed: u64,
    pub slo: Slo,
    /// Requests the schedule planned, and how many of them the limits kept from being
    /// sent (max_requests, max_duration).
    pub planned: usize,
    pub not_sent: usize,
    pub totals: Group,
    pub classes: Vec<Group>,
    pub phases: Vec<Group>,
    pub timeline: Vec<Bucket>,
    pub server: Option<ServerSummary>,
    pub metrics: Vec<MetricsSample>,
    pub checks: Vec<Check>,
}

impl Report {
    /// Writes `report.json` and `requests.jsonl` (one record per line) into `dir`.
    pub fn write(&self, dir: &Path, records: &[Record]) -> Result<(), String> {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let json = serde_json::to_string_pretty(self).map_err(|e| e.to_string())?;
        let p = dir.join("report.json");
        std::fs::write(&p, json).map_err(|e| format!("{}: {e}", p.display()))?;
        let mut lines = String::new();
        for r in records {
            lines.push_str(&serde_json::to_string(r).map_err(|e| e.to_string())?);
            lines.push('\n');
        }
        let p = dir.join("requests.jsonl");
        std::fs::write(&p, lines).map_err(|e| format!("{}: {e}", p.display()))
    }

    /// The group a `--fail-on` scope names.
    pub fn group(&self, scope: &crate::failon::Scope) -> Option<&Group> {
        use crate::failon::Scope;
        match scope {
            Scope::Total => Some(&self.totals),
            Scope::Class(n) => self.classes.iter().find(|g| &g.name == n),
            Scope::Phase(n) => self.phases.iter().find(|g| &g.name == n),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(status: u16, error: Option<&str>, e2e: f64, ttft: Option<f64>) -> Record {
        Record {
            class: "c".into(),
            phase: "p".into(),
            sent: Some(0.0),
            status,
            error: error.map(String::from),
            e2e,
            ttft,
            streamed: ttft.is_some(),
            itl: ttft.map(|_| vec![0.01, 0.03]).unwrap_or_default(),
            tokens_out: 3,
            ..Record::default()
        }
    }

    #[test]
    fn group_counts_add_up_and_goodput_uses_the_slo() {
        let mut records = vec![
            rec(200, None, 1.0, Some(0.2)),
            rec(200, None, 3.0, Some(1.5)),
            rec(200, None, 0.5, None),
            rec(503, Some("http_503"), 0.1, None),
            rec(0, Some("timeout"), 60.0, None),
        ];
        records.push(Record {
            sent: None,
            error: Some("dropped".into()),
            ..Record::default()
        });
        let slo = Slo {
            ttft: Some(1.0),
            itl: None,
            e2e: Some(2.0),
        };
        let g = Group::build("all", 10.0, &records, |_| slo);
        assert_eq!(
            (g.arrivals, g.sent, g.ok, g.errors, g.dropped),
            (6, 5, 3, 2, 1)
        );
        assert_eq!(g.sent, g.ok + g.errors);
        assert_eq!(g.errors_by_kind["http_503"], 1);
        assert_eq!(g.errors_by_kind["timeout"], 1);
        assert_eq!(g.status_between(500, 599), 1);
        assert_eq!(g.status_counts[&0], 1);
        assert!((g.error_rate - 0.4).abs() < 1e-12);
        // Good: the first stream (fast) and the non-stream (e2e 0.5); the second stream
        // misses both thresholds.
        assert_eq!(g.good, 2);
        assert!((g.goodput - 0.4).abs() < 1e-12);
        assert_eq!(
            g.e2e.max,
            Some(3.0),
            "latency only over successful requests"
        );
        assert_eq!(g.ttft.count, 2);
        assert_eq!(g.itl.count, 4);
        assert_eq!((g.rps, g.offered_rps, g.tok_s), (0.3, 0.6, 1.5));
        let slow_itl = Slo {
            itl: Some(0.015),
            ..Slo::default()
        };
        assert_eq!(Group::build("x", 1.0, &records, |_| slow_itl).good, 1);
    }

    #[test]
    fn server_summary_takes_deltas_and_peaks() {
        let s = |t, ready, queue, cold| MetricsSample {
            t,
            workers_ready: ready,
            queue_depth: queue,
            cold_starts: cold,
            ..MetricsSample::default()
        };
        let sum = ServerSummary::of(&[
            s(0.0, 0.0, 0.0, 4.0),
            s(1.0, 2.0, 7.0, 6.0),
            s(2.0, 1.0, 0.0, 6.0),
        ])
        .unwrap();
        assert_eq!(
            (sum.cold_starts, sum.max_workers_ready, sum.max_queue_depth),
            (2.0, 2.0, 7.0)
        );
        assert!(ServerSummary::of(&[]).is_none());
    }
}
