//! Server-sent events as the workers write them: finding event boundaries in a byte
//! stream, and recognising the usage chunk every worker ends a stream with.

use bytes::Bytes;
use serde_json::{json, Value};

/// An error body (the OpenAI error JSON, or anything else a worker wrote) as the last
/// events of a stream: `data: {error}` then `data: [DONE]`.
pub fn error_event(body: &[u8]) -> Bytes {
    let v = serde_json::from_slice::<Value>(body)
        .ok()
        .filter(|v| v.get("error").is_some())
        .unwrap_or_else(|| {
            json!({"error": {
                "message": String::from_utf8_lossy(body).trim(),
                "type": "server_error",
                "param": null,
                "code": null,
            }})
        });
    Bytes::from(format!("data: {v}\n\ndata: [DONE]\n\n"))
}

/// The length of the first complete SSE event in `buf` (through its blank line).
pub fn find_event_end(buf: &[u8]) -> Option<usize> {
    let lf = buf.windows(2).position(|w| w == b"\n\n").map(|i| i + 2);
    let crlf = buf.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4);
    match (lf, crlf) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// The JSON of an SSE event that is the worker's usage chunk (`choices` empty, `usage`
/// set), else `None`.
pub fn usage_event(event: &[u8]) -> Option<Value> {
    if !event.windows(7).any(|w| w == b"\"usage\"") {
        return None;
    }
    let text = std::str::from_utf8(event).ok()?;
    let mut data = String::new();
    for line in text.lines() {
        if let Some(d) = line.strip_prefix("data:") {
            data.push_str(d.strip_prefix(' ').unwrap_or(d));
        }
    }
    let v: Value = serde_json::from_str(&data).ok()?;
    let empty_choices = v
        .get("choices")
        .and_then(Value::as_array)
        .is_some_and(|c| c.is_empty());
    let has_usage = v.get("usage").is_some_and(|u| !u.is_null());
    (empty_choices && has_usage).then_some(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_chunk_is_recognised() {
        let usage = b"data: {\"id\":\"x\",\"choices\":[],\"usage\":{\"prompt_tokens\":3}}\n\n";
        assert!(usage_event(usage).is_some());
        let delta = b"data: {\"id\":\"x\",\"choices\":[{\"delta\":{\"content\":\"usage\"}}],\"usage\":null}\n\n";
        assert!(usage_event(delta).is_none());
        assert!(usage_event(b"data: [DONE]\n\n").is_none());
        assert_eq!(find_event_end(b"data: a\n\ndata: b"), Some(9));
        assert_eq!(find_event_end(b"data: a\n"), None);
    }

    #[test]
    fn errors_become_one_event_then_done() {
        let e = error_event(b"{\n  \"error\": {\"message\": \"bad\", \"type\": \"x\"}\n}");
        assert_eq!(
            &e[..],
            b"data: {\"error\":{\"message\":\"bad\",\"type\":\"x\"}}\n\ndata: [DONE]\n\n"
        );
        let e = String::from_utf8(error_event(b"oops\n").to_vec()).unwrap();
        assert!(
            e.starts_with("data: {\"error\":{\"code\":null,\"message\":\"oops\""),
            "{e}"
        );
    }
}
