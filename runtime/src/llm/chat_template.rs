//! Chat prompt rendering with the model's own Jinja template.
//!
//! Chat models are only coherent with the exact prompt format they were tuned
//! on, which the GGUF carries as `tokenizer.chat_template` (a Hugging Face
//! Jinja template). Rendering it the way `transformers.apply_chat_template`
//! does keeps our prompts token-identical to the reference implementation.

use minijinja::{context, Environment, Error, ErrorKind};
use serde::{Deserialize, Serialize};

use super::error::{LlmError, Result};
use super::gguf::GgufFile;

const TEMPLATE_NAME: &str = "chat";

/// Gemma's turn format, as in the chat template of Google's instruction-tuned
/// Gemma 3 checkpoints (text parts only): a system message is prepended to the
/// first user turn, the assistant's role is `model`, turns end with
/// `<end_of_turn>` (which the worker treats as the end of generation).
const GEMMA_TEMPLATE: &str = r#"{{ bos_token }}
{%- if messages[0]['role'] == 'system' -%}
    {%- set first_user_prefix = messages[0]['content'] + '\n\n' -%}
    {%- set loop_messages = messages[1:] -%}
{%- else -%}
    {%- set first_user_prefix = "" -%}
    {%- set loop_messages = messages -%}
{%- endif -%}
{%- for message in loop_messages -%}
    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}
        {{ raise_exception("Conversation roles must alternate user/assistant/user/assistant/...") }}
    {%- endif -%}
    {%- if message['role'] == 'assistant' -%}
        {%- set role = "model" -%}
    {%- else -%}
        {%- set role = message['role'] -%}
    {%- endif -%}
    {{ '<start_of_turn>' + role + '\n' + (first_user_prefix if loop.first else "") }}
    {{- message['content'] | trim }}
    {{- '<end_of_turn>\n' }}
{%- endfor -%}
{%- if add_generation_prompt -%}
    {{ '<start_of_turn>model\n' }}
{%- endif -%}
"#;

/// One chat turn as the template sees it (`message['role']`, `message['content']`,
/// and for tool turns `message.tool_calls` / `message.tool_call_id`, left undefined
/// when absent, as templates test them with `is defined`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    pub role: String,
    pub content: String,
    /// An assistant's calls: `{"id", "type": "function", "function": {"name",
    /// "arguments": <object>}}` (arguments as an object, as templates print them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<serde_json::Value>>,
    /// A `tool` turn: the call it answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
}

impl ChatMessage {
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        Self {
            role: role.into(),
            content: content.into(),
            tool_calls: None,
            tool_call_id: None,
        }
    }
}

/// A compiled chat template plus the special-token strings it may reference.
pub struct ChatTemplate {
    env: Environment<'static>,
    /// The template renders `tools` (Qwen's does; SmolLM2's and Gemma's do not).
    knows_tools: bool,
    bos_token: String,
    eos_token: String,
}

impl ChatTemplate {
    /// Compiles `source` with Hugging Face's Jinja settings.
    ///
    /// `transformers` renders with `trim_blocks` and `lstrip_blocks` on and
    /// exposes `raise_exception`; templates also call Python string methods
    /// (`.strip()`, `.startswith()`...), which minijinja-contrib's pycompat
    /// callback provides. Without these, whitespace and method calls differ
    /// and prompts silently drift from what the model was tuned on.
    pub fn new(
        source: impl Into<String>,
        bos_token: impl Into<String>,
        eos_token: impl Into<String>,
    ) -> Result<Self> {
        let mut env = Environment::new();
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function(
            "raise_exception",
            |msg: String| -> std::result::Result<String, Error> {
                Err(Error::new(ErrorKind::InvalidOperation, msg))
            },
        );
        let source = source.into();
        let knows_tools = source.contains("tools");
        env.add_template_owned(TEMPLATE_NAME, source)?;
        Ok(Self {
            env,
            knows_tools,
            bos_token: bos_token.into(),
            eos_token: eos_token.into(),
        })
    }

