//! Server-sent events of OpenAI streams: an incremental decoder for async clients, the
//! interpretation of one chunk (token, usage, error) with surge's own chunk types
//! ([`surge_protocol::openai::StreamChunk`]), and a blocking client that times one
//! streamed chat completion token by token (the benches). Both clients read chunks
//! through [`parse_chunk`], so they count tokens the same way, and the way the gateway
//! does.

use std::io::{BufRead, BufReader};
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::Value;
use surge_protocol::openai::{StreamChunk, Usage};
use surge_protocol::sse::{Decoder, DONE};

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
    let mut reader = BufReader::new(resp.into_reader());
    let mut decoder = Decoder::default();
    'read: loop {
        let piece = reader.fill_buf().map_err(|e| e.to_string())?.to_vec();
        if piece.is_empty() {
            break;
        }
        reader.consume(piece.len());
        for data in decoder.push(&piece).into_iter().filter_map(|e| e.data) {
            if data == DONE {
                break 'read;
            }
            let c = parse_chunk(&data)?;
            if let Some(u) = c.usage {
                t.prompt_tokens = Some(u.prompt_tokens);
                t.completion_tokens = Some(u.completion_tokens);
            }
            if c.token {
                let at = start.elapsed().as_secs_f64();
                if t.token_times.is_empty() {
                    t.ttft = at;
                }
                t.token_times.push(at);
                t.text.push_str(&c.text);
            }
        }
    }
    t.total = start.elapsed().as_secs_f64();
    Ok(t)
}

/// What one `data:` payload of an OpenAI stream carries.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Chunk {
    /// Whether it carries generated output: non-empty content (chat `delta.content`,
    /// completions `text`) or a tool call in any choice ([`StreamChunk::has_token`]).
    pub token: bool,
    /// The generated text of its choices.
    pub text: String,
    /// The usage of a usage chunk (or of any chunk that carries one).
    pub usage: Option<Usage>,
    /// The message of an `{"error": …}` event (a server failing mid-stream).
    pub error: Option<String>,
    /// `[DONE]`.
    pub done: bool,
}

/// A `data:` payload: a completion chunk of either endpoint, an error event, or
/// something else JSON (ignored, unless it has `choices` that are not a chunk's).
#[derive(Deserialize)]
#[serde(untagged)]
enum Payload {
    Chunk(Box<StreamChunk>),
    Error { error: Value },
    Other(Value),
}

/// Interprets one `data:` payload; non-JSON (other than `[DONE]`) is an error, and so is a
/// payload with `choices` that do not read as a chat or text completion chunk.
pub fn parse_chunk(data: &str) -> Result<Chunk, String> {
    if data == "[DONE]" {
        return Ok(Chunk {
            done: true,
            ..Chunk::default()
        });
    }
    let payload: Payload = serde_json::from_str(data).map_err(|e| format!("{e}: {data}"))?;
    Ok(match payload {
        Payload::Chunk(c) => Chunk {
            token: c.has_token(),
            text: c.text(),
            usage: c.usage().copied(),
            ..Chunk::default()
        },
        Payload::Error { error } if !error.is_null() => Chunk {
            error: Some(
                error["message"]
                    .as_str()
                    .map(str::to_string)
                    .unwrap_or_else(|| error.to_string()),
            ),
            ..Chunk::default()
        },
        Payload::Other(v) if v.get("choices").is_some() => {
            // Say why: read it as a chat chunk for the error message.
            let why = serde_json::from_value::<surge_protocol::openai::ChatCompletionChunk>(v)
                .err()
                .map_or_else(String::new, |e| e.to_string());
            return Err(format!("not a completion chunk ({why}): {data}"));
        }
        Payload::Error { .. } | Payload::Other(_) => Chunk::default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_carry_tokens_usage_and_errors() {
        let c = parse_chunk(r#"{"choices":[{"delta":{"content":"Hi"}}]}"#).unwrap();
        assert!(c.token);
        assert_eq!(c.text, "Hi");
        let c =
            parse_chunk(r#"{"choices":[{"delta":{"role":"assistant","content":""}}]}"#).unwrap();
        assert!(!c.token);
        let c = parse_chunk(r#"{"choices":[],"usage":{"prompt_tokens":5,"completion_tokens":7}}"#)
            .unwrap();
        assert_eq!(
            c.usage.map(|u| (u.prompt_tokens, u.completion_tokens)),
            Some((5, 7))
        );
        assert!(!c.token);
        let c =
            parse_chunk(r#"{"error":{"message":"worker crashed","type":"server_error"}}"#).unwrap();
        assert_eq!(c.error.as_deref(), Some("worker crashed"));
        let c = parse_chunk(r#"{"error":"plain"}"#).unwrap();
        assert_eq!(c.error.as_deref(), Some("\"plain\""));
        assert!(parse_chunk("[DONE]").unwrap().done);
        assert!(parse_chunk("not json").is_err());
        let c = parse_chunk(r#"{"choices":[{"text":" Paris"}]}"#).unwrap();
        assert!(c.token);
        assert_eq!(c.text, " Paris");
        // A tool call is a token too.
        let c = parse_chunk(
            r#"{"choices":[{"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{"}}]}}]}"#,
        )
        .unwrap();
        assert!(c.token);
        // Other JSON is ignored; choices that are no chunk's are an error.
        assert_eq!(parse_chunk(r#"{"ping":1}"#).unwrap(), Chunk::default());
        let e = parse_chunk(r#"{"choices":[{"delta":{"content":5}}]}"#).unwrap_err();
        assert!(e.contains("not a completion chunk"), "{e}");
    }

    /// Every chunk of a surge worker's streams, as its respond.rs writes them.
    #[test]
    fn reads_surge_worker_chunks() {
        let head = r#""id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"m","system_fingerprint":null"#;
        let role = format!(
            r#"{{{head},"choices":[{{"index":0,"delta":{{"role":"assistant","content":""}},"logprobs":null,"finish_reason":null}}]}}"#
        );
        let content = format!(
            r#"{{{head},"choices":[{{"index":0,"delta":{{"content":"Hi"}},"logprobs":null,"finish_reason":null}}]}}"#
        );
        let finish = format!(
            r#"{{{head},"choices":[{{"index":0,"delta":{{}},"logprobs":null,"finish_reason":"stop"}}]}}"#
        );
        let usage = format!(
            r#"{{{head},"choices":[],"usage":{{"prompt_tokens":3,"completion_tokens":1,"total_tokens":4}},
               "surge_execution":{{"queue_seconds":0.0,"execution_seconds":0.1,"time_to_first_token_seconds":0.05,"sequences":1}}}}"#
        );
        let chunks: Vec<Chunk> = [role, content, finish, usage]
            .iter()
            .map(|d| parse_chunk(d).unwrap())
            .collect();
        assert_eq!(
            chunks.iter().map(|c| c.token).collect::<Vec<_>>(),
            [false, true, false, false]
        );
        assert_eq!(chunks[3].usage, Some(Usage::new(3, 1)));
        assert!(chunks.iter().all(|c| c.error.is_none()));
    }
}
