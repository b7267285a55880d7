//! The request of `POST /v1/audio/transcriptions` and `/v1/audio/translations`: OpenAI's
//! multipart/form-data fields, parsed from the already-read body and checked one by one,
//! so every mistake is a 400 that names its `param`.
//!
//! Fields: `file` (required, an uploaded file; its filename is a format hint), `model`
//! (required), `language`, `prompt`, `response_format`, `temperature`,
//! `timestamp_granularities[]`. Other fields (`stream`, `include[]`, …) are ignored.
//! OpenAI's translations take no `language`; here it is honoured as the spoken language
//! (instead of detecting it) rather than dropped.

use axum::body::Bytes;

use surge_protocol::multipart;

use crate::server::ApiError;

use crate::whisper::WhisperTask;

use super::format::ResponseFormat;
use super::languages;

/// A parsed, field-checked transcription request.
#[derive(Debug, Clone)]
pub struct TranscriptionRequest {
    /// The uploaded audio, not yet decoded.
    pub file: Bytes,
    pub filename: Option<String>,
    pub model: String,
    /// ISO code of a language Whisper knows (`en`), from a code or an English name.
    pub language: Option<&'static str>,
    pub prompt: Option<String>,
    pub response_format: ResponseFormat,
    pub temperature: Option<f32>,
    /// Which endpoint it came to: transcribe, or translate into English.
    pub task: WhisperTask,
}

fn invalid(message: impl Into<String>, param: &'static str) -> ApiError {
    ApiError::invalid(message, param)
}

/// Parses the body of a transcription (or, with `task` Translate, translation) request.
/// `content_type` is the request's `Content-Type` header, which carries the multipart
/// boundary.
pub async fn parse(
    content_type: Option<&str>,
    body: Vec<u8>,
    task: WhisperTask,
) -> Result<TranscriptionRequest, ApiError> {
    let parts = multipart::read_form(content_type, Bytes::from(body)).await?;
    let mut file: Option<(Bytes, Option<String>)> = None;
    let mut model = None;
    let mut language = None;
    let mut prompt = None;
    let mut response_format = None;
    let mut temperature = None;
    for part in parts {
        match part.name.as_str() {
            "file" => {
                if file.is_some() {
                    return Err(invalid("Send exactly one 'file' field", "file"));
                }
                if !part.is_file() {
                    return Err(invalid(
                        "'file' must be an uploaded file (a multipart part with a filename), \
                         not a text field; with curl, use -F file=@path",
                        "file",
                    ));
                }
                if part.data.is_empty() {
                    return Err(invalid("The uploaded file is empty", "file"));
                }
                file = Some((part.data, part.file_name));
            }
            "model" => model = Some(part.text("model")?),
            "language" => language = Some(part.text("language")?),
            "prompt" => prompt = Some(part.text("prompt")?),
            "response_format" => response_format = Some(part.text("response_format")?),
            "temperature" => temperature = Some(part.text("temperature")?),
            "timestamp_granularities[]" | "timestamp_granularities" => {
                granularity(&part.text("timestamp_granularities")?)?;
            }
            // Fields we do not use (stream, include[], chunking_strategy, user, …).
            _ => {}
        }
    }

    let (file, filename) = file.ok_or_else(|| {
        invalid(
            "Missing the 'file' field: upload the audio as multipart/form-data field 'file'",
            "file",
        )
    })?;
    let model = model
        .map(|m| m.trim().to_string())
        .filter(|m| !m.is_empty())
        .ok_or_else(|| invalid("You must provide a model parameter", "model"))?;
    let language = match language.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(l) => Some(languages::code(l).ok_or_else(|| {
            invalid(
                format!(
                    "Unknown language '{l}': use an ISO 639-1 code such as 'en' (or the \
                     language's English name)"
                ),
                "language",
            )
        })?),
    };
    let response_format = match response_format.as_deref().map(str::trim) {
        None | Some("") => ResponseFormat::default(),
        Some(f) => ResponseFormat::parse(f).ok_or_else(|| {
            invalid(
                format!(
                    "Invalid response_format '{f}': expected one of json, text, srt, vtt, \
                     verbose_json"
                ),
                "response_format",
            )
        })?,
    };
    let temperature = match temperature.as_deref().map(str::trim) {
        None => None,
        Some(t) => match t.parse::<f32>() {
            Ok(v) if (0.0..=1.0).contains(&v) => Some(v),
            _ => {
                return Err(invalid(
                    format!("Invalid temperature '{t}': expected a number from 0 to 1"),
                    "temperature",
                ))
            }
        },
    };
    Ok(TranscriptionRequest {
        file,
        filename,
        model,
        language,
        prompt: prompt.filter(|p| !p.trim().is_empty()),
        response_format,
        temperature,
        task,
    })
}

