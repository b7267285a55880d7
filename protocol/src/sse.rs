//! Server-sent events as surge streams them: `data: {json}` events, a final
//! `data: [DONE]`, `: comment` heartbeats, and an error as one `data: {"error":…}` event
//! followed by `[DONE]`.
//!
//! [`Decoder`] is the one reader of such streams: the gateway uses it to pass events
//! through one by one (it keeps each event's raw bytes), the load tester and the tests
//! to read the `data` payloads. Bytes may arrive in arbitrary pieces: a read may hold
//! half an event or several.

use bytes::Bytes;
use serde::Serialize;

use crate::error::ErrorBody;

/// The payload of the event that ends every stream.
pub const DONE: &str = "[DONE]";

/// `data: {payload}` + blank line.
pub fn data_event(payload: &str) -> Bytes {
    Bytes::from(format!("data: {payload}\n\n"))
}

/// A JSON value as one `data:` event.
pub fn json_event<T: Serialize>(v: &T) -> Bytes {
    data_event(&serde_json::to_string(v).expect("event payloads serialise"))
}

/// A comment line (ignored by clients; keeps idle connections open).
pub fn comment(text: &str) -> Bytes {
    Bytes::from(format!(": {text}\n\n"))
}

/// The end of a stream that failed: the error as an event, then `[DONE]`.
pub fn error_event(body: &ErrorBody) -> Bytes {
    Bytes::from(format!("data: {}\n\ndata: {DONE}\n\n", body.to_json()))
}

/// One complete event.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// The event's bytes as received, through its blank line (for pass-through).
    pub raw: Vec<u8>,
    /// Its `data:` lines joined with `\n`; `None` for comment-only events.
    pub data: Option<String>,
}

impl Event {
    pub fn is_done(&self) -> bool {
        self.data.as_deref() == Some(DONE)
    }
}

/// Splits a byte stream into [`Event`]s.
#[derive(Debug, Default)]
pub struct Decoder {
    /// Raw bytes of the event being read (complete lines).
    raw: Vec<u8>,
    /// The current, unterminated line.
    line: Vec<u8>,
    data: Option<String>,
}

impl Decoder {
    /// Feeds bytes; returns the events they complete.
    pub fn push(&mut self, bytes: &[u8]) -> Vec<Event> {
        let mut out = Vec::new();
        let mut rest = bytes;
        while let Some(i) = rest.iter().position(|&b| b == b'\n') {
            self.line.extend_from_slice(&rest[..=i]);
            rest = &rest[i + 1..];
            if let Some(e) = self.end_line() {
                out.push(e);
            }
        }
        self.line.extend_from_slice(rest);
        out
    }

    /// Takes a complete line from `self.line`; returns the event a blank line ends.
    fn end_line(&mut self) -> Option<Event> {
        let line = std::mem::take(&mut self.line);
        let text = line.strip_suffix(b"\n").unwrap_or(&line);
        let text = text.strip_suffix(b"\r").unwrap_or(text);
        let blank = text.is_empty();
        if let Some(d) = text.strip_prefix(b"data:") {
            let d = d.strip_prefix(b" ").unwrap_or(d);
            let d = String::from_utf8_lossy(d);
            match &mut self.data {
                Some(acc) => {
                    acc.push('\n');
                    acc.push_str(&d);
                }
                None => self.data = Some(d.into_owned()),
            }
        }
        // Comments (`:`), `event:`, `id:` and `retry:` lines carry nothing surge uses.
        self.raw.extend_from_slice(&line);
        if !blank {
            return None;
        }
        Some(Event {
            raw: std::mem::take(&mut self.raw),
            data: self.data.take(),
        })
    }

    /// Bytes received that do not complete an event yet.
    pub fn take_pending(&mut self) -> Vec<u8> {
        self.data = None;
        let mut raw = std::mem::take(&mut self.raw);
        raw.append(&mut self.line);
        raw
    }

    /// The event left open at the end of the body, if it has data.
    pub fn finish(&mut self) -> Option<Event> {
        if !self.line.is_empty() {
            self.line.push(b'\n');
            if let Some(e) = self.end_line() {
                return Some(e);
            }
        }
        let data = self.data.take()?;
        Some(Event {
            raw: self.take_pending(),
            data: Some(data),
        })
    }
}

/// The `data` payloads of a whole SSE body.
pub fn data_payloads(body: &[u8]) -> Vec<String> {
    let mut d = Decoder::default();
    let mut out: Vec<String> = d.push(body).into_iter().filter_map(|e| e.data).collect();
    out.extend(d.finish().and_then(|e| e.data));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_and_joined_events_decode_alike() {
        let body =
            "data: {\"a\":1}\n\n: keep-alive\r\n\r\ndata: x\r\ndata: y\r\n\r\ndata: [DONE]\n\n";
        let mut whole = Decoder::default();
        let events = whole.push(body.as_bytes());
        let data: Vec<_> = events.iter().map(|e| e.data.clone()).collect();
        assert_eq!(
            data,
            [
                Some("{\"a\":1}".into()),
                None,
                Some("x\ny".into()),
                Some("[DONE]".into())
            ]
        );
        assert!(events[3].is_done());
        // The raw bytes of all events are the body, byte for byte.
        let raw: Vec<u8> = events.iter().flat_map(|e| e.raw.clone()).collect();
        assert_eq!(raw, body.as_bytes());
        // Byte by byte gives the same events.
        let mut d = Decoder::default();
        let bytewise: Vec<Event> = body.bytes().flat_map(|b| d.push(&[b])).collect();
        assert_eq!(bytewise, events);
    }

    #[test]
    fn unterminated_tails() {
        let mut d = Decoder::default();
        assert!(d.push(b"data: tail").is_empty());
        assert_eq!(d.finish().and_then(|e| e.data).as_deref(), Some("tail"));
        assert_eq!(d.finish(), None);
        let mut d = Decoder::default();
        assert!(d.push(b"data: a\ndata: b").is_empty());
        assert_eq!(d.take_pending(), b"data: a\ndata: b");
        assert_eq!(data_payloads(b"data: 1\n\ndata: 2"), ["1", "2"]);
    }

    #[test]
    fn writing() {
        assert_eq!(&data_event("[DONE]")[..], b"data: [DONE]\n\n");
        assert_eq!(&comment("waiting")[..], b": waiting\n\n");
        let e = error_event(&ErrorBody::server_error("boom"));
        assert_eq!(
            data_payloads(&e),
            [
                r#"{"error":{"message":"boom","type":"server_error","param":null,"code":null}}"#,
                "[DONE]"
            ]
        );
        assert_eq!(
            &json_event(&serde_json::json!({"a": 1}))[..],
            b"data: {\"a\":1}\n\n"
        );
    }
}
