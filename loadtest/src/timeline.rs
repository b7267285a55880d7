//! The run second by second: requests are placed by their *intended* send time, so a
//! bucket's latency percentiles say what users arriving then experienced (a spike's
//! victims show up at the spike, not when their answers finally came); completions and
//! tokens are placed by when they finished (throughput).

use serde::Serialize;

use crate::client::Record;
use crate::schedule::Profile;
use crate::stats::Summary;

/// One time slice of the run.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Bucket {
    /// Start of the slice, seconds from the run start.
    pub t: f64,
    /// The schedule's intended rate at the middle of the slice (open loop).
    pub target_rps: Option<f64>,
    /// Arrivals in the slice, by intended time.
    pub arrivals: usize,
    pub ok: usize,
    pub errors: usize,
    /// Requests that finished (successfully or not) in the slice.
    pub completed: usize,
    /// Output tokens of requests that finished in the slice.
    pub tokens: u64,
    pub ttft_p50: Option<f64>,
    pub ttft_p95: Option<f64>,
    pub e2e_p50: Option<f64>,
    pub e2e_p95: Option<f64>,
    pub e2e_p99: Option<f64>,
}

/// A width that keeps a long run under ~600 slices: 1 s up to 10 minutes, then coarser.
pub fn bucket_width(span: f64) -> f64 {
    (span / 600.0).ceil().max(1.0)
}

/// Slices of `width` seconds covering every arrival and completion.
pub fn timeline(records: &[Record], width: f64, profile: Option<&Profile>) -> Vec<Bucket> {
    let end = records
        .iter()
        .map(|r| r.done.max(r.intended))
        .fold(profile.map_or(0.0, Profile::duration), f64::max);
    let n = ((end / width).ceil() as usize).max(1);
    let mut buckets: Vec<Bucket> = (0..n)
        .map(|i| {
            let t = i as f64 * width;
            Bucket {
                t,
                target_rps: profile.map(|p| p.rate_at(t + width / 2.0)),
                ..Bucket::default()
            }
        })
        .collect();
    let idx = |t: f64| ((t / width).floor().max(0.0) as usize).min(n - 1);
    let mut lat: Vec<(Vec<f64>, Vec<f64>)> = vec![(Vec::new(), Vec::new()); n];
    for r in records.iter().filter(|r| r.was_sent()) {
        let b = &mut buckets[idx(r.intended)];
        b.arrivals += 1;
        if r.ok() {
            b.ok += 1;
            lat[idx(r.intended)].0.extend(r.ttft);
            lat[idx(r.intended)].1.push(r.e2e);
        } else {
            b.errors += 1;
        }
        let d = &mut buckets[idx(r.done)];
        d.completed += 1;
        d.tokens += r.tokens_out;
    }
    for r in records.iter().filter(|r| !r.was_sent()) {
        buckets[idx(r.intended)].arrivals += 1;
    }
    for (b, (ttft, e2e)) in buckets.iter_mut().zip(lat) {
        let (t, e) = (Summary::of(&ttft), Summary::of(&e2e));
        (b.ttft_p50, b.ttft_p95) = (t.p50, t.p95);
        (b.e2e_p50, b.e2e_p95, b.e2e_p99) = (e.p50, e.p95, e.p99);
    }
    buckets
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schedule::Spacing;

    #[test]
    fn requests_land_by_intended_and_done_time() {
        let r = |intended: f64, done: f64, ok: bool| Record {
            intended,
            sent: Some(intended),
            done,
            e2e: done - intended,
            error: (!ok).then(|| "http_503".to_string()),
            tokens_out: 2,
            ..Record::default()
        };
        let records = vec![r(0.1, 0.5, true), r(0.9, 2.5, true), r(1.2, 1.3, false)];
        let p = Profile::constant("c", 4.0, 2.0, Spacing::Uniform);
        let b = timeline(&records, 1.0, Some(&p));
        assert_eq!(b.len(), 3);
        assert_eq!((b[0].arrivals, b[0].ok, b[0].errors), (2, 2, 0));
        assert_eq!((b[1].arrivals, b[1].errors, b[1].completed), (1, 1, 1));
        assert_eq!((b[0].completed, b[2].completed, b[2].tokens), (1, 1, 2));
        assert_eq!(b[0].e2e_p99, Some(1.6));
        assert_eq!(b[1].e2e_p50, None);
        assert_eq!(b[0].target_rps, Some(4.0));
        assert_eq!(b[2].target_rps, Some(0.0));
        assert_eq!(bucket_width(100.0), 1.0);
        assert_eq!(bucket_width(1800.0), 3.0);
    }
}
