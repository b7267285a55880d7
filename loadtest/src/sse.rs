//! Server-sent events of OpenAI streams: an incremental decoder for async clients, the
//! interpretation of one chunk (content, usage, error), and a blocking client that times
//! one streamed chat completion token by token (the benches). Both clients read chunks
//! through [`parse_chunk`], so they count tokens the same way.

use std::io::{BufRead, BufReader};
use std::time::{Duration, Instant};

use serde_json::Value;

/// What a client saw of one streamed completion.
#[derive(Debug, Clone, Default)]
pub struct StreamTiming {
    /// Request sent → first content delta.
    pub ttft: f64,
    /// Arrival time of each content delta, seconds from the request.
    pub token_times: Vec<f64>,
    pub total: f64,
    pub prompt_tokens: Option<u64>,
    pub completion_tokens: Option<u64>,
    pub text: String,
}

impl StreamTiming {
    /// Tokens generated: the server's count when it reported one, else content deltas.
    pub fn tokens(&self) -> u64 {
        self.completion_tokens
            .unwrap_or(self.token_times.len() as u64)
    }

    /// Decode rate after the first token.
    pub fn decode_tok_s(&self) -> f64 {
        match (self.token_times.first(), self.token_times.last()) {
            (Some(a), Some(b)) if b > a => (self.tokens().saturating_sub(1)) as f64 / (b - a),
            _ => 0.0,
        }
    }
}

/// POSTs a streaming chat completion and reads it to the end.
pub fn stream_chat(base: &str, body: &Value) -> Result<StreamTiming, String> {
    let agent = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(600))
        .build();
    let start = Instant::now();
    let resp = agent
        .post(&format!("{base}/v1/chat/completions"))
        .send_string(&body.to_string())
        .map_err(|e| e.to_string())?;
    let mut t = StreamTiming::default();
    let mut line = String::new();
    let mut reader = BufReader::new(resp.into_reader());
    loop {
        line.clear();
        if reader.read_line(&mut line).map_err(|e| e.to_string())? == 0 {
            break;
        }
        let Some(data) = line.trim_end().strip_prefix("data:").map(str::trim_start) else {
            continue;
        };
        if data == "[DONE]" {
            break;
        }
        let c = parse_chunk(data)?;
        if let Some((p, n)) = c.usage {
            t.prompt_tokens = p;
            t.completion_tokens = n;
        }
        if let Some(c) = c.content {
            let at = start.elapsed().as_secs_f64();
            if t.token_times.is_empty() {
                t.ttft = at;
            }
            t.token_times.push(at);
            t.text.push_str(&c);
        }
    }
    t.total = start.elapsed().as_secs_f64();
    Ok(t)
}

/// What one `data:` payload of an OpenAI stream carries.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Chunk {
    /// Non-empty content of the first choice (`delta.content` for chat, `text` for
    /// completions).
    pub content: Option<String>,
    /// (prompt_tokens, completion_tokens) of a usage chunk.
    pub usage: Option<(Option<u64>, Option<u64>)>,
    /// The message of an `{"error": …}` event (a server failing mid-stream).
    pub error: Option<String>,
    /// `[DONE]`.
    pub done: bool,
}

/// Interprets one `data:` payload; non-JSON (other than `[DONE]`) is an error.
pub fn parse_chunk(data: &str) -> Result<Chunk, String> {
    if data == "[DONE]" {
        return Ok(Chunk {
            done: true,
            ..Chunk::default()
        });
    }
    let v: Value = serde_json::from_str(data).map_err(|e| format!("{e}: {data}"))?;
    let mut c = Chunk::default();
    if let Some(u) = v.get("usage").filter(|u| u.is_object()) {
        c.usage = Some((u["prompt_tokens"].as_u64(), u["completion_tokens"].as_u64()));
    }
    if let Some(e) = v.get("error").filter(|e| !e.is_null()) {
        c.error = Some(
            e["message"]
                .as_str()
                .map(str::to_string)
                .unwrap_or_else(|| e.to_string()),
        );
    }
    c.content = v
        .pointer("/choices/0/delta/content")
        .or_else(|| v.pointer("/choices/0/text"))
        .and_then(|c| c.as_str())
        .filter(|c| !c.is_empty())
        .map(str::to_string);
    Ok(c)
}

