//! Renders a [`Transcript`] in each of OpenAI's `response_format`s — `json`, `text`,
//! `srt`, `vtt`, `verbose_json` — with the metering facts the gateway bills from.
//!
//! JSON bodies carry OpenAI's `usage` (`{"type": "duration", "seconds": N}`, whole seconds
//! rounded up as OpenAI bills) plus surge's `surge_execution`. Every response also carries
//! the facts as `x-surge-*` headers, the only place they fit for text, srt and vtt.

use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderName, HeaderValue};
use axum::response::{IntoResponse, Response};
use surge_protocol::openai::{
    Transcription, TranscriptionExecution, TranscriptionSegment, TranscriptionUsage,
    VerboseTranscription,
};

use crate::whisper::{Segment, Transcript, WhisperTask};

use super::languages;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ResponseFormat {
    #[default]
    Json,
    Text,
    Srt,
    Vtt,
    VerboseJson,
}

impl ResponseFormat {
    pub const ALL: [ResponseFormat; 5] = [
        ResponseFormat::Json,
        ResponseFormat::Text,
        ResponseFormat::Srt,
        ResponseFormat::Vtt,
        ResponseFormat::VerboseJson,
    ];

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|f| f.name() == s)
    }

    pub fn name(self) -> &'static str {
        match self {
            ResponseFormat::Json => "json",
            ResponseFormat::Text => "text",
            ResponseFormat::Srt => "srt",
            ResponseFormat::Vtt => "vtt",
            ResponseFormat::VerboseJson => "verbose_json",
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            ResponseFormat::Json | ResponseFormat::VerboseJson => "application/json",
            // What OpenAI sends for all three text formats.
            ResponseFormat::Text | ResponseFormat::Srt | ResponseFormat::Vtt => {
                "text/plain; charset=utf-8"
            }
        }
    }
}

/// What one transcription cost, for billing.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Metering {
    /// Submission to the engine → the engine started on it.
    pub queue_seconds: f64,
    /// The request's fair share of engine time.
    pub execution_seconds: f64,
    /// Length of the uploaded audio.
    pub audio_seconds: f64,
    /// Decoding and resampling the upload (CPU time outside the engine).
    pub decode_seconds: f64,
}

impl Metering {
    /// OpenAI's usage object for audio: duration in whole seconds, rounded up.
    pub fn usage(&self) -> TranscriptionUsage {
        TranscriptionUsage::duration(self.audio_seconds)
    }

    pub fn execution(&self) -> TranscriptionExecution {
        TranscriptionExecution {
            queue_seconds: self.queue_seconds,
            execution_seconds: self.execution_seconds,
            audio_seconds: self.audio_seconds,
            decode_seconds: self.decode_seconds,
        }
    }

