//! One OpenAI-style audio transcription request: `POST /v1/audio/transcriptions` with a
//! multipart/form-data body (`file`, `model`, `response_format`, …).

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;

/// What came back for one transcription.
#[derive(Debug, Clone)]
pub struct Transcription {
    /// The transcript (`text` of the JSON response, or the body for text formats).
    pub text: String,
    /// The parsed response for JSON formats (`json`, `verbose_json`), else `Null`.
    pub body: Value,
    /// Request sent → response read, seconds.
    pub elapsed: f64,
}

/// The MIME type clients send for an audio file, by extension.
pub fn audio_mime(path: &Path) -> &'static str {
    match path.extension().and_then(|e| e.to_str()).unwrap_or("") {
        "wav" => "audio/wav",
        "mp3" => "audio/mpeg",
        "flac" => "audio/flac",
        "ogg" | "oga" => "audio/ogg",
        "m4a" | "mp4" => "audio/mp4",
        "webm" => "audio/webm",
        _ => "application/octet-stream",
    }
}

/// A multipart/form-data body: text `fields`, then `file` as the `file` part.
/// Returns (Content-Type header value, body).
pub fn multipart(
    fields: &[(&str, &str)],
    file_name: &str,
    mime: &str,
    file: &[u8],
) -> (String, Vec<u8>) {
    let boundary = format!(
        "surge-loadtest-{:x}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0)
    );
    let mut body = Vec::with_capacity(file.len() + 512);
    for (name, value) in fields {
        body.extend_from_slice(
            format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n"
            )
            .as_bytes(),
        );
    }
    body.extend_from_slice(
        format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{file_name}\"\r\nContent-Type: {mime}\r\n\r\n"
        )
        .as_bytes(),
    );
    body.extend_from_slice(file);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

/// POSTs `audio` (already read; `file_name` gives the part's name and MIME type) to
/// `{base}/v1/audio/transcriptions` with the given extra fields (`model`,
/// `response_format`, …). A non-2xx answer is an error carrying the body.
pub fn transcribe_bytes(
    base: &str,
    file_name: &str,
    audio: &[u8],
    fields: &[(&str, &str)],
) -> Result<Transcription, String> {
    let (content_type, body) =
        multipart(fields, file_name, audio_mime(Path::new(file_name)), audio);
    let start = Instant::now();
    let resp = ureq::post(&format!("{base}/v1/audio/transcriptions"))
        .timeout(Duration::from_secs(600))
        .set("Content-Type", &content_type)
        .send_bytes(&body);
    let resp = match resp {
        Ok(r) => r,
        Err(ureq::Error::Status(code, r)) => {
            return Err(format!(
                "HTTP {code}: {}",
                r.into_string().unwrap_or_default()
            ))
        }
        Err(e) => return Err(e.to_string()),
    };
    let is_json = resp.content_type().contains("json");
    let raw = resp.into_string().map_err(|e| e.to_string())?;
    let elapsed = start.elapsed().as_secs_f64();
    let (text, body) = if is_json {
        let v: Value = serde_json::from_str(&raw).map_err(|e| format!("{e}: {raw}"))?;
        let text = v["text"]
            .as_str()
            .ok_or_else(|| format!("no \"text\" in {raw}"))?
            .to_string();
        (text, v)
    } else {
        (raw, Value::Null)
    };
    Ok(Transcription {
        text,
        body,
        elapsed,
    })
}

/// Reads `path` and transcribes it (see [`transcribe_bytes`]).
pub fn transcribe_file(
    base: &str,
    path: &Path,
    fields: &[(&str, &str)],
) -> Result<Transcription, String> {
    let audio = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("audio");
    transcribe_bytes(base, name, &audio, fields)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multipart_layout() {
        let (ct, body) = multipart(&[("model", "whisper-1")], "a.wav", "audio/wav", b"RIFF");
        let boundary = ct.strip_prefix("multipart/form-data; boundary=").unwrap();
        let s = String::from_utf8(body).unwrap();
        assert_eq!(
            s,
            format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\nwhisper-1\r\n\
                 --{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.wav\"\r\n\
                 Content-Type: audio/wav\r\n\r\nRIFF\r\n--{boundary}--\r\n"
            )
        );
        assert_eq!(audio_mime(Path::new("x/y.mp3")), "audio/mpeg");
        assert_eq!(audio_mime(Path::new("y.ogg")), "audio/ogg");
    }
}
