//! Multilingual Whisper end to end: a real `surge serve` routing to real `surge worker`s
//! (whisper-base, multilingual; whisper-tiny.en, English-only), with espeak-ng speech in
//! German, French, Spanish and English.
//!
//! The bar is faster-whisper on the same CTranslate2 weights: its transcripts, detected
//! languages and WER on the same clips are recorded in
//! `testdata/speech/multilingual/faster_whisper.json` by
//! `loadtest/peers/faster_whisper_multilingual.py` (see that file for the command), and
//! surge's WER must stay within the peer's + 0.03. Audio is synthesised at test time, as
//! the record's `audio` recipe says (espeak-ng and sox give the same bytes every run).

mod support;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension};
use serde_json::Value;
use support::gateway::{start_gateway, wait_until, Gateway};
use support::http::{Form, Reply};
use support::speech;
use support::worker::{ensure_model, LLM, WHISPER};

const BASE: &str = "whisper-base";
const LANGUAGES: [(&str, &str); 4] = [
    ("de", "german"),
    ("fr", "french"),
    ("es", "spanish"),
    ("en", "english"),
];
/// How much worse than faster-whisper surge's WER may be (the task's bar).
const WER_SLACK: f64 = 0.03;

fn corpus() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata/speech/multilingual")
}

/// The peer's record, per language code.
fn peer() -> &'static HashMap<String, Value> {
    static P: OnceLock<HashMap<String, Value>> = OnceLock::new();
    P.get_or_init(|| {
        let text = std::fs::read_to_string(corpus().join("faster_whisper.json")).unwrap();
        let v: Value = serde_json::from_str(&text).unwrap();
        serde_json::from_value(v["clips"].clone()).unwrap()
    })
}

struct Served {
    gw: Gateway,
    data: PathBuf,
}

/// One gateway for every test here, with its own ledger to read the usage records from.
fn served() -> &'static Served {
    static S: OnceLock<Served> = OnceLock::new();
    S.get_or_init(|| {
        ensure_model(BASE);
        let data = tempfile::tempdir().unwrap().keep();
        let gw = start_gateway(&["--data-dir", data.to_str().unwrap()]);
        Served { gw, data }
    })
}

/// Each language's clip as a 16 kHz mono wav, spoken in its own espeak-ng voice from the
/// corpus text (lines joined by spaces); `None` (after a SKIP note) without the tools.
fn clips() -> Option<&'static HashMap<&'static str, Vec<u8>>> {
    static C: OnceLock<Option<HashMap<&'static str, Vec<u8>>>> = OnceLock::new();
    C.get_or_init(|| {
        if !speech::speech_tools() {
            eprintln!("SKIP: needs espeak-ng and sox (scripts/setup.sh)");
            return None;
        }
        let dir = speech::scratch("whisper-multilingual");
        let mut out = HashMap::new();
        for (code, _) in LANGUAGES {
            let raw = dir.join(format!("{code}.raw.wav"));
            let wav = dir.join(format!("{code}.wav"));
            let ok = Command::new("espeak-ng")
                .args(["-v", code, "-w"])
                .arg(&raw)
                .arg(reference(code))
                .status()
                .is_ok_and(|s| s.success());
            assert!(ok, "espeak-ng -v {code} failed");
            let ok = Command::new("sox")
                .arg("-D")
                .arg(&raw)
                .args(["-r", "16000", "-c", "1"])
                .arg(&wav)
                .status()
                .is_ok_and(|s| s.success());
            assert!(ok, "sox failed");
            out.insert(code, std::fs::read(&wav).unwrap());
        }
        Some(out)
    })
    .as_ref()
}

