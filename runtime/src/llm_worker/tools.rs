//! Tool calling: `tools`, `tool_choice` and `parallel_tool_calls` checked into a
//! [`ToolSet`]; the tools rendered by the model's own chat template where it knows
//! them (Qwen's), else by a documented fallback prompt; forced calls (`required`, a
//! named function) constrained by a grammar.
//!
//! Every model speaks one call syntax here, Hermes' (Qwen 2.5's native one):
//! `<tool_call>\n{"name": ..., "arguments": {...}}\n</tool_call>`, parsed back into
//! OpenAI's `tool_calls` by [`super::tool_calls`].

use serde_json::{json, Value};

use crate::llm::grammar::compact;
use crate::llm::{ChatMessage, GrammarSpec};
use crate::server::ApiError;

use super::structured::{is_name, NAME_RULE};

pub const CALL_OPEN: &str = "<tool_call>";
pub const CALL_CLOSE: &str = "</tool_call>";

/// `tool_choice`.
#[derive(Debug, Clone, PartialEq)]
pub enum ToolChoice {
    /// Answer in text; the tools are not shown to the model.
    None,
    /// The model decides between text and calls.
    Auto,
    /// At least one call (one with `parallel_tool_calls: false`).
    Required,
    /// A call of this function.
    Named(String),
}

/// The tools of one request.
#[derive(Debug, Clone)]
pub struct ToolSet {
    /// As the template sees them: `{"type": "function", "function": {name,
    /// description, parameters}}`.
    pub tools: Vec<Value>,
    pub names: Vec<String>,
    pub choice: ToolChoice,
    pub parallel: bool,
}

/// Reads the request's tool parameters: `None` when it has no tools (and then
/// `tool_choice` may only be `none`).
pub fn tool_set(
    tools: Option<&Value>,
    choice: Option<&Value>,
    parallel: Option<bool>,
) -> Result<Option<ToolSet>, ApiError> {
    let list = match tools.filter(|t| !t.is_null()) {
        None => &vec![],
        Some(Value::Array(a)) => a,
        Some(_) => {
            return Err(ApiError::invalid(
                "tools must be an array of tools",
                "tools",
            ))
        }
    };
    let mut norm = Vec::with_capacity(list.len());
    let mut names: Vec<String> = Vec::with_capacity(list.len());
    for (i, t) in list.iter().enumerate() {
        if t["type"] != "function" {
            return Err(ApiError::invalid(
                format!("tools[{i}].type must be 'function'"),
                "tools",
            ));
        }
        let f = &t["function"];
        let name = f["name"].as_str().unwrap_or_default();
        if !is_name(name) {
            return Err(ApiError::invalid(
                format!("tools[{i}].function.name is required: {NAME_RULE}"),
                "tools",
            ));
        }
        if names.iter().any(|n| n == name) {
            return Err(ApiError::invalid(
                format!("tools[{i}].function.name '{name}' is given twice"),
                "tools",
            ));
        }
        let parameters = match &f["parameters"] {
            // No parameters: the arguments are `{}`.
            Value::Null => {
                json!({"type": "object", "properties": {}, "additionalProperties": false})
            }
            p @ Value::Object(_) => p.clone(),
            _ => {
                return Err(ApiError::invalid(
                    format!("tools[{i}].function.parameters must be a JSON Schema object"),
                    "tools",
                ))
            }
        };
        let mut function = json!({"name": name, "parameters": parameters});
        if let Some(d) = f["description"].as_str() {
            function["description"] = json!(d);
        }
        norm.push(json!({"type": "function", "function": function}));
        names.push(name.to_string());
    }
    let choice = match choice.filter(|c| !c.is_null()) {
        None if names.is_empty() => ToolChoice::None,
        None => ToolChoice::Auto,
        Some(Value::String(s)) => match s.as_str() {
            "none" => ToolChoice::None,
            "auto" => ToolChoice::Auto,
            "required" => ToolChoice::Required,
            other => {
                return Err(ApiError::invalid(
                    format!("tool_choice '{other}' is not one of none, auto, required or a named function"),
                    "tool_choice",
                ))
            }
        },
        Some(c) if c["type"] == "function" && c["function"]["name"].is_string() => {
            ToolChoice::Named(c["function"]["name"].as_str().unwrap_or_default().into())
        }
        Some(c) => {
            return Err(ApiError::invalid(
                format!("tool_choice {c} is not one of none, auto, required or {{\"type\": \"function\", \"function\": {{\"name\": ..}}}}"),
                "tool_choice",
            ))
        }
    };
    if names.is_empty() {
        if choice != ToolChoice::None {
            return Err(ApiError::invalid(
                "tool_choice needs tools: this request has none",
                "tool_choice",
            ));
        }
        return Ok(None);
    }
    if let ToolChoice::Named(n) = &choice {
        if !names.contains(n) {
            return Err(ApiError::invalid(
                format!("tool_choice names '{n}', which is not among the tools"),
                "tool_choice",
            ));
        }
    }
    Ok(Some(ToolSet {
        tools: norm,
        names,
        choice,
        parallel: parallel.unwrap_or(true),
    }))
}

impl ToolSet {
    /// Whether the output is read for calls (every choice but `none`).
    pub fn calls_expected(&self) -> bool {
        self.choice != ToolChoice::None
    }

