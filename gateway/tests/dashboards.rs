//! The dashboards (`dashboards/`): the rule files pass promtool (syntax, and the unit
//! tests in dashboards/tests, which cover every alert firing and staying silent), the
//! Grafana dashboard is wired to its variables, and every panel query and every rule
//! works on real data: a real Prometheus scrapes a real `surge serve` (whose /metrics
//! carries its workers' metrics too) through a short, bounded load.

mod support;
// Only this test needs a Prometheus; kept beside the other helpers.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::gateway::{pool_view, start_gateway, wait_until, Gateway};
use support::http;
use support::prometheus::{self, Prometheus};
use support::worker::{LLM, WHISPER};

fn dashboards() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../dashboards")
}

fn rule_files() -> Vec<PathBuf> {
    let d = dashboards().join("rules");
    vec![d.join("surge-recording.yml"), d.join("surge-alerts.yml")]
}

/// Runs promtool; panics with its output unless it succeeds.
fn promtool(args: &[&str], files: &[PathBuf]) {
    let out = Command::new(prometheus::require("promtool"))
        .args(args)
        .args(files)
        .current_dir(dashboards())
        .output()
        .expect("run promtool");
    assert!(
        out.status.success(),
        "promtool {}: {}\n{}{}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `promtool check rules` and `promtool test rules dashboards/tests/*.yml`; and every
/// alert has a unit test where it fires and one where it stays silent.
#[test]
fn rules_pass_promtool() {
    promtool(&["check", "rules"], &rule_files());
    let mut tests: Vec<PathBuf> = std::fs::read_dir(dashboards().join("tests"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yml"))
        .collect();
    tests.sort();
    assert!(!tests.is_empty(), "no promtool tests in dashboards/tests");
    promtool(&["test", "rules"], &tests);

    // Each `alertname: X` block of a test is a firing case when it expects labels and
    // a silent one when it expects `[]` (text-level: no YAML parser needed).
    let text: String = tests
        .iter()
        .map(|p| std::fs::read_to_string(p).unwrap())
        .collect();
    let cases: Vec<(&str, bool)> = text
        .split("alertname: ")
        .skip(1)
        .map(|block| {
            let name = block.split_whitespace().next().unwrap();
            let case = block.split("eval_time:").next().unwrap();
            (name, case.contains("exp_labels"))
        })
        .collect();
    let alerts = std::fs::read_to_string(&rule_files()[1]).unwrap();
    let names: Vec<&str> = alerts
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert: "))
        .collect();
    assert!(names.len() >= 10, "alerts found: {names:?}");
    for name in names {
        for fires in [true, false] {
            assert!(
                cases.contains(&(name, fires)),
                "{name} has no promtool test where it {}",
                if fires { "fires" } else { "stays silent" }
            );
        }
    }
}

fn dashboard() -> Value {
    let text = std::fs::read_to_string(dashboards().join("surge.json")).unwrap();
    serde_json::from_str(&text).expect("surge.json is JSON")
}

/// Every panel (rows included) with the targets it queries.
fn panels(d: &Value) -> Vec<&Value> {
    d["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| std::iter::once(p).chain(p["panels"].as_array().into_iter().flatten()))
        .collect()
}

/// Current schema, the `datasource` and `model` variables, and every query goes to the
/// `datasource` variable's Prometheus (never to a data source of the author's Grafana).
#[test]
fn dashboard_uses_its_variables() {
    let d = dashboard();
    assert!(d["schemaVersion"].as_u64().unwrap() >= 39);
    let vars = d["templating"]["list"].as_array().unwrap();
    let var = |name: &str| vars.iter().find(|v| v["name"] == name).unwrap();
    assert_eq!(var("datasource")["type"], "datasource");
    assert_eq!(var("datasource")["query"], "prometheus");
    assert_eq!(
        var("model")["definition"],
        "label_values(surge_requests_total, model)"
    );
    let ds = json!({"type": "prometheus", "uid": "${datasource}"});
    let mut ids = std::collections::HashSet::new();
    for p in panels(&d) {
        assert!(
            ids.insert(p["id"].as_u64().unwrap()),
            "duplicate id {}",
            p["id"]
        );
        for t in p["targets"].as_array().into_iter().flatten() {
            assert_eq!(p["datasource"], ds, "panel {}", p["title"]);
            assert_eq!(t["datasource"], ds, "panel {}", p["title"]);
            assert!(t["expr"].as_str().is_some_and(|e| !e.is_empty()));
        }
    }
}

/// Each panel query as Grafana would send it with every model selected ("All" is the
/// variable's allValue) over a 5-minute range: the variables substituted.
fn panel_queries(d: &Value) -> Vec<(String, String)> {
    let vars = d["templating"]["list"].as_array().unwrap();
    let mut subs: Vec<(String, String)> = vars
        .iter()
        .filter(|v| v["type"] != "datasource")
        .map(|v| {
            let value = v["allValue"].as_str().or(v["current"]["value"].as_str());
            let value = value.unwrap_or_else(|| panic!("variable {} has no value", v["name"]));
            (v["name"].as_str().unwrap().to_string(), value.to_string())
        })
        .collect();
    for (name, value) in [
        ("__rate_interval", "1m"),
        ("__interval", "15s"),
        ("__range_s", "300"),
        ("__range", "5m"),
    ] {
        subs.push((name.into(), value.into()));
    }
    // Longest first: `$__range_s` before `$__range`.
    subs.sort_by_key(|(name, _)| std::cmp::Reverse(name.len()));
    let mut out = Vec::new();
    for p in panels(d) {
        for t in p["targets"].as_array().into_iter().flatten() {
            let mut expr = t["expr"].as_str().unwrap().to_string();
            for (name, value) in &subs {
                expr = expr.replace(&format!("${{{name}}}"), value);
                expr = expr.replace(&format!("${name}"), value);
            }
            // Left over: a variable the dashboard does not define (label_replace's
            // "${1}" is a regex group, not a variable).
            let unknown = expr.match_indices('$').any(|(i, _)| {
                let next = expr[i + 1..].trim_start_matches('{').chars().next();
                next.is_some_and(|c| c.is_alphabetic() || c == '_')
            });
            assert!(!unknown, "unknown variable in {:?}: {expr}", p["title"]);
            let what = format!("panel {:?} {}", p["title"].as_str().unwrap(), t["refId"]);
            out.push((what, expr));
        }
    }
    out
}

/// The gateway under test: the LLM stays up (its worker's metrics are scraped through
/// the gateway), the Whisper pool scales to zero after 1 s idle (a worker exit, an idle
/// scale-down and, on the next request, a second cold start), usage exported to a file.
fn gateway(dir: &Path) -> Gateway {
    let cfg = dir.join("surge.toml");
    let text = format!(
        "cpu_budget = 4\nautoscale_interval = 0.2\n\
         [defaults]\nconcurrency = 4\nworker_cores = 1.0\nqueue_size = 16\nqueue_timeout = 60\n\
         [models.{LLM}]\nidle_timeout = 600\n\
         [models.\"{WHISPER}\"]\nidle_timeout = 1\n\
         [usage_export]\nfile = {:?}\ninterval = 0.2\n",
        dir.join("usage.jsonl").to_str().unwrap()
    );
    std::fs::write(&cfg, text).unwrap();
    start_gateway(&["--config", cfg.to_str().unwrap()])
}

fn chat(gw: &Gateway, stream: bool) {
    let body = json!({
        "model": LLM,
        "messages": [{"role": "user", "content": "Name a colour."}],
        "max_tokens": 8,
        "stream": stream,
    });
    let url = gw.url("/v1/chat/completions");
    if stream {
        let (status, mut reader) = http::open_stream(&url, &body);
        assert_eq!(status, 200);
        let events = http::read_sse(&mut *reader, Instant::now());
        assert!(events.len() > 2, "{} events", events.len());
    } else {
        let (status, v) = http::post(&url, &body);
        assert_eq!(status, 200, "{v}");
    }
}

fn transcribe(gw: &Gateway) {
    let tone: Vec<i16> = (0..16_000)
        .map(|i| ((i as f32 * 0.05).sin() * 3000.0) as i16)
        .collect();
    let r = http::Form::new()
        .text("model", WHISPER)
        .file("file", "tone.wav", &support::speech::wav(16_000, &tone))
        .post(&gw.url("/v1/audio/transcriptions"));
    assert_eq!(r.status, 200, "{}", r.text);
}

/// Queries reading these metrics have no data in this run, for the reason given. The
/// test insists they stay empty, so an entry goes once its reason does.
const NO_DATA: &[(&str, &str)] = &[];

#[test]
fn every_panel_query_and_rule_returns_data() {
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let gw = gateway(dir.path());
    let prom = Prometheus::start(&format!("127.0.0.1:{}", gw.port), &rule_files(), "1s");
    let deadline = |what: &str, f: &mut dyn FnMut() -> bool| {
        assert!(wait_until(Duration::from_secs(45), f), "timed out: {what}");
    };
    let has = |expr: &str| prom.query(expr).is_ok_and(|r| !r.is_empty());

    // Phase 1: both pools cold-start; the Whisper worker then idles out and exits.
    std::thread::scope(|s| {
        s.spawn(|| chat(&gw, false));
        s.spawn(|| transcribe(&gw));
    });
    deadline("the Whisper worker idles out", &mut || {
        let p = pool_view(&gw, WHISPER);
        p["ready"] == 0 && p["starting"] == 0
    });
    // Scraped after phase 1: counters that phase 2 moves show an increase.
    deadline("Prometheus sees the Whisper worker's exit", &mut || {
        has(&format!(
            "surge_worker_seconds_total{{model=\"{WHISPER}\"}}"
        ))
    });

    // Phase 2: overlapping streams and plain chats, a second Whisper cold start, and
    // refusals: an unknown model (404) and a body without messages (400).
    std::thread::scope(|s| {
        for _ in 0..3 {
            s.spawn(|| chat(&gw, true));
        }
        s.spawn(|| chat(&gw, false));
        s.spawn(|| chat(&gw, false));
        s.spawn(|| transcribe(&gw));
    });
    let (status, _) = http::post(
        &gw.url("/v1/chat/completions"),
        &json!({"model": "no-such-model", "messages": [{"role": "user", "content": "hi"}]}),
    );
    assert_eq!(status, 404);
    let (status, _) = http::post(&gw.url("/v1/chat/completions"), &json!({"model": LLM}));
    assert_eq!(status, 400);
    let load_done = started.elapsed();

    // Every query: status success, and data once Prometheus has scraped enough and the
    // rules have run (polled; an empty one is retried until the deadline).
    let mut queries = panel_queries(&dashboard());
    let rules = prom.rules();
    let recording: Vec<&Value> = rules.iter().filter(|r| r["type"] == "recording").collect();
    assert!(
        recording.len() >= 20,
        "{} recording rules loaded",
        recording.len()
    );
    for r in &recording {
        let what = format!("rule {}", r["name"].as_str().unwrap());
        queries.push((what, r["query"].as_str().unwrap().to_string()));
    }
    // An expected-empty query's reason, or None: it must have data.
    let no_data = |expr: &str| NO_DATA.iter().find(|(m, _)| expr.contains(m)).map(|e| e.1);
    let mut wrong: Vec<String> = Vec::new();
    let ok = wait_until(Duration::from_secs(45), || {
        wrong.clear();
        for (what, expr) in &queries {
            let result = prom
                .query(expr)
                .unwrap_or_else(|e| panic!("{what}: {expr}\nfails: {e}"));
            match (result.is_empty(), no_data(expr)) {
                (true, None) => wrong.push(format!("no data: {what}: {expr}")),
                (false, Some(why)) => wrong.push(format!(
                    "data, although NO_DATA says \"{why}\" (drop the entry): {what}: {expr}"
                )),
                _ => {}
            }
        }
        wrong.is_empty()
    });
    assert!(ok, "{} queries:\n{}", wrong.len(), wrong.join("\n"));

    // Every rule, alerts included, has been evaluated without an error.
    for r in prom.rules() {
        assert_eq!(r["health"], "ok", "{r}");
        assert_eq!(r["lastError"].as_str().unwrap_or(""), "", "{r}");
    }
    eprintln!(
        "{} queries checked; load done after {:.1} s, all after {:.1} s",
        queries.len(),
        load_done.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
}
