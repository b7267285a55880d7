//! Server-sent events as the workers write them: finding event boundaries in a byte
//! stream, and recognising the usage chunk every worker ends a stream with.

use serde_json::Value;

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
}
