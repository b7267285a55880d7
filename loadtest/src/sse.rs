//! One streaming chat completion, timed token by token.

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
        let v: Value = serde_json::from_str(data).map_err(|e| format!("{e}: {data}"))?;
        if let Some(u) = v.get("usage").filter(|u| u.is_object()) {
            t.prompt_tokens = u["prompt_tokens"].as_u64();
            t.completion_tokens = u["completion_tokens"].as_u64();
        }
        if let Some(c) = v
            .pointer("/choices/0/delta/content")
            .and_then(|c| c.as_str())
        {
            if !c.is_empty() {
                let at = start.elapsed().as_secs_f64();
                if t.token_times.is_empty() {
                    t.ttft = at;
                }
                t.token_times.push(at);
                t.text.push_str(c);
            }
        }
    }
    t.total = start.elapsed().as_secs_f64();
    Ok(t)
}
