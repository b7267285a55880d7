//! Reads tool calls out of generated text, incrementally (streams) or whole: text
//! outside `<tool_call>…</tool_call>` is content; each block holding
//! `{"name": <a tool's name>, "arguments": {..}}` becomes an OpenAI tool call with
//! `arguments` as a JSON string. A block that does not parse, or names a function
//! that is not among the tools, stays text: a client is never handed a call it
//! cannot dispatch.
//!
//! Small models often drop the tags and answer with the bare JSON of a call (Qwen 2.5
//! Coder 0.5B does, greedy): an output that is, as a whole, such an object (or a list
//! of them), optionally in a ```json fence, is read as calls too. While an output
//! could still be one (it starts with `{`, `[` or a fence), it is held back.
//!
//! Streams ([`CallParser::streaming`]) let a call out as it is generated: its id and
//! name once `{"name": "<tool>", "arguments": ` has been read, then its arguments text
//! piece by piece until the arguments object closes (a call in another shape is let
//! out whole when it ends).

use serde_json::Value;
use surge_protocol::openai::{FunctionCall, ToolCall};

use super::tools::{CALL_CLOSE, CALL_OPEN};

/// What the parser found in the text so far, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum Piece {
    Content(String),
    /// A whole call.
    Call(ToolCall),
    /// A streamed call begins: its arguments follow as [`Piece::Args`].
    CallStart {
        id: String,
        name: String,
    },
    /// More of the arguments of the call begun last.
    Args(String),
}

/// A streamed call whose arguments are being let out: `buf` starts with them.
#[derive(Debug, Default)]
struct OpenCall {
    /// Bytes of `buf` already let out (and scanned).
    sent: usize,
    depth: u32,
    in_string: bool,
    escaped: bool,
    /// The arguments object has closed at `sent`.
    done: bool,
}

/// One choice's parser.
#[derive(Debug)]
pub struct CallParser {
    names: Vec<String>,
    /// Text not yet classified: inside a call, or a possible start of one.
    buf: String,
    in_call: bool,
    /// Whitespace between or around calls, held until real text follows it.
    blank: String,
    calls: usize,
    /// Nothing but whitespace and a possible bare call seen so far.
    at_start: bool,
    /// Let calls out as they are generated.
    streaming: bool,
    open: Option<OpenCall>,
    /// The current call is not in the streamable shape: it is let out whole.
    whole: bool,
}

impl CallParser {
    pub fn new(names: Vec<String>) -> Self {
        CallParser {
            names,
            buf: String::new(),
            in_call: false,
            blank: String::new(),
            calls: 0,
            at_start: true,
            streaming: false,
            open: None,
            whole: false,
        }
    }

    /// A parser for a stream: calls come out as [`Piece::CallStart`] and
    /// [`Piece::Args`] while they are generated.
    pub fn streaming(names: Vec<String>) -> Self {
        CallParser {
            streaming: true,
            ..Self::new(names)
        }
    }

    /// Calls found so far.
    pub fn calls(&self) -> usize {
        self.calls
    }

    /// Takes the next piece of generated text.
    pub fn push(&mut self, text: &str) -> Vec<Piece> {
        self.buf.push_str(text);
        let mut out = Vec::new();
        if self.at_start {
            let head = self.buf.trim_start();
            if head.is_empty()
                || head.starts_with(['{', '['])
                || "```".starts_with(head)
                || head.starts_with("```")
            {
                return out;
            }
            self.at_start = false;
        }
        loop {
            if self.in_call && self.streaming && !self.whole {
                if !self.stream_call(&mut out) {
                    break;
                }
            } else if self.in_call {
                // The call ends at the first closing tag after a whole JSON value: a
                // string in the arguments may hold the tag's text.
                let mut from = 0;
                let mut found = None;
                while let Some(at) = self.buf[from..].find(CALL_CLOSE) {
                    let end = from + at;
                    if let Some(call) = self.parse(&self.buf[..end]) {
                        found = Some((end, call));
                        break;
                    }
                    from = end + CALL_CLOSE.len();
                }
                let Some((end, call)) = found else {
                    break;
                };
                self.buf.drain(..end + CALL_CLOSE.len());
                self.in_call = false;
                self.whole = false;
                self.blank.clear();
                self.calls += 1;
                out.push(Piece::Call(call));
            } else if let Some(start) = self.buf.find(CALL_OPEN) {
                let before: String = self.buf[..start].to_string();
                self.buf.drain(..start + CALL_OPEN.len());
                self.in_call = true;
                self.content(&before, &mut out);
            } else {
                // Keep back what could be the start of `<tool_call>`.
                let keep = (1..CALL_OPEN.len())
                    .rev()
                    .find(|&k| self.buf.ends_with(&CALL_OPEN[..k]))
                    .unwrap_or(0);
                let cut = self.buf.len() - keep;
                let text: String = self.buf.drain(..cut).collect();
                self.content(&text, &mut out);
                break;
            }
        }
        out
    }