/// Only segment timestamps exist: word timestamps need cross-attention alignment, which
/// this worker does not do.
fn granularity(value: &str) -> Result<(), ApiError> {
    match value.trim() {
        "segment" => Ok(()),
        "word" => Err(invalid(
            "Word-level timestamps are not supported by this worker; use \
             timestamp_granularities[]=segment (or leave it out)",
            "timestamp_granularities",
        )),
        other => Err(invalid(
            format!("Invalid timestamp granularity '{other}': expected 'segment' or 'word'"),
            "timestamp_granularities",
        )),
    }
}

/// Refuses a language the model cannot hear. `known` is the model's languages (`en`
/// alone for an English-only model; 99 or 100 codes for a multilingual one).
pub fn check_language(language: Option<&str>, known: &[&str], model: &str) -> Result<(), ApiError> {
    let english_only = known == ["en"];
    match language {
        None => Ok(()),
        Some(code) if known.contains(&code) => Ok(()),
        Some(code) if english_only => Err(invalid(
            format!(
                "The model {model} is English-only and cannot transcribe language '{code}' \
                 ({}); send English audio, or leave 'language' out",
                languages::name(code)
            ),
            "language",
        )),
        Some(code) => Err(invalid(
            format!(
                "The model {model} does not know language '{code}' ({}); leave 'language' \
                 out to detect it",
                languages::name(code)
            ),
            "language",
        )),
    }
}

/// Refuses a translation on an English-only model: it has no `<|translate|>` token (and
/// its English transcript is already English; the transcriptions endpoint serves that).
pub fn check_task(task: WhisperTask, multilingual: bool, model: &str) -> Result<(), ApiError> {
    if task == WhisperTask::Translate && !multilingual {
        return Err(invalid(
            format!(
                "The model {model} is English-only and cannot translate; use a multilingual \
                 Whisper model (e.g. whisper-base), or /v1/audio/transcriptions for English \
                 audio"
            ),
            "model",
        ));
    }
    Ok(())
}

