//! The Whisper worker end to end: a real `surge worker` process with whisper-tiny.en,
//! spoken to over HTTP with multipart uploads of espeak-ng speech. One worker is shared by
//! the tests (run with a 4 MiB body limit and a 90 s audio limit so the limit cases stay
//! small); the drain test starts its own.

mod support;

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::http::{get, post_bytes, Form, Reply};
use support::speech::{self, Clip};
use support::worker::{check_startup, kill, wait_exit, Worker, WHISPER};
use surge_loadtest::speech::{Corpus, PeerWer, FORMATS};
use surge_loadtest::wer::word_errors;

const FOX: &str = "The quick brown fox jumps over the lazy dog.";

fn worker() -> &'static Worker {
    static W: OnceLock<Worker> = OnceLock::new();
    W.get_or_init(|| {
        Worker::start(
            WHISPER,
            &["--max-body-bytes", "4194304", "--max-audio-seconds", "90"],
        )
    })
}

fn transcriptions() -> String {
    worker().url("/v1/audio/transcriptions")
}

/// The fox sentence as wav (16 kHz), flac, ogg/vorbis and, when sox can write it, mp3;
/// `None` (after a SKIP note) without espeak-ng and sox.
fn fox_clips() -> Option<&'static [Clip]> {
    static CLIPS: OnceLock<Option<Vec<Clip>>> = OnceLock::new();
    CLIPS
        .get_or_init(|| {
            if !speech::speech_tools() {
                eprintln!("SKIP: needs espeak-ng and sox (scripts/setup.sh)");
                return None;
            }
            let mut exts = vec!["wav", "flac", "ogg"];
            if speech::sox_writes("mp3") {
                exts.push("mp3");
            } else {
                eprintln!("SKIP mp3: sox has no mp3 handler (libsox-fmt-mp3)");
            }
            let dir = speech::scratch("whisper-worker-fox");
            Some(speech::speak(&dir, "fox", FOX, &exts))
        })
        .as_deref()
}

fn fox_wav() -> Option<&'static Clip> {
    fox_clips().map(|c| &c[0])
}

fn upload(clip: &Clip) -> Form {
    Form::new()
        .file("file", &clip.filename, &clip.bytes)
        .text("model", "whisper-1")
}

fn transcribe(form: Form) -> Reply {
    form.post(&transcriptions())
}

fn assert_ok(r: &Reply) {
    assert_eq!(r.status, 200, "{}", r.text);
}

/// `HH:MM:SS<sep>mmm` → seconds.
fn parse_timestamp(s: &str, sep: char) -> f64 {
    let (hms, ms) = s
        .split_once(sep)
        .unwrap_or_else(|| panic!("bad timestamp {s:?}"));
    let parts: Vec<u64> = hms
        .split(':')
        .map(|p| p.parse().unwrap_or_else(|_| panic!("bad timestamp {s:?}")))
        .collect();
    assert_eq!(parts.len(), 3, "bad timestamp {s:?}");
    assert_eq!(ms.len(), 3, "bad timestamp {s:?}");
    let ms: u64 = ms.parse().unwrap();
    (parts[0] * 3600 + parts[1] * 60 + parts[2]) as f64 + ms as f64 / 1000.0
}

/// Checks cue timing lines (`start --> end`), returning the cues' (start, end, text).
fn cues(blocks: &[&str], sep: char, numbered: bool) -> Vec<(f64, f64, String)> {
    blocks
        .iter()
        .enumerate()
        .map(|(i, block)| {
            let mut lines = block.lines();
            if numbered {
                assert_eq!(lines.next(), Some((i + 1).to_string().as_str()), "{block}");
            }
            let timing = lines.next().unwrap();
            let (a, b) = timing
                .split_once(" --> ")
                .unwrap_or_else(|| panic!("bad timing line {timing:?}"));
            let text: Vec<&str> = lines.collect();
            assert!(!text.is_empty(), "cue without text: {block:?}");
            (
                parse_timestamp(a, sep),
                parse_timestamp(b, sep),
                text.join(" "),
            )
        })
        .collect()
}

fn check_cue_times(cues: &[(f64, f64, String)], duration: f64) {
    assert!(!cues.is_empty());
    let mut last_end = 0.0;
    for (start, end, _) in cues {
        assert!(start <= end, "{cues:?}");
        assert!(*start >= last_end - 1e-9, "cues out of order: {cues:?}");
        assert!(*end <= duration + 0.05, "cue past the end: {cues:?}");
        last_end = *end;
    }
}