/// Splits a byte stream into SSE events as bytes arrive in arbitrary pieces (a network
/// read may hold half an event or several): `data:` lines are joined with newlines, an
/// event ends at a blank line, and [`SseDecoder::finish`] flushes an unterminated last one.
#[derive(Debug, Default)]
pub struct SseDecoder {
    line: Vec<u8>,
    data: Option<String>,
}

impl SseDecoder {
    /// Feeds bytes; returns the events completed by them.
    pub fn push(&mut self, bytes: &[u8]) -> Vec<String> {
        let mut out = Vec::new();
        for &b in bytes {
            if b != b'\n' {
                self.line.push(b);
                continue;
            }
            if self.line.last() == Some(&b'\r') {
                self.line.pop();
            }
            let line = String::from_utf8_lossy(&self.line).into_owned();
            self.line.clear();
            if line.is_empty() {
                out.extend(self.data.take());
            } else if let Some(d) = line.strip_prefix("data:") {
                let d = d.strip_prefix(' ').unwrap_or(d);
                match &mut self.data {
                    Some(acc) => {
                        acc.push('\n');
                        acc.push_str(d);
                    }
                    None => self.data = Some(d.to_string()),
                }
            }
            // Comments (`:`), `event:`, `id:` and `retry:` lines carry nothing we use.
        }
        out
    }

    /// The event still open at the end of the body, if any.
    pub fn finish(&mut self) -> Option<String> {
        let mut out = self.push(b"\n\n");
        out.pop()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decoder_handles_split_and_joined_events() {
        let body = "data: {\"a\":1}\n\n: keep-alive\r\ndata: x\r\ndata: y\r\n\r\ndata: [DONE]\n\n";
        let mut whole = SseDecoder::default();
        assert_eq!(whole.push(body.as_bytes()), ["{\"a\":1}", "x\ny", "[DONE]"]);
        // Byte by byte gives the same events.
        let mut d = SseDecoder::default();
        let events: Vec<String> = body.bytes().flat_map(|b| d.push(&[b])).collect();
        assert_eq!(events, ["{\"a\":1}", "x\ny", "[DONE]"]);
        let mut d = SseDecoder::default();
        assert!(d.push(b"data: tail").is_empty());
        assert_eq!(d.finish().as_deref(), Some("tail"));
        assert_eq!(d.finish(), None);
    }

    #[test]
    fn chunks_carry_content_usage_and_errors() {
        let c = parse_chunk(r#"{"choices":[{"delta":{"content":"Hi"}}]}"#).unwrap();
        assert_eq!(c.content.as_deref(), Some("Hi"));
        let c =
            parse_chunk(r#"{"choices":[{"delta":{"role":"assistant","content":""}}]}"#).unwrap();
        assert_eq!(c.content, None);
        let c = parse_chunk(r#"{"choices":[],"usage":{"prompt_tokens":5,"completion_tokens":7}}"#)
            .unwrap();
        assert_eq!(c.usage, Some((Some(5), Some(7))));
        let c =
            parse_chunk(r#"{"error":{"message":"worker crashed","type":"server_error"}}"#).unwrap();
        assert_eq!(c.error.as_deref(), Some("worker crashed"));
        assert!(parse_chunk("[DONE]").unwrap().done);
        assert!(parse_chunk("not json").is_err());
        let c = parse_chunk(r#"{"choices":[{"text":" Paris"}]}"#).unwrap();
        assert_eq!(c.content.as_deref(), Some(" Paris"));
    }
}