/// What espeak-ng speaks for `code`: the corpus file's lines joined by spaces.
fn reference(code: &str) -> String {
    let text = std::fs::read_to_string(corpus().join(format!("{code}.txt"))).unwrap();
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Lowercase; every character that is not a letter or digit becomes a space (the peer
/// script's rule, which keeps "schön" and "días" whole).
fn words(text: &str) -> Vec<String> {
    text.to_lowercase()
        .chars()
        .map(|c| if c.is_alphanumeric() { c } else { ' ' })
        .collect::<String>()
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

/// Word-level Levenshtein distance and the reference's word count.
fn word_errors(reference: &str, hypothesis: &str) -> (usize, usize) {
    let (r, h) = (words(reference), words(hypothesis));
    let mut prev: Vec<usize> = (0..=h.len()).collect();
    for (i, rw) in r.iter().enumerate() {
        let mut cur = vec![i + 1; h.len() + 1];
        for (j, hw) in h.iter().enumerate() {
            cur[j + 1] = (prev[j + 1] + 1)
                .min(cur[j] + 1)
                .min(prev[j] + usize::from(rw != hw));
        }
        prev = cur;
    }
    (prev[h.len()], r.len())
}

fn post(path: &str, form: Form) -> Reply {
    form.post(&served().gw.url(path))
}

fn clip_form(code: &str, model: &str) -> Form {
    let clip = &clips().expect("clips")[code];
    Form::new()
        .file("file", &format!("{code}.wav"), clip)
        .text("model", model)
}

/// The verbose_json transcription of every language's clip, sent together, with
/// `language` given when `forced`.
fn transcribe_all(forced: bool) -> Vec<(&'static str, &'static str, Value)> {
    std::thread::scope(|s| {
        let handles: Vec<_> = LANGUAGES
            .iter()
            .map(|&(code, name)| {
                s.spawn(move || {
                    let mut form = clip_form(code, BASE).text("response_format", "verbose_json");
                    if forced {
                        form = form.text("language", code);
                    }
                    let r = post("/v1/audio/transcriptions", form);
                    assert_eq!(r.status, 200, "{code}: {}", r.text);
                    (code, name, r.json())
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

/// Checks each transcript against the peer's WER (its detected-language run, or its
/// `forced` one when the language was given); prints the comparison.
fn check_wer(results: &[(&str, &str, Value)], forced: bool) {
    let mut failures = Vec::new();
    for (code, _, body) in results {
        let text = body["text"].as_str().unwrap();
        let (edits, n) = word_errors(&reference(code), text);
        let ours = edits as f64 / n as f64;
        let p = &peer()[*code];
        let theirs = if forced { &p["forced"] } else { p };
        let bar = theirs["wer"].as_f64().unwrap() + WER_SLACK;
        eprintln!(
            "{code} ({}): surge WER {ours:.3} ({edits}/{n}), faster-whisper {:.3}: {text:?}",
            if forced { "given" } else { "detected" },
            theirs["wer"]
        );
        if ours > bar + 1e-9 {
            failures.push(format!("{code}: WER {ours:.3} > {bar:.3}: {text:?}"));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

#[test]
fn the_language_is_detected_and_transcribed_within_the_peer_wer() {
    if clips().is_none() {
        return;
    }
    let results = transcribe_all(false);
    for (code, name, body) in &results {
        assert_eq!(body["task"], "transcribe", "{body}");
        assert_eq!(body["language"], *name, "{code}: {body}");
        assert_eq!(peer()[*code]["detected"], *code, "the peer disagrees");
    }
    check_wer(&results, false);
}

#[test]
fn a_given_language_is_transcribed_within_the_peer_wer() {
    if clips().is_none() {
        return;
    }
    let results = transcribe_all(true);
    for (code, name, body) in &results {
        assert_eq!(body["language"], *name, "{code}: {body}");
    }
    check_wer(&results, true);
}

/// The ledger's record of `request_id` once written (route, status, audio seconds).
fn record(request_id: &str) -> Value {
    let db = served().data.join("ledger.db");
    let mut row = None;
    let found = wait_until(Duration::from_secs(10), || {
        row = Connection::open(&db).ok().and_then(|c| {
            c.query_row(
                "SELECT json_object('route', route, 'status', status,
                    'audio_seconds', audio_seconds, 'execution_seconds', execution_seconds)
                 FROM usage WHERE request_id = ?1",
                [request_id],
                |r| r.get::<_, String>(0),
            )
            .optional()
            .ok()
            .flatten()
        });
        row.is_some()
    });
    assert!(found, "no usage record for {request_id}");
    serde_json::from_str(&row.unwrap()).unwrap()
}

/// Translations come back in English (words of the German and Spanish sentences, in
/// English), report OpenAI's `task`/`language`, and are billed like transcriptions.
#[test]
fn translations_are_english_and_billed_by_audio() {
    if clips().is_none() {
        return;
    }
    let cases = [
        ("de", &["good", "morning", "coffee", "milk"][..]),
        ("es", &["good", "morning", "beach", "family", "kitchen"][..]),
    ];
    for (code, expected) in cases {
        let r = post(
            "/v1/audio/translations",
            clip_form(code, BASE).text("response_format", "verbose_json"),
        );
        assert_eq!(r.status, 200, "{code}: {}", r.text);
        let body = r.json();
        assert_eq!(body["task"], "translate", "{body}");
        assert_eq!(body["language"], "english", "{body}");
        let text = body["text"].as_str().unwrap();
        let got = words(text);
        eprintln!(
            "{code} translated: {text:?} (faster-whisper: {:?})",
            peer()[code]["translation"]
        );
        let hits: Vec<&&str> = expected
            .iter()
            .filter(|w| got.iter().any(|g| g == *w))
            .collect();
        assert!(
            hits.len() >= 3,
            "{code}: only {hits:?} of {expected:?} in {text:?}"
        );
        // English, not the spoken language: its reference words barely appear.
        let spoken = words(&reference(code));
        let kept = got.iter().filter(|w| spoken.contains(w)).count();
        assert!(
            kept * 4 < got.len(),
            "{code}: {kept} of {} words are the source's: {text:?}",
            got.len()
        );
        let audio = body["duration"].as_f64().unwrap();
        assert_eq!(body["usage"]["seconds"], audio.ceil() as u64, "{body}");
        let id = r.header("x-request-id").expect("x-request-id");
        let rec = record(id);
        assert_eq!(rec["route"], "audio_translations", "{rec}");
        assert_eq!(rec["status"], 200, "{rec}");
        let billed = rec["audio_seconds"].as_f64().unwrap();
        assert!((billed - audio).abs() < 0.01, "{rec} vs {audio}");
        assert!(rec["execution_seconds"].as_f64().unwrap() > 0.0, "{rec}");
    }
}

fn assert_400(r: &Reply, param: &str, needle: &str) {
    assert_eq!(r.status, 400, "{}", r.text);
    let e = &r.json()["error"];
    assert_eq!(e["type"], "invalid_request_error", "{}", r.text);
    assert_eq!(e["param"], param, "{}", r.text);
    let msg = e["message"].as_str().unwrap();
    assert!(msg.contains(needle), "{msg:?} lacks {needle:?}");
}

/// English-only models refuse other languages and translation; a multilingual model
/// refuses a language its vocabulary lacks; the translations route checks the model's
/// kind like the transcriptions route.
#[test]
fn what_a_model_cannot_do_is_a_400_naming_the_parameter() {
    if clips().is_none() {
        return;
    }
    let r = post(
        "/v1/audio/transcriptions",
        clip_form("de", WHISPER).text("language", "de"),
    );
    assert_400(&r, "language", "English-only");
    let r = post("/v1/audio/translations", clip_form("de", WHISPER));
    assert_400(&r, "model", "English-only");
    // Cantonese arrived with large-v3's vocabulary; whisper-base has no token for it.
    let r = post(
        "/v1/audio/transcriptions",
        clip_form("de", BASE).text("language", "yue"),
    );
    assert_400(&r, "language", "does not know");
    let r = post(
        "/v1/audio/translations",
        clip_form("de", BASE).text("language", "klingon"),
    );
    assert_400(&r, "language", "Unknown language");
    let r = post("/v1/audio/translations", clip_form("de", "no-such-whisper"));
    assert_eq!(r.status, 404, "{}", r.text);
    let r = post("/v1/audio/translations", clip_form("de", LLM));
    assert_eq!(r.status, 400, "{}", r.text);
}