fn surge_header(r: &Reply, name: &str) -> f64 {
    r.header(name)
        .unwrap_or_else(|| panic!("no {name} header"))
        .parse()
        .unwrap_or_else(|_| panic!("{name} is not a number"))
}

#[test]
fn every_container_format_transcribes_the_sentence() {
    let Some(clips) = fox_clips() else { return };
    // Concurrently: the engine queues (or batches) them.
    let replies: Vec<Reply> = std::thread::scope(|s| {
        let handles: Vec<_> = clips
            .iter()
            .map(|c| s.spawn(move || transcribe(upload(c))))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (clip, r) in clips.iter().zip(replies) {
        assert_ok(&r);
        let body = r.json();
        let text = body["text"].as_str().unwrap();
        let overlap = speech::word_overlap(FOX, text);
        eprintln!("{}: {text:?} ({overlap:.2})", clip.filename);
        assert!(overlap >= 0.7, "{}: {text:?}", clip.filename);
        let audio = body["surge_execution"]["audio_seconds"].as_f64().unwrap();
        // mp3 carries encoder delay and padding that the decoder cannot trim.
        assert!(
            (audio - clip.seconds).abs() < 0.15,
            "{}: {audio} s decoded, {} s encoded",
            clip.filename,
            clip.seconds
        );
        assert_eq!(body["usage"]["type"], "duration");
        assert_eq!(body["usage"]["seconds"], audio.ceil() as u64);
    }
}

#[test]
fn every_response_format_has_its_shape() {
    let Some(clip) = fox_wav() else { return };
    let ask = |format: &str| transcribe(upload(clip).text("response_format", format));
    let [json, text, srt, vtt, verbose] = std::thread::scope(|s| {
        ["json", "text", "srt", "vtt", "verbose_json"]
            .map(|f| s.spawn(move || ask(f)))
            .map(|h| h.join().unwrap())
    });

    assert_ok(&json);
    assert!(json
        .header("content-type")
        .unwrap()
        .starts_with("application/json"));
    let j = json.json();
    let mut keys: Vec<&String> = j.as_object().unwrap().keys().collect();
    keys.sort();
    assert_eq!(keys, ["surge_execution", "text", "usage"], "{j}");
    let exec = &j["surge_execution"];
    assert!(exec["execution_seconds"].as_f64().unwrap() > 0.0, "{j}");
    assert!(exec["queue_seconds"].as_f64().unwrap() >= 0.0, "{j}");
    assert!((exec["audio_seconds"].as_f64().unwrap() - clip.seconds).abs() < 0.05);
    let reference = j["text"].as_str().unwrap().to_string();
    assert!(speech::word_overlap(FOX, &reference) >= 0.7, "{j}");

    for r in [&text, &srt, &vtt] {
        assert_ok(r);
        assert!(r.header("content-type").unwrap().starts_with("text/plain"));
        assert!(surge_header(r, "x-surge-execution-seconds") > 0.0);
        assert!(surge_header(r, "x-surge-queue-seconds") >= 0.0);
        assert!((surge_header(r, "x-surge-audio-seconds") - clip.seconds).abs() < 0.05);
    }
    // Greedy decoding is deterministic: every format carries the same words.
    assert_eq!(text.text, format!("{reference}\n"));

    let blocks: Vec<&str> = srt.text.split("\n\n").filter(|b| !b.is_empty()).collect();
    let srt_cues = cues(&blocks, ',', true);
    check_cue_times(&srt_cues, clip.seconds);
    let joined: Vec<String> = srt_cues.iter().map(|c| c.2.clone()).collect();
    assert!(
        speech::word_overlap(FOX, &joined.join(" ")) >= 0.7,
        "{}",
        srt.text
    );

    let body = vtt
        .text
        .strip_prefix("WEBVTT\n\n")
        .unwrap_or_else(|| panic!("no WEBVTT header: {:?}", vtt.text));
    let blocks: Vec<&str> = body.split("\n\n").filter(|b| !b.is_empty()).collect();
    let vtt_cues = cues(&blocks, '.', false);
    check_cue_times(&vtt_cues, clip.seconds);
    assert_eq!(srt_cues, vtt_cues);

    assert_ok(&verbose);
    let v = verbose.json();
    assert_eq!(v["task"], "transcribe", "{v}");
    assert_eq!(v["language"], "english", "{v}");
    assert_eq!(v["text"], reference.as_str(), "{v}");
    let duration = v["duration"].as_f64().unwrap();
    assert!(
        (duration - clip.seconds).abs() < 0.05,
        "{duration} vs {}",
        clip.seconds
    );
    assert_eq!(v["usage"]["seconds"], clip.seconds.ceil() as u64, "{v}");
    let segments = v["segments"].as_array().unwrap();
    assert!(!segments.is_empty(), "{v}");
    let mut last_end = 0.0;
    for (i, s) in segments.iter().enumerate() {
        assert_eq!(s["id"], i, "{v}");
        let (start, end) = (s["start"].as_f64().unwrap(), s["end"].as_f64().unwrap());
        assert!(start >= last_end - 1e-9 && start <= end, "{v}");
        assert!(end <= duration + 0.05, "{v}");
        last_end = end;
        assert!(s["seek"].is_u64() && s["tokens"].is_array(), "{v}");
        assert!(s["text"].is_string(), "{v}");
        for k in [
            "temperature",
            "avg_logprob",
            "compression_ratio",
            "no_speech_prob",
        ] {
            assert!(s[k].is_number(), "{k}: {v}");
        }
    }
}

/// Asserts an OpenAI error body with `status` and, when given, `param` and `code`.
fn assert_error(r: &Reply, what: &str, status: u16, param: Option<&str>, code: Option<&str>) {
    assert_eq!(r.status, status, "{what}: {}", r.text);
    let body: Value =
        serde_json::from_str(&r.text).unwrap_or_else(|_| panic!("{what}: not JSON: {:?}", r.text));
    let e = &body["error"];
    assert!(
        e["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{what}: {body}"
    );
    assert!(e["type"].is_string(), "{what}: {body}");
    if let Some(p) = param {
        assert_eq!(e["param"], p, "{what}: {body}");
    }
    if let Some(c) = code {
        assert_eq!(e["code"], c, "{what}: {body}");
    }
}

/// (what, request, status, param, code).
type Case<'a> = (&'a str, Form, u16, Option<&'a str>, Option<&'a str>);

#[test]
fn bad_input_gets_openai_errors_and_the_worker_keeps_serving() {
    let url = transcriptions();
    let second = speech::wav(16_000, &[0; 16_000]);
    let with = |name: &str, value: &str| {
        Form::new()
            .file("file", "clip.wav", &second)
            .text("model", "whisper-1")
            .text(name, value)
    };
    let noise = support::fake_sources::noise(20_000, 1);
    let long_silence = speech::wav(8_000, &vec![0; 8_000 * 91]);
    let cases: Vec<Case> = vec![
        (
            "not audio",
            Form::new()
                .file("file", "clip.wav", &noise)
                .text("model", "whisper-1"),
            400,
            Some("file"),
            None,
        ),
        (
            "wav cut inside its header",
            Form::new()
                .file("file", "clip.wav", &second[..30])
                .text("model", "whisper-1"),
            400,
            Some("file"),
            None,
        ),
        (
            "zero-length audio",
            Form::new()
                .file("file", "clip.wav", &speech::wav(16_000, &[]))
                .text("model", "whisper-1"),
            400,
            Some("file"),
            None,
        ),
        (
            "empty file",
            Form::new()
                .file("file", "clip.wav", b"")
                .text("model", "whisper-1"),
            400,
            Some("file"),
            None,
        ),
        (
            "missing file",
            Form::new().text("model", "whisper-1"),
            400,
            Some("file"),
            None,
        ),
        (
            "file sent as a text field",
            Form::new()
                .text("file", "clip.wav")
                .text("model", "whisper-1"),
            400,
            Some("file"),
            None,
        ),
        (
            "missing model",
            Form::new().file("file", "clip.wav", &second),
            400,
            Some("model"),
            None,
        ),
        (
            "unknown model",
            Form::new()
                .file("file", "clip.wav", &second)
                .text("model", "gpt-17-transcribe"),
            404,
            Some("model"),
            Some("model_not_found"),
        ),
        (
            "temperature not a number",
            with("temperature", "abc"),
            400,
            Some("temperature"),
            None,
        ),
        (
            "temperature out of range",
            with("temperature", "1.5"),
            400,
            Some("temperature"),
            None,
        ),
        (
            "unknown response_format",
            with("response_format", "xml"),
            400,
            Some("response_format"),
            None,
        ),
        (
            "German on an English-only model",
            with("language", "de"),
            400,
            Some("language"),
            None,
        ),
        (
            "word timestamps",
            with("timestamp_granularities[]", "word"),
            400,
            Some("timestamp_granularities"),
            None,
        ),
        (
            "audio over --max-audio-seconds",
            Form::new()
                .file("file", "long.wav", &long_silence)
                .text("model", "whisper-1"),
            400,
            Some("file"),
            None,
        ),
        (
            "body over --max-body-bytes",
            Form::new()
                .file("file", "big.wav", &vec![0u8; 5 << 20])
                .text("model", "whisper-1"),
            413,
            None,
            Some("payload_too_large"),
        ),
    ];
    for (what, form, status, param, code) in cases {
        assert_error(&form.post(&url), what, status, param, code);
    }

    let r = post_bytes(&url, "application/json", br#"{"file": "clip.wav"}"#);
    assert_error(&r, "JSON instead of multipart", 400, None, None);
    let r = post_bytes(
        &url,
        &Form::content_type(),
        b"this is not a multipart body at all",
    );
    assert_error(&r, "malformed multipart", 400, None, None);
    let r = Form::new()
        .file("file", "clip.wav", &second)
        .text("model", "whisper-1")
        .post(&worker().url("/v1/audio/translations"));
    assert_error(&r, "translation on tiny.en", 400, Some("model"), None);
    assert!(r.text.contains("English-only"), "{}", r.text);
    let (status, body) = get(&worker().url("/v1/nope"));
    assert_eq!(status, 404, "{body}");
    assert!(body.contains("\"not_found\""), "{body}");

    let (status, _) = get(&worker().url("/health"));
    assert_eq!(status, 200);
    let Some(clip) = fox_wav() else { return };
    // A wav whose data is cut short still holds audio: the part before the cut is used.
    let half = &clip.bytes[..clip.bytes.len() / 2];
    let r = transcribe(
        Form::new()
            .file("file", "half.wav", half)
            .text("model", "whisper-tiny.en"),
    );
    assert_ok(&r);
    let decoded = r.json()["surge_execution"]["audio_seconds"]
        .as_f64()
        .unwrap();
    assert!((decoded - clip.seconds / 2.0).abs() < 0.1, "{decoded}");
    let r = transcribe(upload(clip));
    assert_ok(&r);
    assert!(speech::word_overlap(FOX, r.json()["text"].as_str().unwrap()) >= 0.7);
}

#[test]
fn health_models_and_metrics() {
    let w = worker();
    let (status, body) = get(&w.url("/health"));
    assert_eq!(status, 200, "{body}");
    let h: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(h["status"], "ok");
    assert_eq!(h["kind"], "whisper");
    assert_eq!(h["model"], WHISPER);
    assert!(h["load_seconds"].as_f64().unwrap() > 0.0);
    check_startup(&h);

    let (status, body) = get(&w.url("/v1/models"));
    assert_eq!(status, 200, "{body}");
    let m: Value = serde_json::from_str(&body).unwrap();
    let ids: Vec<&str> = m["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["id"].as_str().unwrap())
        .collect();
    assert!(ids.contains(&WHISPER) && ids.contains(&"whisper-1"), "{m}");

    let Some(clip) = fox_wav() else { return };
    let ok = r#"endpoint="audio_transcriptions",status="200""#;
    let audio_before = w.metric("surge_worker_audio_seconds_total");
    let ok_before = w.labelled_metric("surge_worker_requests_total", ok);
    assert_ok(&transcribe(upload(clip)));
    let audio_after = w.metric("surge_worker_audio_seconds_total");
    assert!(
        audio_after >= audio_before + clip.seconds - 0.05,
        "{audio_before} → {audio_after}"
    );
    assert!(w.labelled_metric("surge_worker_requests_total", ok) >= ok_before + 1.0);
    let (_, text) = get(&w.url("/metrics"));
    for name in [
        "surge_worker_queue_wait_seconds_count",
        "surge_worker_request_duration_seconds_count",
        "surge_worker_running_sequences",
        "surge_worker_waiting_sequences",
        "surge_worker_startup_seconds{phase=\"weights\"}",
        "surge_worker_startup_seconds{phase=\"total\"}",
    ] {
        assert!(text.contains(name), "{name} missing from /metrics");
    }
}

#[test]
fn sigterm_lets_an_in_flight_transcription_finish_then_exits_zero() {
    if !speech::speech_tools() {
        eprintln!("SKIP: needs espeak-ng and sox (scripts/setup.sh)");
        return;
    }
    let text = "Surge is a self hosted inference gateway. It starts model workers when \
                requests arrive, batches the requests inside each worker, and scales back \
                to zero when the workers are idle. Every request is billed by the \
                execution time it used.";
    let dir = speech::scratch("whisper-worker-drain");
    let clip = speech::speak(&dir, "drain", text, &["wav"]).remove(0);
    let mut w = Worker::start(WHISPER, &[]);
    let url = w.url("/v1/audio/transcriptions");
    let reply = std::thread::scope(|s| {
        let request = s.spawn(|| upload(&clip).post(&url));
        let start = Instant::now();
        while w.metric("surge_worker_running_sequences") < 1.0 {
            assert!(
                !request.is_finished(),
                "the transcription finished before it was seen in flight"
            );
            assert!(start.elapsed() < Duration::from_secs(60), "never started");
            std::thread::sleep(Duration::from_millis(5));
        }
        kill(w.child.id(), "-TERM");
        request.join().unwrap()
    });
    assert_ok(&reply);
    let got = reply.json()["text"].as_str().unwrap().to_string();
    assert!(speech::word_overlap(text, &got) >= 0.5, "{got:?}");
    let code = wait_exit(
        &mut w.child,
        Duration::from_secs(30),
        "the worker did not exit after draining",
    );
    assert_eq!(code.code(), Some(0));
}

/// The speech corpus of `testdata/speech/` (8 sentences and a 64 s passage, espeak-ng
/// voices) in every format: word error rate over each format's clips no worse than
/// faster-whisper's greedy WER on the same files (recorded in
/// `testdata/speech/faster_whisper_wer.json`) plus 2 points; the passage comes back as
/// ordered segments covering it. Each format's clips go in together, so they share
/// the worker's batches.
#[test]
fn corpus_wer_is_within_two_points_of_faster_whisper() {
    if !speech::speech_tools() {
        eprintln!("SKIP: needs espeak-ng and sox (scripts/setup.sh)");
        return;
    }
    let corpus = Corpus::default_corpus().unwrap();
    let peer = PeerWer::default_record().unwrap();
    let dir = speech::scratch("whisper-wer");
    let mut texts: Vec<(String, &str)> = corpus
        .sentences
        .iter()
        .enumerate()
        .map(|(i, t)| (format!("sentence{}", i + 1), t.as_str()))
        .collect();
    texts.push(("passage".into(), corpus.passage.as_str()));
    for format in FORMATS {
        if !speech::sox_writes(format) {
            eprintln!("SKIP {format}: sox cannot write it");
            continue;
        }
        let clips: Vec<(String, &str, Clip)> = texts
            .iter()
            .map(|(stem, text)| {
                let clip = speech::speak(&dir, stem, text, &[format]).remove(0);
                (stem.clone(), *text, clip)
            })
            .collect();
        let replies: Vec<Reply> = std::thread::scope(|s| {
            let handles: Vec<_> = clips
                .iter()
                .map(|(_, _, clip)| {
                    s.spawn(move || {
                        transcribe(upload(clip).text("response_format", "verbose_json"))
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let (mut edits, mut words, mut peer_edits, mut peer_words) = (0, 0, 0, 0);
        for ((stem, text, clip), reply) in clips.iter().zip(&replies) {
            assert_ok(reply);
            let body: Value = serde_json::from_str(&reply.text).unwrap();
            let got = body["text"].as_str().unwrap();
            let (e, w) = word_errors(text, got);
            let p = peer.clip(stem, format).expect("peer figure for every clip");
            eprintln!(
                "{stem}.{format}: {e}/{w} errors (faster-whisper {}/{}): {got}",
                p.edits, p.ref_words
            );
            (edits, words) = (edits + e, words + w);
            (peer_edits, peer_words) = (peer_edits + p.edits, peer_words + p.ref_words);
            if stem == "passage" {
                check_segments_cover(&body, clip.seconds);
            }
        }
        let (ours, theirs) = (
            edits as f64 / words as f64,
            peer_edits as f64 / peer_words as f64,
        );
        eprintln!("{format}: WER {ours:.3} vs faster-whisper {theirs:.3}");
        assert!(
            ours <= theirs + 0.02,
            "{format}: WER {ours:.3} is worse than faster-whisper's {theirs:.3} + 0.02"
        );
    }
}

/// Segments are ordered, inside the clip, and cover it from start to end.
fn check_segments_cover(body: &Value, seconds: f64) {
    let segs = body["segments"].as_array().unwrap();
    assert!(segs.len() >= 5, "a 64 s passage in {} segments", segs.len());
    let mut prev_end = 0.0;
    for s in segs {
        let (start, end) = (s["start"].as_f64().unwrap(), s["end"].as_f64().unwrap());
        assert!(
            start >= prev_end - 1e-6 && end >= start && end <= seconds + 1e-6,
            "{s}"
        );
        assert!(
            start - prev_end < 3.0,
            "a gap of {:.1} s before {s}",
            start - prev_end
        );
        prev_end = end;
    }
    assert!(
        seconds - prev_end < 3.0,
        "segments end at {prev_end} of {seconds} s"
    );
}