    /// `override_source` when given (operators need this for GGUFs with missing or
    /// broken templates), else the file's `tokenizer.chat_template`, else for a
    /// Gemma 3 file (base models ship without one) Gemma's turn format.
    /// `bos_token`/`eos_token` are the token strings at the GGUF's bos/eos ids.
    pub fn from_gguf(f: &GgufFile, override_source: Option<&str>) -> Result<Self> {
        let source = match (override_source, f.get_string("tokenizer.chat_template")?) {
            (Some(s), _) | (None, Some(s)) => s.to_string(),
            (None, None) if f.get_string("general.architecture")? == Some("gemma3") => {
                GEMMA_TEMPLATE.to_string()
            }
            (None, None) => {
                return Err(LlmError::MissingMetadata("tokenizer.chat_template".into()))
            }
        };
        let token_at = |key: &str| -> Result<String> {
            let Some(id) = f.get_usize(key)? else {
                return Ok(String::new());
            };
            let tokens = f.require_array("tokenizer.ggml.tokens")?;
            Ok(tokens
                .get(id)
                .and_then(|v| v.to_string().ok())
                .cloned()
                .unwrap_or_default())
        };
        let bos = token_at("tokenizer.ggml.bos_token_id")?;
        let eos = token_at("tokenizer.ggml.eos_token_id")?;
        Self::new(source, bos, eos)
    }

    /// Renders the prompt; with `add_generation_prompt` the text ends where
    /// the assistant's reply should begin.
    pub fn render(&self, messages: &[ChatMessage], add_generation_prompt: bool) -> Result<String> {
        self.render_with_tools(messages, None, add_generation_prompt)
    }

    /// [`Self::render`] with `tools` (OpenAI's function definitions) for a template
    /// that [`knows_tools`](Self::knows_tools).
    pub fn render_with_tools(
        &self,
        messages: &[ChatMessage],
        tools: Option<&[serde_json::Value]>,
        add_generation_prompt: bool,
    ) -> Result<String> {
        let tmpl = self.env.get_template(TEMPLATE_NAME)?;
        Ok(tmpl.render(context! {
            messages => messages,
            tools => tools,
            add_generation_prompt => add_generation_prompt,
            bos_token => &self.bos_token,
            eos_token => &self.eos_token,
        })?)
    }

    /// Whether the template renders tools and tool turns itself.
    pub fn knows_tools(&self) -> bool {
        self.knows_tools
    }

    pub fn bos_token(&self) -> &str {
        &self.bos_token
    }

    pub fn eos_token(&self) -> &str {
        &self.eos_token
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::llm::test_support::test_gguf_path;

    fn real_template() -> ChatTemplate {
        let f = GgufFile::open(test_gguf_path()).expect("open test GGUF (set SURGE_TEST_GGUF)");
        ChatTemplate::from_gguf(&f, None).expect("template")
    }

    #[test]
    fn real_template_renders_chatml() {
        let t = real_template();
        assert_eq!(t.bos_token(), "<|im_start|>");
        assert_eq!(t.eos_token(), "<|im_end|>");
        let msgs = [
            ChatMessage::new("system", "Be brief."),
            ChatMessage::new("user", "Hi!"),
        ];
        assert_eq!(
            t.render(&msgs, true).expect("render"),
            "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi!<|im_end|>\n<|im_start|>assistant\n"
        );
        assert_eq!(
            t.render(&msgs, false).expect("render"),
            "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi!<|im_end|>\n"
        );
    }

    #[test]
    fn real_template_adds_default_system_prompt() {
        let out = real_template()
            .render(&[ChatMessage::new("user", "Hi!")], true)
            .expect("render");
        assert!(out.starts_with("<|im_start|>system\n"), "{out}");
        assert!(
            out.ends_with("<|im_start|>user\nHi!<|im_end|>\n<|im_start|>assistant\n"),
            "{out}"
        );
    }

    #[test]
    fn hf_semantics_override_template() {
        // Exercises trim/lstrip blocks, Python string methods and raise_exception.
        let src = "{{ bos_token }}\n{% for m in messages %}\n  {% if m.role not in ['user', 'assistant'] %}{{ raise_exception('bad role ' + m.role) }}{% endif %}\n[{{ m.role.upper() }}] {{ m.content.strip() }}\n{% endfor %}\n{% if add_generation_prompt %}[ASSISTANT]{% endif %}";
        let t = ChatTemplate::new(src, "<s>", "</s>").expect("compile");
        let out = t
            .render(&[ChatMessage::new("user", "  hello  ")], true)
            .expect("render");
        assert_eq!(out, "<s>\n[USER] hello\n[ASSISTANT]");
        let err = t
            .render(&[ChatMessage::new("tool", "x")], true)
            .expect_err("must raise");
        assert!(err.to_string().contains("bad role tool"), "{err}");
    }
}