    pub fn headers(&self) -> [(&'static str, String); 4] {
        [
            (
                "x-surge-queue-seconds",
                format!("{:.6}", self.queue_seconds),
            ),
            (
                "x-surge-execution-seconds",
                format!("{:.6}", self.execution_seconds),
            ),
            (
                "x-surge-audio-seconds",
                format!("{:.6}", self.audio_seconds),
            ),
            (
                "x-surge-decode-seconds",
                format!("{:.6}", self.decode_seconds),
            ),
        ]
    }
}

/// The response body in `format`.
pub fn body(format: ResponseFormat, t: &Transcript, m: &Metering) -> String {
    match format {
        ResponseFormat::Json => to_json(&Transcription {
            text: t.text.clone(),
            usage: Some(m.usage()),
            surge_execution: Some(m.execution()),
        }),
        ResponseFormat::VerboseJson => to_json(&VerboseTranscription {
            task: t.task.name().into(),
            language: reported_language(t).to_string(),
            duration: t.duration,
            text: t.text.clone(),
            segments: t.segments.iter().map(segment).collect(),
            usage: Some(m.usage()),
            surge_execution: Some(m.execution()),
        }),
        ResponseFormat::Text => format!("{}\n", t.text),
        ResponseFormat::Srt => srt(t),
        ResponseFormat::Vtt => vtt(t),
    }
}

/// The `language` of `verbose_json`: the spoken language's English name for a
/// transcription; for a translation, the output's (OpenAI documents it as always
/// `english`).
fn reported_language(t: &Transcript) -> &str {
    match t.task {
        WhisperTask::Transcribe => languages::name(&t.language),
        WhisperTask::Translate => "english",
    }
}

fn to_json(v: &impl serde::Serialize) -> String {
    // String keys and numbers only (non-finite floats become null): never fails.
    serde_json::to_string(v).expect("a transcription serialises")
}

/// A segment as OpenAI's verbose_json has it. The temperature is widened from f32 as
/// `json!` did, so the digits written stay the same.
fn segment(s: &Segment) -> TranscriptionSegment {
    TranscriptionSegment {
        id: s.id as u64,
        seek: s.seek as u64,
        start: s.start,
        end: s.end,
        text: s.text.clone(),
        tokens: s.tokens.clone(),
        temperature: s.temperature as f64,
        avg_logprob: s.avg_logprob,
        compression_ratio: s.compression_ratio,
        no_speech_prob: s.no_speech_prob,
    }
}

/// The full HTTP response: body, content type and the `x-surge-*` metering headers.
pub fn response(format: ResponseFormat, t: &Transcript, m: &Metering) -> Response {
    let mut resp = body(format, t, m).into_response();
    let h = resp.headers_mut();
    h.insert(
        CONTENT_TYPE,
        HeaderValue::from_static(format.content_type()),
    );
    for (name, value) in m.headers() {
        if let Ok(v) = HeaderValue::from_str(&value) {
            h.insert(HeaderName::from_static(name), v);
        }
    }
    resp
}

/// `HH:MM:SS<sep>mmm`, rounded to the millisecond; hours grow past 99 if they must.
pub fn timestamp(seconds: f64, sep: char) -> String {
    let ms = if seconds.is_finite() && seconds > 0.0 {
        (seconds * 1000.0).round() as u64
    } else {
        0
    };
    let (h, rest) = (ms / 3_600_000, ms % 3_600_000);
    let (m, rest) = (rest / 60_000, rest % 60_000);
    let (s, ms) = (rest / 1000, rest % 1000);
    format!("{h:02}:{m:02}:{s:02}{sep}{ms:03}")
}

/// Cue text on one line: a newline (or a blank line) would end the cue early, and `-->`
/// would read as a timing line.
fn cue_text(text: &str) -> String {
    text.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .replace("-->", "->")
}

/// SubRip: numbered cues from 1, `HH:MM:SS,mmm --> HH:MM:SS,mmm`, blank line after each.
pub fn srt(t: &Transcript) -> String {
    let mut out = String::new();
    for (i, s) in t.segments.iter().enumerate() {
        out.push_str(&format!(
            "{}\n{} --> {}\n{}\n\n",
            i + 1,
            timestamp(s.start, ','),
            timestamp(s.end, ','),
            cue_text(&s.text)
        ));
    }
    out
}

/// WebVTT: the `WEBVTT` header, then cues timed `HH:MM:SS.mmm --> HH:MM:SS.mmm`.
pub fn vtt(t: &Transcript) -> String {
    let mut out = String::from("WEBVTT\n\n");
    for s in &t.segments {
        out.push_str(&format!(
            "{} --> {}\n{}\n\n",
            timestamp(s.start, '.'),
            timestamp(s.end, '.'),
            cue_text(&s.text)
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};

    use super::*;

    fn segment(id: usize, start: f64, end: f64, text: &str) -> Segment {
        Segment {
            id,
            seek: (start * 100.0) as usize,
            start,
            end,
            text: text.into(),
            tokens: vec![50363, 383],
            temperature: 0.0,
            avg_logprob: -0.25,
            compression_ratio: 1.2,
            no_speech_prob: 0.01,
        }
    }

    fn transcript() -> Transcript {
        Transcript {
            text: "Hello there. General Kenobi.".into(),
            segments: vec![
                segment(0, 0.0, 2.5, " Hello there."),
                segment(1, 2.5, 3661.5, " General\nKenobi. -->"),
            ],
            duration: 3662.25,
            language: "en".into(),
            task: WhisperTask::Transcribe,
        }
    }

    fn metering() -> Metering {
        Metering {
            queue_seconds: 0.25,
            execution_seconds: 1.5,
            audio_seconds: 3662.25,
            decode_seconds: 0.01,
        }
    }

    #[test]
    fn timestamps() {
        assert_eq!(timestamp(3661.5, ','), "01:01:01,500");
        assert_eq!(timestamp(3661.5, '.'), "01:01:01.500");
        assert_eq!(timestamp(0.0, ','), "00:00:00,000");
        assert_eq!(timestamp(59.9996, ','), "00:01:00,000");
        assert_eq!(timestamp(0.0014, '.'), "00:00:00.001");
        assert_eq!(timestamp(-1.0, ','), "00:00:00,000");
        assert_eq!(timestamp(f64::NAN, ','), "00:00:00,000");
        assert_eq!(timestamp(360_000.25, ','), "100:00:00,250");
    }

    #[test]
    fn parses_every_format_name_and_nothing_else() {
        for f in ResponseFormat::ALL {
            assert_eq!(ResponseFormat::parse(f.name()), Some(f));
        }
        assert_eq!(ResponseFormat::parse("xml"), None);
        assert_eq!(ResponseFormat::parse("JSON"), None);
        assert_eq!(ResponseFormat::default(), ResponseFormat::Json);
    }

    #[test]
    fn json_has_text_usage_and_execution() {
        let v: Value =
            serde_json::from_str(&body(ResponseFormat::Json, &transcript(), &metering())).unwrap();
        assert_eq!(v["text"], "Hello there. General Kenobi.");
        assert_eq!(v["usage"], json!({"type": "duration", "seconds": 3663}));
        assert_eq!(v["surge_execution"]["queue_seconds"], 0.25);
        assert_eq!(v["surge_execution"]["execution_seconds"], 1.5);
        assert_eq!(v["surge_execution"]["audio_seconds"], 3662.25);
        assert_eq!(v.as_object().unwrap().len(), 3);
    }

    #[test]
    fn usage_rounds_up_to_whole_seconds() {
        let mut m = metering();
        m.audio_seconds = 2.0;
        assert_eq!(m.usage().seconds(), Some(2));
        m.audio_seconds = 2.01;
        assert_eq!(m.usage().seconds(), Some(3));
        m.audio_seconds = 0.2;
        assert_eq!(m.usage().seconds(), Some(1));
    }

    #[test]
    fn verbose_json_has_openai_shape() {
        let v: Value = serde_json::from_str(&body(
            ResponseFormat::VerboseJson,
            &transcript(),
            &metering(),
        ))
        .unwrap();
        assert_eq!(v["task"], "transcribe");
        assert_eq!(v["language"], "english");
        assert_eq!(v["duration"], 3662.25);
        // A translation reports the output's language, as OpenAI does; a transcription
        // the spoken one.
        let german = Transcript {
            language: "de".into(),
            ..transcript()
        };
        let translated = Transcript {
            task: WhisperTask::Translate,
            ..german.clone()
        };
        let verbose = |t: &Transcript| -> Value {
            serde_json::from_str(&body(ResponseFormat::VerboseJson, t, &metering())).unwrap()
        };
        assert_eq!(verbose(&german)["language"], "german");
        assert_eq!(verbose(&translated)["language"], "english");
        assert_eq!(verbose(&translated)["task"], "translate");
        assert_eq!(v["text"], "Hello there. General Kenobi.");
        assert_eq!(v["usage"]["type"], "duration");
        let segs = v["segments"].as_array().unwrap();
        assert_eq!(segs.len(), 2);
        let mut keys: Vec<&str> = segs[0]
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        keys.sort();
        assert_eq!(
            keys,
            [
                "avg_logprob",
                "compression_ratio",
                "end",
                "id",
                "no_speech_prob",
                "seek",
                "start",
                "temperature",
                "text",
                "tokens"
            ]
        );
        assert_eq!(segs[1]["id"], 1);
        assert_eq!(segs[1]["start"], 2.5);
        assert_eq!(segs[0]["tokens"], json!([50363, 383]));
    }

    /// The typed bodies are what the `json!` bodies before them were, f32 digits included.
    #[test]
    fn json_bodies_are_unchanged_from_the_json_macro() {
        let mut t = transcript();
        t.segments[1].temperature = 0.2;
        let m = metering();
        let usage = json!({"type": "duration", "seconds": 3663});
        let execution = json!({
            "queue_seconds": 0.25, "execution_seconds": 1.5,
            "audio_seconds": 3662.25, "decode_seconds": 0.01,
        });
        let before = json!({"text": t.text, "usage": usage, "surge_execution": execution});
        let now: Value = serde_json::from_str(&body(ResponseFormat::Json, &t, &m)).unwrap();
        assert_eq!(now, before);
        let before = json!({
            "task": "transcribe",
            "language": "english",
            "duration": t.duration,
            "text": t.text,
            "segments": t.segments,
            "usage": usage,
            "surge_execution": execution,
        });
        let now: Value = serde_json::from_str(&body(ResponseFormat::VerboseJson, &t, &m)).unwrap();
        assert_eq!(now, before);
    }

    #[test]
    fn text_srt_and_vtt() {
        let (t, m) = (transcript(), metering());
        assert_eq!(
            body(ResponseFormat::Text, &t, &m),
            "Hello there. General Kenobi.\n"
        );
        assert_eq!(
            body(ResponseFormat::Srt, &t, &m),
            "1\n00:00:00,000 --> 00:00:02,500\nHello there.\n\n\
             2\n00:00:02,500 --> 01:01:01,500\nGeneral Kenobi. ->\n\n"
        );
        assert_eq!(
            body(ResponseFormat::Vtt, &t, &m),
            "WEBVTT\n\n00:00:00.000 --> 00:00:02.500\nHello there.\n\n\
             00:00:02.500 --> 01:01:01.500\nGeneral Kenobi. ->\n\n"
        );
        let silent = Transcript {
            text: String::new(),
            segments: vec![],
            duration: 1.0,
            language: "en".into(),
            task: WhisperTask::Transcribe,
        };
        assert_eq!(body(ResponseFormat::Srt, &silent, &m), "");
        assert_eq!(body(ResponseFormat::Vtt, &silent, &m), "WEBVTT\n\n");
        assert_eq!(body(ResponseFormat::Text, &silent, &m), "\n");
    }

    #[test]
    fn responses_carry_content_type_and_metering_headers() {
        for f in ResponseFormat::ALL {
            let r = response(f, &transcript(), &metering());
            assert_eq!(r.status(), 200);
            let h = r.headers();
            assert_eq!(h[CONTENT_TYPE], f.content_type());
            assert_eq!(h["x-surge-queue-seconds"], "0.250000");
            assert_eq!(h["x-surge-execution-seconds"], "1.500000");
            assert_eq!(h["x-surge-audio-seconds"], "3662.250000");
            assert_eq!(h["x-surge-decode-seconds"], "0.010000");
        }
    }
}
