//! Each server's figures over the rounds (medians; the best RTF; the highest peak RSS),
//! side by side with surge's advantage, as a table and as JSON.

use serde_json::{json, Value};
use surge_loadtest::bench::print_head;
use surge_loadtest::stats::median;

use crate::surge::Round;

/// Per-server summary: medians over rounds, RTF from the best run of all rounds, the
/// highest peak RSS.
#[derive(Debug, Clone)]
pub struct Summary {
    ready_s: f64,
    load_s: Option<f64>,
    rtf: f64,
    passage_wer: f64,
    /// (concurrency, audio s/s, req/s, latency p50)
    conc: Vec<(usize, f64, f64, f64)>,
    peak_rss_single_mib: f64,
    peak_rss_mib: f64,
}

impl Summary {
    pub fn to_json(&self) -> Value {
        json!({
            "ready_after_spawn_s": self.ready_s,
            "load_s": self.load_s,
            "rtf": self.rtf,
            "passage_wer": self.passage_wer,
            "throughput": throughput_json(&self.conc),
            "peak_rss_single_mib": self.peak_rss_single_mib,
            "peak_rss_mib": self.peak_rss_mib,
        })
    }
}

/// (concurrency, audio s/s, req/s, latency p50) as JSON objects.
fn throughput_json(conc: &[(usize, f64, f64, f64)]) -> Vec<Value> {
    conc.iter()
        .map(|(c, a, r, l)| {
            json!({
                "concurrency": c, "audio_s_per_s": a, "req_per_s": r, "latency_p50_s": l,
            })
        })
        .collect()
}

pub fn round_json(r: &Round) -> Value {
    json!({
        "ready_after_spawn_s": r.ready_s,
        "load_s": r.load_s,
        "rtf_runs_s": r.rtf_runs_s,
        "passage_wer": r.passage_wer,
        "passage_text": r.passage_text,
        "throughput": throughput_json(&r.conc),
        "peak_rss_single_mib": r.peak_rss_single_mib,
        "peak_rss_mib": r.peak_rss_mib,
    })
}

pub fn of_surge(rounds: &[Round], conc: &[usize], passage_s: f64) -> Summary {
    let load: Vec<f64> = rounds.iter().filter_map(|r| r.load_s).collect();
    Summary {
        ready_s: median(&rounds.iter().map(|r| r.ready_s).collect::<Vec<_>>()),
        load_s: (!load.is_empty()).then(|| median(&load)),
        rtf: rounds
            .iter()
            .flat_map(|r| r.rtf_runs_s.iter().copied())
            .fold(f64::MAX, f64::min)
            / passage_s,
        passage_wer: rounds[0].passage_wer,
        conc: conc
            .iter()
            .map(|&c| {
                let pick = |k: usize| {
                    median(
                        &rounds
                            .iter()
                            .flat_map(|r| r.conc.iter().filter(|x| x.0 == c))
                            .map(|x| [x.1, x.2, x.3][k])
                            .collect::<Vec<_>>(),
                    )
                };
                (c, pick(0), pick(1), pick(2))
            })
            .collect(),
        peak_rss_single_mib: rounds
            .iter()
            .map(|r| r.peak_rss_single_mib)
            .fold(0.0, f64::max),
        peak_rss_mib: rounds.iter().map(|r| r.peak_rss_mib).fold(0.0, f64::max),
    }
}

pub fn of_peer(rounds: &[Value], conc: &[usize]) -> Summary {
    let f = |v: &Value, k: &str| v[k].as_f64().unwrap_or(f64::NAN);
    let med = |k: &str| median(&rounds.iter().map(|r| f(r, k)).collect::<Vec<_>>());
    Summary {
        ready_s: med("ready_after_spawn_s"),
        load_s: Some(med("load_s")),
        rtf: rounds
            .iter()
            .flat_map(|r| {
                let secs = f(r, "passage_audio_s");
                r["rtf_runs_s"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|x| x.as_f64())
                    .map(move |x| x / secs)
                    .collect::<Vec<_>>()
            })
            .fold(f64::MAX, f64::min),
        passage_wer: f(&rounds[0], "passage_wer"),
        conc: conc
            .iter()
            .map(|&c| {
                let pick = |k: &str| {
                    median(
                        &rounds
                            .iter()
                            .flat_map(|r| r["throughput"].as_array().cloned().unwrap_or_default())
                            .filter(|t| t["concurrency"].as_u64() == Some(c as u64))
                            .map(|t| f(&t, k))
                            .collect::<Vec<_>>(),
                    )
                };
                (
                    c,
                    pick("audio_s_per_s"),
                    pick("req_per_s"),
                    pick("latency_p50_s"),
                )
            })
            .collect(),
        peak_rss_single_mib: rounds
            .iter()
            .map(|r| f(r, "peak_rss_single_mib"))
            .fold(0.0, f64::max),
        peak_rss_mib: rounds
            .iter()
            .map(|r| f(r, "peak_rss_mib"))
            .fold(0.0, f64::max),
    }
}