    /// In a streamed call: reads its header, then lets out its arguments. False when
    /// it needs more text.
    fn stream_call(&mut self, out: &mut Vec<Piece>) -> bool {
        if self.open.is_none() {
            match header(&self.buf, &self.names) {
                Header::More => return false,
                Header::No => {
                    self.whole = true;
                    return true;
                }
                Header::Yes { name, args_at } => {
                    self.buf.drain(..args_at);
                    self.blank.clear();
                    self.calls += 1;
                    out.push(Piece::CallStart {
                        id: call_id(),
                        name,
                    });
                    self.open = Some(OpenCall::default());
                }
            }
        }
        let open = self.open.as_mut().expect("an open call");
        let from = open.sent;
        for (at, b) in self.buf.as_bytes()[from..].iter().enumerate() {
            if open.done {
                break;
            }
            open.sent = from + at + 1;
            match (open.in_string, open.escaped, b) {
                (true, true, _) => open.escaped = false,
                (true, false, b'\\') => open.escaped = true,
                (true, false, b'"') => open.in_string = false,
                (true, false, _) => {}
                (false, _, b'"') => open.in_string = true,
                (false, _, b'{' | b'[') => open.depth += 1,
                (false, _, b'}' | b']') => {
                    open.depth = open.depth.saturating_sub(1);
                    open.done = open.depth == 0;
                }
                _ => {}
            }
        }
        if open.sent > from {
            out.push(Piece::Args(self.buf[from..open.sent].to_string()));
        }
        if !open.done {
            return false;
        }
        // The arguments are whole: the call ends at the closing tag after them.
        let Some(end) = self.buf[open.sent..].find(CALL_CLOSE) else {
            return false;
        };
        let end = open.sent + end + CALL_CLOSE.len();
        self.buf.drain(..end);
        self.open = None;
        self.in_call = false;
        true
    }

    /// The end of the output: an unclosed last call (cut by a stop sequence or the
    /// token limit) is still a call when it parses.
    pub fn finish(&mut self) -> Vec<Piece> {
        let mut out = Vec::new();
        if self.open.take().is_some() {
            // A streamed call: its arguments are out (whole, or cut by the limit).
            self.in_call = false;
            self.buf.clear();
        }
        self.whole = false;
        let rest = std::mem::take(&mut self.buf);
        if std::mem::take(&mut self.at_start) {
            if let Some(calls) = self.bare(&rest) {
                self.calls += calls.len();
                out.extend(calls.into_iter().map(Piece::Call));
                return out;
            }
            // Not a bare call: it may still hold tagged calls.
            out = self.push(&rest);
            out.extend(self.finish());
            return out;
        }
        if self.in_call {
            self.in_call = false;
            self.last_block(&rest, &mut out);
        } else {
            self.content(&rest, &mut out);
        }
        if self.calls == 0 && !self.blank.is_empty() {
            out.push(Piece::Content(std::mem::take(&mut self.blank)));
        }
        out
    }

    fn content(&mut self, text: &str, out: &mut Vec<Piece>) {
        if text.is_empty() {
            return;
        }
        if text.trim().is_empty() {
            self.blank.push_str(text);
            return;
        }
        let mut s = std::mem::take(&mut self.blank);
        s.push_str(text);
        out.push(Piece::Content(s));
    }

    /// An unclosed call at the end of the output: a call if it parses, else text.
    fn last_block(&mut self, body: &str, out: &mut Vec<Piece>) {
        match self.parse(body) {
            Some(call) => {
                self.blank.clear();
                self.calls += 1;
                out.push(Piece::Call(call));
            }
            None => self.content(&format!("{CALL_OPEN}{body}"), out),
        }
    }