/// A seed for sampled decoding that depends only on the request, so retrying the same
/// request gives the same text (FNV-1a over the audio, the prompt and the temperature).
pub fn seed(req: &TranscriptionRequest) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |bytes: &[u8]| {
        for &b in bytes {
            h ^= b as u64;
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    };
    eat(&req.file);
    eat(req.prompt.as_deref().unwrap_or("").as_bytes());
    eat(&req.temperature.unwrap_or(-1.0).to_le_bytes());
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    const BOUNDARY: &str = "XyZ123boundary";

    enum Part<'a> {
        Text(&'a str, &'a str),
        File(&'a str, Option<&'a str>, &'a [u8]),
    }

    fn form(parts: &[Part]) -> Vec<u8> {
        let mut out = Vec::new();
        for p in parts {
            out.extend_from_slice(format!("--{BOUNDARY}\r\n").as_bytes());
            match p {
                Part::Text(name, value) => {
                    out.extend_from_slice(
                        format!("Content-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}")
                            .as_bytes(),
                    );
                }
                Part::File(name, filename, data) => {
                    let fname = filename
                        .map(|f| format!("; filename=\"{f}\""))
                        .unwrap_or_default();
                    out.extend_from_slice(
                        format!(
                            "Content-Disposition: form-data; name=\"{name}\"{fname}\r\n\
                             Content-Type: application/octet-stream\r\n\r\n"
                        )
                        .as_bytes(),
                    );
                    out.extend_from_slice(data);
                }
            }
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(format!("--{BOUNDARY}--\r\n").as_bytes());
        out
    }

    fn ct() -> String {
        format!("multipart/form-data; boundary={BOUNDARY}")
    }

    async fn parse_parts(parts: &[Part<'_>]) -> Result<TranscriptionRequest, ApiError> {
        parse(Some(&ct()), form(parts), WhisperTask::Transcribe).await
    }

    async fn error(parts: &[Part<'_>]) -> (String, Option<String>) {
        let e = parse_parts(parts).await.unwrap_err();
        assert_eq!(e.status(), 400, "{e}");
        let b = e.body();
        assert_eq!(b["error"]["type"], "invalid_request_error");
        (
            b["error"]["message"].as_str().unwrap().to_string(),
            b["error"]["param"].as_str().map(str::to_string),
        )
    }

    const AUDIO: &[u8] = b"RIFF....WAVEfmt ";

    #[tokio::test]
    async fn parses_every_field() {
        let r = parse_parts(&[
            Part::Text("model", "whisper-1"),
            Part::File("file", Some("clip.MP3"), AUDIO),
            Part::Text("language", "English"),
            Part::Text("prompt", "Fox, dog."),
            Part::Text("response_format", "verbose_json"),
            Part::Text("temperature", " 0.4 "),
            Part::Text("timestamp_granularities[]", "segment"),
            Part::Text("stream", "false"),
            Part::File("unknown_upload", Some("x.bin"), b"zz"),
        ])
        .await
        .unwrap();
        assert_eq!(&r.file[..], AUDIO);
        assert_eq!(r.filename.as_deref(), Some("clip.MP3"));
        assert_eq!(r.model, "whisper-1");
        assert_eq!(r.language, Some("en"));
        assert_eq!(r.prompt.as_deref(), Some("Fox, dog."));
        assert_eq!(r.response_format, ResponseFormat::VerboseJson);
        assert_eq!(r.temperature, Some(0.4));
    }

    #[tokio::test]
    async fn defaults() {
        let r = parse_parts(&[
            Part::File("file", Some("a.wav"), AUDIO),
            Part::Text("model", "whisper-tiny.en"),
            Part::Text("prompt", "  "),
            Part::Text("language", ""),
        ])
        .await
        .unwrap();
        assert_eq!(r.response_format, ResponseFormat::Json);
        assert_eq!(r.temperature, None);
        assert_eq!(r.language, None);
        assert_eq!(r.prompt, None);
    }

    #[tokio::test]
    async fn bad_fields_name_their_param() {
        let cases: Vec<(Vec<Part>, &str, &str)> = vec![
            (vec![Part::Text("model", "whisper-1")], "file", "Missing"),
            (
                vec![Part::Text("file", "clip.wav"), Part::Text("model", "m")],
                "file",
                "-F file=@path",
            ),
            (
                vec![
                    Part::File("file", Some("a.wav"), b""),
                    Part::Text("model", "m"),
                ],
                "file",
                "empty",
            ),
            (
                vec![
                    Part::File("file", Some("a.wav"), AUDIO),
                    Part::File("file", Some("b.wav"), AUDIO),
                    Part::Text("model", "m"),
                ],
                "file",
                "exactly one",
            ),
            (
                vec![Part::File("file", Some("a.wav"), AUDIO)],
                "model",
                "model",
            ),
            (
                vec![
                    Part::File("file", Some("a.wav"), AUDIO),
                    Part::Text("model", " "),
                ],
                "model",
                "model",
            ),
            (
                vec![
                    Part::File("file", Some("a.wav"), AUDIO),
                    Part::File("model", Some("m.txt"), b"whisper-1"),
                ],
                "model",
                "text field",
            ),
        ];
        for (parts, param, needle) in cases {
            let (msg, p) = error(&parts).await;
            assert_eq!(p.as_deref(), Some(param), "{msg}");
            assert!(msg.contains(needle), "{msg} lacks {needle}");
        }
        let with = |name: &'static str, value: &'static str| {
            vec![
                Part::File("file", Some("a.wav"), AUDIO),
                Part::Text("model", "whisper-1"),
                Part::Text(name, value),
            ]
        };
        for (name, value, param) in [
            ("temperature", "abc", "temperature"),
            ("temperature", "1.5", "temperature"),
            ("temperature", "-0.1", "temperature"),
            ("temperature", "NaN", "temperature"),
            ("temperature", "", "temperature"),
            ("response_format", "xml", "response_format"),
            ("response_format", "JSON", "response_format"),
            ("language", "klingon", "language"),
            (
                "timestamp_granularities[]",
                "word",
                "timestamp_granularities",
            ),
            (
                "timestamp_granularities[]",
                "char",
                "timestamp_granularities",
            ),
            ("timestamp_granularities", "word", "timestamp_granularities"),
        ] {
            let (msg, p) = error(&with(name, value)).await;
            assert_eq!(p.as_deref(), Some(param), "{name}={value}: {msg}");
        }
        let (msg, _) = error(&with("timestamp_granularities[]", "word")).await;
        assert!(msg.contains("not supported"), "{msg}");
    }

    #[tokio::test]
    async fn non_utf8_text_is_refused() {
        let mut body = Vec::new();
        body.extend_from_slice(
            format!("--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"prompt\"\r\n\r\n")
                .as_bytes(),
        );
        body.extend_from_slice(&[0xff, 0xfe, 0x00]);
        body.extend_from_slice(format!("\r\n--{BOUNDARY}--\r\n").as_bytes());
        let e = parse(Some(&ct()), body, WhisperTask::Transcribe)
            .await
            .unwrap_err();
        assert_eq!(e.body()["error"]["param"], "prompt");
    }

    #[tokio::test]
    async fn wrong_content_type_or_malformed_body() {
        const T: WhisperTask = WhisperTask::Transcribe;
        let body = form(&[Part::File("file", Some("a.wav"), AUDIO)]);
        for ct in [
            None,
            Some("application/json"),
            Some("application/x-www-form-urlencoded"),
        ] {
            let e = parse(ct, body.clone(), T).await.unwrap_err();
            assert_eq!(e.status(), 400);
            assert!(e.to_string().contains("multipart/form-data"), "{e}");
        }
        let e = parse(Some("multipart/form-data"), body.clone(), T)
            .await
            .unwrap_err();
        assert!(e.to_string().contains("boundary"), "{e}");
        // Upper-case media type with extra parameters is still multipart.
        let ok = format!("Multipart/Form-Data; charset=utf-8; boundary={BOUNDARY}");
        let mut b = form(&[
            Part::File("file", Some("a.wav"), AUDIO),
            Part::Text("model", "m"),
        ]);
        assert!(parse(Some(&ok), b.clone(), T).await.is_ok());
        // Cut before the closing boundary.
        b.truncate(b.len() - 10);
        let e = parse(Some(&ct()), b, T).await.unwrap_err();
        assert_eq!(e.status(), 400);
        assert!(e.to_string().contains("multipart"), "{e}");
        // Not multipart at all.
        let e = parse(Some(&ct()), b"{\"file\": 1}".to_vec(), T)
            .await
            .unwrap_err();
        assert_eq!(e.status(), 400);
    }

    #[test]
    fn language_checks() {
        let en = ["en"];
        assert!(check_language(None, &en, "m.en").is_ok());
        assert!(check_language(Some("en"), &en, "m.en").is_ok());
        let e = check_language(Some("de"), &en, "whisper-tiny.en").unwrap_err();
        assert_eq!(e.body()["error"]["param"], "language");
        assert!(e.to_string().contains("English-only"), "{e}");
        assert!(e.to_string().contains("german"), "{e}");
        let many = ["en", "de", "fr"];
        assert!(check_language(None, &many, "m").is_ok());
        assert!(check_language(Some("en"), &many, "m").is_ok());
        assert!(check_language(Some("fr"), &many, "m").is_ok());
        let e = check_language(Some("yue"), &many, "whisper-base").unwrap_err();
        assert_eq!(e.body()["error"]["param"], "language");
        assert!(e.to_string().contains("cantonese"), "{e}");
    }

    #[test]
    fn translation_needs_a_multilingual_model() {
        assert!(check_task(WhisperTask::Transcribe, false, "m.en").is_ok());
        assert!(check_task(WhisperTask::Translate, true, "m").is_ok());
        let e = check_task(WhisperTask::Translate, false, "whisper-tiny.en").unwrap_err();
        assert_eq!(e.status(), 400);
        assert_eq!(e.body()["error"]["param"], "model");
        assert!(e.to_string().contains("English-only"), "{e}");
    }

    #[tokio::test]
    async fn translations_parse_the_same_fields() {
        let r = parse(
            Some(&ct()),
            form(&[
                Part::File("file", Some("a.wav"), AUDIO),
                Part::Text("model", "whisper-base"),
                Part::Text("language", "de"),
            ]),
            WhisperTask::Translate,
        )
        .await
        .unwrap();
        assert_eq!(r.task, WhisperTask::Translate);
        assert_eq!(r.language, Some("de"));
    }

    #[test]
    fn seed_depends_only_on_the_request() {
        let req = |file: &'static [u8], prompt: Option<&str>| TranscriptionRequest {
            file: Bytes::from_static(file),
            filename: None,
            model: "m".into(),
            language: None,
            prompt: prompt.map(str::to_string),
            response_format: ResponseFormat::Json,
            temperature: Some(0.5),
            task: WhisperTask::Transcribe,
        };
        assert_eq!(seed(&req(b"abc", None)), seed(&req(b"abc", None)));
        assert_ne!(seed(&req(b"abc", None)), seed(&req(b"abd", None)));
        assert_ne!(seed(&req(b"abc", None)), seed(&req(b"abc", Some("x"))));
    }
}