    /// For `required` and a named function: the output is one call (several when
    /// parallel calls are allowed) of the allowed functions, each `arguments` valid
    /// against its `parameters`.
    pub fn grammar(&self) -> Option<GrammarSpec> {
        let allowed: Vec<&Value> = match &self.choice {
            ToolChoice::None | ToolChoice::Auto => return None,
            ToolChoice::Required => self.tools.iter().collect(),
            ToolChoice::Named(n) => self
                .tools
                .iter()
                .filter(|t| t["function"]["name"] == n.as_str())
                .collect(),
        };
        let calls: Vec<Value> = allowed
            .iter()
            .map(|t| {
                json!({
                    "type": "object",
                    "properties": {
                        "name": {"const": t["function"]["name"]},
                        "arguments": t["function"]["parameters"],
                    },
                    "required": ["name", "arguments"],
                    "additionalProperties": false,
                })
            })
            .collect();
        let schema = compact(json!({"anyOf": calls}));
        let repeat = if self.parallel { "(\"\\n\" call)*" } else { "" };
        Some(GrammarSpec::Lark(format!(
            "start: call {repeat}\ncall: \"{CALL_OPEN}\\n\" %json {schema} \"\\n{CALL_CLOSE}\"\n"
        )))
    }
}

/// An assistant turn's `tool_calls` from the request's history, as templates print
/// them: `arguments` (a JSON string on the wire) parsed into an object.
pub fn history_calls(i: usize, calls: Option<&Value>) -> Result<Option<Vec<Value>>, ApiError> {
    let Some(calls) = calls.filter(|c| !c.is_null()) else {
        return Ok(None);
    };
    let bad =
        |what: String| ApiError::invalid(format!("messages[{i}].tool_calls{what}"), "messages");
    let list = calls
        .as_array()
        .ok_or_else(|| bad(" must be an array".into()))?;
    let mut out = Vec::with_capacity(list.len());
    for (k, c) in list.iter().enumerate() {
        let name = c["function"]["name"]
            .as_str()
            .ok_or_else(|| bad(format!("[{k}].function.name is required")))?;
        let arguments = match &c["function"]["arguments"] {
            Value::String(s) => serde_json::from_str::<Value>(s)
                .map_err(|e| bad(format!("[{k}].function.arguments is not JSON: {e}")))?,
            Value::Null => json!({}),
            other => other.clone(),
        };
        out.push(json!({
            "id": c["id"],
            "type": "function",
            "function": {"name": name, "arguments": arguments},
        }));
    }
    Ok(Some(out))
}

/// The system prompt that shows tools to a model whose template cannot (SmolLM2's,
/// Gemma's): Qwen 2.5's own wording, so every model is asked for the same syntax.
pub fn fallback_system_prompt(tools: &[Value]) -> String {
    let mut s = String::from(
        "# Tools\n\nYou may call one or more functions to assist with the user query.\n\n\
         You are provided with function signatures within <tools></tools> XML tags:\n<tools>",
    );
    for t in tools {
        s.push('\n');
        s.push_str(&t.to_string());
    }
    s.push_str(
        "\n</tools>\n\nFor each function call, return a json object with function name and \
         arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n\
         {\"name\": <function-name>, \"arguments\": <args-json-object>}\n</tool_call>",
    );
    s
}

/// Rewrites tool turns for a template that does not know them: the tools prompt into
/// the system message (when `tools` is given), an assistant's calls into its text in
/// the call syntax, `tool` results into user turns wrapped in `<tool_response>` (runs of
/// results into one turn, so user and assistant still alternate).
pub fn without_tool_turns(
    mut messages: Vec<ChatMessage>,
    tools: Option<&[Value]>,
) -> Vec<ChatMessage> {
    if let Some(tools) = tools {
        let prompt = fallback_system_prompt(tools);
        match messages.first_mut() {
            Some(m) if m.role == "system" => m.content = format!("{}\n\n{prompt}", m.content),
            _ => messages.insert(0, ChatMessage::new("system", prompt)),
        }
    }
    let mut out: Vec<ChatMessage> = Vec::with_capacity(messages.len());
    for m in messages {
        match m.role.as_str() {
            "assistant" if m.tool_calls.is_some() => {
                let mut text = m.content.clone();
                for c in m.tool_calls.iter().flatten() {
                    let call = json!({"name": c["function"]["name"], "arguments": c["function"]["arguments"]});
                    if !text.is_empty() {
                        text.push('\n');
                    }
                    text.push_str(&format!("{CALL_OPEN}\n{call}\n{CALL_CLOSE}"));
                }
                out.push(ChatMessage::new("assistant", text));
            }
            "tool" => {
                let wrapped = format!("<tool_response>\n{}\n</tool_response>", m.content);
                match out.last_mut() {
                    Some(prev)
                        if prev.role == "user" && prev.content.ends_with("</tool_response>") =>
                    {
                        prev.content = format!("{}\n{wrapped}", prev.content);
                    }
                    _ => out.push(ChatMessage::new("user", wrapped)),
                }
            }
            _ => out.push(m),
        }
    }
    out
}

#[cfg(test)]
#[path = "tools_tests.rs"]
mod tests;