    /// The whole output as bare calls: one call object or a list of them.
    fn bare(&self, text: &str) -> Option<Vec<ToolCall>> {
        let t = text.trim();
        let t = match t.strip_prefix("```") {
            Some(fenced) => fenced
                .trim_start_matches("json")
                .trim_end()
                .strip_suffix("```")?
                .trim(),
            None => t,
        };
        match serde_json::from_str::<Value>(t).ok()? {
            Value::Array(items) if !items.is_empty() => {
                items.iter().map(|v| self.call(v)).collect()
            }
            v => Some(vec![self.call(&v)?]),
        }
    }

    fn parse(&self, body: &str) -> Option<ToolCall> {
        self.call(&serde_json::from_str(body.trim()).ok()?)
    }

    fn call(&self, v: &Value) -> Option<ToolCall> {
        let name = v["name"].as_str()?;
        if !self.names.iter().any(|n| n == name) {
            return None;
        }
        let args = match v.get("arguments").or_else(|| v.get("parameters")) {
            None | Some(Value::Null) => Value::Object(Default::default()),
            // Some models write the arguments as a JSON string already.
            Some(Value::String(s)) => serde_json::from_str(s).ok()?,
            Some(a) => a.clone(),
        };
        if !args.is_object() {
            return None;
        }
        Some(ToolCall {
            id: call_id(),
            kind: "function".into(),
            function: FunctionCall {
                name: name.to_string(),
                arguments: args.to_string(),
            },
        })
    }
}

/// Whether a call's text so far begins `{"name": "<tool>", "arguments": {`.
enum Header {
    More,
    No,
    Yes { name: String, args_at: usize },
}

fn header(buf: &str, names: &[String]) -> Header {
    let b = buf.as_bytes();
    let mut i = 0;
    let skip_ws = |i: &mut usize| {
        while *i < b.len() && b[*i].is_ascii_whitespace() {
            *i += 1;
        }
    };
    // Expects `lit` at `i` (after whitespace); None: more text needed or a mismatch.
    let expect = |i: &mut usize, lit: &str| -> Option<Header> {
        skip_ws(i);
        for &c in lit.as_bytes() {
            match b.get(*i) {
                None => return Some(Header::More),
                Some(&x) if x != c => return Some(Header::No),
                _ => *i += 1,
            }
        }
        None
    };
    for lit in ["{", "\"name\"", ":", "\""] {
        if let Some(h) = expect(&mut i, lit) {
            return h;
        }
    }
    let Some(len) = b[i..].iter().position(|&c| c == b'"') else {
        return Header::More;
    };
    let name = &buf[i..i + len];
    if !names.iter().any(|n| n == name) {
        return Header::No;
    }
    i += len + 1;
    for lit in [",", "\"arguments\"", ":", "{"] {
        if let Some(h) = expect(&mut i, lit) {
            return h;
        }
    }
    Header::Yes {
        name: name.to_string(),
        args_at: i - 1,
    }
}

/// `call_` and 24 random letters and digits, as OpenAI's ids look.
fn call_id() -> String {
    use rand::distr::{Alphanumeric, SampleString};
    format!("call_{}", Alphanumeric.sample_string(&mut rand::rng(), 24))
}

/// The whole text at once: the content (`None` when there is only whitespace beside
/// calls) and the calls.
pub fn split(names: &[String], text: &str) -> (Option<String>, Vec<ToolCall>) {
    let mut p = CallParser::new(names.to_vec());
    let mut pieces = p.push(text);
    pieces.extend(p.finish());
    let mut content = String::new();
    let mut calls = Vec::new();
    for piece in pieces {
        match piece {
            Piece::Content(c) => content.push_str(&c),
            Piece::Call(c) => calls.push(c),
            // Only a streaming parser lets calls out in pieces.
            Piece::CallStart { .. } | Piece::Args(_) => {}
        }
    }
    let content = if calls.is_empty() || !content.trim().is_empty() {
        Some(content)
    } else {
        None
    };
    (content, calls)
}

#[cfg(test)]
#[path = "tool_calls_tests.rs"]
mod tests;
