//! The load tester against the real `surge serve` with the default models: CI's spike
//! scenario (`loadtest/scenarios/ci-spike.toml`: baseline 1 req/s, a 10× spike, recovery;
//! streaming and non-streaming chat and transcriptions of corpus clips), run through the
//! same library function the `surge-loadtest run` command calls, with
//! `--fail-on 'status_5xx == 0'`. Workers start cold, so the spike meets cold starts.

mod support;

use std::path::Path;
use std::time::Instant;

use serde_json::Value;
use support::gateway::start_gateway;
use support::speech;
use surge_loadtest::run::{run, RunOptions};
use surge_loadtest::speech::{synthesize, Corpus};

#[test]
fn ci_spike_scenario_against_surge_serve() {
    if !speech::speech_tools() {
        eprintln!("SKIP: needs espeak-ng and sox (scripts/setup.sh) for the transcription class");
        return;
    }
    // The scenario next to the clips it names (`clips/sentence1.wav`, …).
    let dir = speech::scratch("loadtest");
    let scenario = dir.join("ci-spike.toml");
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../loadtest/scenarios/ci-spike.toml"),
        &scenario,
    )
    .unwrap();
    let clips = dir.join("clips");
    std::fs::create_dir_all(&clips).unwrap();
    let corpus = Corpus::default_corpus().unwrap();
    for (i, text) in corpus.sentences.iter().take(2).enumerate() {
        synthesize(text, &clips, &format!("sentence{}", i + 1), &["wav"]).unwrap();
    }

    let gw = start_gateway(&[]);
    let out = dir.join("out");
    let started = Instant::now();
    let outcome = run(&RunOptions {
        scenario,
        target: Some(gw.base.clone()),
        out: Some(out.clone()),
        fail_on: vec!["status_5xx == 0".into()],
        ..RunOptions::default()
    })
    .unwrap_or_else(|e| panic!("surge-loadtest run: {e}"));
    eprintln!("load test took {:.1} s", started.elapsed().as_secs_f64());
    let r = &outcome.report;
    let t = &r.totals;
    assert!(outcome.failures.is_empty(), "{:?}", outcome.failures);
    assert!(r.checks.len() == 1 && r.checks[0].passed, "{:?}", r.checks);

    // Counts add up: every planned arrival was sent (no limit hit, nothing dropped) and
    // every sent request is either ok or an error, in total, per class and per phase.
    assert!(t.sent >= 20, "a spike of tens of requests, got {}", t.sent);
    assert_eq!((r.planned, r.not_sent, t.dropped), (t.sent, 0, 0));
    assert_eq!(t.sent, t.ok + t.errors, "{:?}", t.errors_by_kind);
    assert_eq!(t.status_between(500, 599), 0);
    for groups in [&r.classes, &r.phases] {
        for g in groups.iter() {
            assert_eq!(g.sent, g.ok + g.errors, "{}", g.name);
        }
        assert_eq!(groups.iter().map(|g| g.sent).sum::<usize>(), t.sent);
    }
    let names: Vec<&str> = r.phases.iter().map(|g| g.name.as_str()).collect();
    assert_eq!(names, ["baseline", "ramp", "spike", "recovery"]);
    let spike = &r.phases[2];
    assert!(
        spike.offered_rps >= 8.0,
        "the 10x hold: {}",
        spike.offered_rps
    );
    assert!(
        r.classes.iter().all(|c| c.sent > 0),
        "every class was drawn"
    );
    assert_eq!(
        r.timeline.iter().map(|b| b.arrivals).sum::<usize>(),
        t.arrivals
    );

    // What a user saw: streams have TTFT and inter-token gaps, transcriptions audio.
    let stream = r.classes.iter().find(|c| c.name == "chat-stream").unwrap();
    assert!(stream.ttft.count > 0 && stream.ttft.count <= stream.ok);
    assert!(stream.ok == 0 || stream.itl.count > 0);
    let asr = r.classes.iter().find(|c| c.name == "transcribe").unwrap();
    assert!(asr.ok == 0 || asr.audio_seconds > 0.0);
    assert!(t.tokens_out > 0);

    // The gateway's /metrics were on the timeline: a worker was ready at some point.
    let server = r.server.as_ref().expect("surge serve has /metrics");
    assert!(server.max_workers_ready >= 1.0, "{server:?}");
    assert!(r.metrics.len() >= 5, "{} scrapes", r.metrics.len());

    // The files: JSON report, one record per request, the plot.
    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap();
    assert_eq!(report["totals"]["sent"], t.sent);
    assert_eq!(report["checks"][0]["expr"], "status_5xx == 0");
    let lines = std::fs::read_to_string(out.join("requests.jsonl")).unwrap();
    assert_eq!(lines.lines().count(), t.arrivals);
    let svg = std::fs::read_to_string(out.join("plot.svg")).unwrap();
    assert!(svg.starts_with("<svg") && svg.contains("spike") && svg.contains("workers ready"));
}