/// (label, surge, peer, higher is better)
fn rows(
    s: Option<&Summary>,
    p: Option<&Summary>,
    conc: &[usize],
    passage_s: f64,
) -> Vec<(String, [Option<f64>; 2], Option<bool>)> {
    let both = |g: &dyn Fn(&Summary) -> Option<f64>| [s.and_then(g), p.and_then(g)];
    let mut rows = vec![
        (
            "ready after spawn (s)".to_string(),
            both(&|x| Some(x.ready_s)),
            Some(false),
        ),
        (
            "model load (s)".to_string(),
            both(&|x| x.load_s),
            Some(false),
        ),
        (
            format!("RTF, {passage_s:.0} s clip (best)"),
            both(&|x| Some(x.rtf)),
            Some(false),
        ),
        (
            format!("WER, {passage_s:.0} s clip"),
            both(&|x| Some(x.passage_wer)),
            None,
        ),
    ];
    for (i, c) in conc.iter().enumerate() {
        rows.push((
            format!("throughput, {c} concurrent (audio s/s)"),
            both(&|x| x.conc.get(i).map(|t| t.1)),
            Some(true),
        ));
        rows.push((
            format!("throughput, {c} concurrent (req/s)"),
            both(&|x| x.conc.get(i).map(|t| t.2)),
            Some(true),
        ));
        rows.push((
            format!("latency p50, {c} concurrent (s)"),
            both(&|x| x.conc.get(i).map(|t| t.3)),
            Some(false),
        ));
    }
    rows.push((
        "peak RSS, one request at a time (MiB)".to_string(),
        both(&|x| Some(x.peak_rss_single_mib)),
        Some(false),
    ));
    rows.push((
        "peak RSS, whole run (MiB)".to_string(),
        both(&|x| Some(x.peak_rss_mib)),
        Some(false),
    ));
    rows
}

/// surge's advantage: surge ÷ peer where higher is better, peer ÷ surge where lower is
/// better; > 1 means surge is better either way.
fn advantage(v: [Option<f64>; 2], higher_better: bool) -> Option<f64> {
    let (s, p) = (v[0]?, v[1]?);
    let r = if higher_better { s / p } else { p / s };
    r.is_finite().then_some(r)
}

pub fn ratios(s: Option<&Summary>, p: Option<&Summary>, conc: &[usize], passage_s: f64) -> Value {
    let mut m = serde_json::Map::new();
    for (label, v, hb) in rows(s, p, conc, passage_s) {
        if let Some(r) = hb.and_then(|hb| advantage(v, hb)) {
            m.insert(label, json!(r));
        }
    }
    Value::Object(m)
}

pub fn print_table(s: Option<&Summary>, p: Option<&Summary>, conc: &[usize], passage_s: f64) {
    print_head(&[
        "metric",
        "surge",
        "faster-whisper",
        "surge advantage (> 1: surge better)",
    ]);
    let cell = |v: Option<f64>| v.map(|v| format!("{v:.3}")).unwrap_or_else(|| "–".into());
    for (label, v, hb) in rows(s, p, conc, passage_s) {
        let ratio = match hb {
            Some(hb) => advantage(v, hb)
                .map(|r| {
                    format!(
                        "{r:.2}× ({})",
                        if hb { "surge ÷ peer" } else { "peer ÷ surge" }
                    )
                })
                .unwrap_or_else(|| "–".into()),
            None => match (v[0], v[1]) {
                (Some(a), Some(b)) => format!("{:+.3} (surge − peer)", a - b),
                _ => "–".into(),
            },
        };
        println!("| {label} | {} | {} | {ratio} |", cell(v[0]), cell(v[1]));
    }
}
