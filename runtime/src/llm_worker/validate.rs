//! Turns an OpenAI request into generation jobs, or a 400 that names the bad parameter.
//! Everything that can be checked before the engine sees the request is checked here, so
//! the engine thread never fails on user input. The router calls it on the blocking pool:
//! rendering the template and tokenizing a long prompt is too slow for an async handler.

use std::collections::HashMap;

use crate::llm::{ChatMessage, Constraint, SamplingParams, Tokenizer};
use crate::server::ApiError;

use super::routes::Ready;
use super::{structured, tools};

use super::api::{
    ChatCompletionRequest, CommonParams, CompletionRequest, ContentIn, PromptIn, StopIn,
};

/// Limits the validator enforces; from the worker's configuration and the model.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Longest prompt + completion the model serves.
    pub max_context: usize,
    /// `max_tokens` when the request gives none (OpenAI: "up to the context"; we cap it so
    /// one careless request does not reserve the whole KV budget).
    pub default_max_tokens: usize,
    /// Most tokens the KV budget can ever hold for one sequence.
    pub max_sequence_tokens: usize,
    pub max_n: usize,
}

/// One sequence to generate: the unit the scheduler batches.
#[derive(Debug, Clone)]
pub struct Job {
    pub prompt: Vec<u32>,
    pub max_new_tokens: usize,
    pub sampling: SamplingParams,
    pub stop: Vec<String>,
    /// Choice index in the response.
    pub index: usize,
    pub ignore_eos: bool,
    /// The grammar the output must match (`response_format`, forced tool calls).
    pub constraint: Option<Constraint>,
}

/// A validated request: its jobs (n × prompts) and how to answer.
#[derive(Debug, Clone)]
pub struct Validated {
    pub jobs: Vec<Job>,
    pub stream: bool,
    pub include_usage: bool,
    pub prompt_tokens: usize,
    /// Chat: return `logprobs.content`; completions: legacy logprobs.
    pub logprobs: bool,
    /// The functions the model may call: its output is read for calls.
    pub tool_names: Option<Vec<String>>,
    /// OpenAI's `user` (recorded on the request's trace span).
    pub user: Option<String>,
}

pub fn chat(req: ChatCompletionRequest, ready: &Ready) -> Result<Validated, ApiError> {
    let (tok, tmpl, limits) = (&*ready.tokenizer, &ready.template, &ready.limits);
    structured::refuse_unsupported(&req.other)?;
    let format = structured::response_format(req.response_format.as_ref())?;
    let tools = tools::tool_set(
        req.tools.as_ref(),
        req.tool_choice.as_ref(),
        req.parallel_tool_calls,
    )?;
    let calling = tools.as_ref().filter(|t| t.calls_expected());
    if format.is_some() && calling.is_some() {
        return Err(ApiError::invalid(
            "response_format cannot be combined with tools unless tool_choice is 'none'",
            "response_format",
        ));
    }
    let messages = req
        .messages
        .ok_or_else(|| ApiError::invalid("'messages' is a required property", "messages"))?;
    if messages.is_empty() {
        return Err(ApiError::invalid(
            "'messages' must contain at least one message",
            "messages",
        ));
    }
    let mut rendered = Vec::with_capacity(messages.len());
    for (i, m) in messages.into_iter().enumerate() {
        let role = m.role.ok_or_else(|| {
            ApiError::invalid(format!("messages[{i}].role is required"), "messages")
        })?;
        if !["system", "user", "assistant", "developer", "tool"].contains(&role.as_str()) {
            return Err(ApiError::invalid(
                format!("messages[{i}].role '{role}' is not one of system, developer, user, assistant, tool"),
                "messages",
            ));
        }
        // The ChatML template knows no "developer": it is OpenAI's newer name for system.
        let role = if role == "developer" {
            "system".to_string()
        } else {
            role
        };
        let content = match m.content {
            None => String::new(),
            Some(ContentIn::Text(t)) => t,
            Some(ContentIn::Parts(parts)) => {
                let mut s = String::new();
                for p in parts {
                    match (p.kind.as_str(), p.text) {
                        ("text", Some(t)) => s.push_str(&t),
                        (kind, _) => {
                            return Err(ApiError::invalid(
                                format!("messages[{i}].content part of type '{kind}' is not supported by this model"),
                                "messages",
                            ))
                        }
                    }
                }
                s
            }
        };
        // `name` tells participants apart; no supported template renders it.
        let _ = m.name;
        let mut message = ChatMessage::new(role, content);
        message.tool_calls = tools::history_calls(i, m.tool_calls.as_ref())?;
        message.tool_call_id = m.tool_call_id;
        rendered.push(message);
    }
    let shown = calling.map(|t| t.tools.as_slice());
    let has_tool_turns = rendered
        .iter()
        .any(|m| m.role == "tool" || m.tool_calls.is_some());
    let prompt_text = if tmpl.knows_tools() {
        tmpl.render_with_tools(&rendered, shown, true)
    } else if shown.is_some() || has_tool_turns {
        tmpl.render(&tools::without_tool_turns(rendered, shown), true)
    } else {
        tmpl.render(&rendered, true)
    }
    .map_err(|e| ApiError::invalid(format!("chat template failed: {e}"), "messages"))?;
    let prompt = tok
        .encode_prompt(&prompt_text)
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    let top_logprobs = match (req.logprobs.unwrap_or(false), req.top_logprobs) {
        (_, Some(n)) if n > 20 => {
            return Err(ApiError::invalid(
                "top_logprobs must be between 0 and 20",
                "top_logprobs",
            ))
        }
        (false, Some(n)) if n > 0 => {
            return Err(ApiError::invalid(
                "top_logprobs requires logprobs to be true",
                "top_logprobs",
            ))
        }
        (lp, n) => lp.then_some(n.unwrap_or(0) as usize),
    };
    let max_tokens = req.common.max_completion_tokens.or(req.common.max_tokens);
    let mut v = build(
        vec![prompt],
        &req.common,
        max_tokens,
        top_logprobs,
        tok,
        limits,
        "messages",
    )?;
    let (grammar, param) = match calling {
        Some(t) => (t.grammar(), "tools"),
        None => (format, "response_format"),
    };
    if let Some(spec) = grammar {
        // Compiled after the cheap checks: a large schema takes milliseconds.
        let c = ready
            .grammars
            .compile(&spec)
            .map_err(|e| ApiError::invalid(format!("{param} cannot be used: {e}"), param))?;
        for job in &mut v.jobs {
            job.constraint = Some(c.clone());
        }
    }
    if let Some(t) = calling {
        if !t.parallel && t.choice == tools::ToolChoice::Auto {
            // One call at most: the output ends where the first call does (a forced
            // call's grammar already allows only one).
            for job in &mut v.jobs {
                job.stop.push(tools::CALL_CLOSE.to_string());
            }
        }
        v.tool_names = Some(t.names.clone());
    }
    Ok(v)
}

pub fn completion(
    req: CompletionRequest,
    tok: &Tokenizer,
    limits: &Limits,
) -> Result<Validated, ApiError> {
    if req.echo.unwrap_or(false) {
        return Err(ApiError::invalid("echo is not supported", "echo"));
    }
    if req.suffix.as_deref().is_some_and(|s| !s.is_empty()) {
        return Err(ApiError::invalid(
            "suffix is not supported by this model",
            "suffix",
        ));
    }
    let prompts: Vec<Vec<u32>> = match req.prompt {
        None => {
            return Err(ApiError::invalid(
                "'prompt' is a required property",
                "prompt",
            ))
        }
        Some(PromptIn::Text(t)) => vec![encode(tok, &t)?],
        Some(PromptIn::Texts(ts)) => ts
            .iter()
            .map(|t| encode(tok, t))
            .collect::<Result<_, _>>()?,
        Some(PromptIn::Tokens(ids)) => vec![ids],
        Some(PromptIn::TokenLists(l)) => l,
    };
    if prompts.is_empty() || prompts.iter().any(|p| p.is_empty()) {
        return Err(ApiError::invalid("'prompt' must not be empty", "prompt"));
    }
    if let Some(bad) = prompts
        .iter()
        .flatten()
        .find(|&&t| t as usize >= tok.vocab_size())
    {
        return Err(ApiError::invalid(
            format!("prompt token {bad} is outside the vocabulary"),
            "prompt",
        ));
    }
    let top = match req.logprobs {
        Some(n) if n > 5 => {
            return Err(ApiError::invalid(
                "logprobs must be between 0 and 5",
                "logprobs",
            ))
        }
        other => other.map(|n| n as usize),
    };
    // Legacy completions default to 16 tokens, as OpenAI's does.
    let max_tokens = req.common.max_tokens.or(Some(16));
    build(prompts, &req.common, max_tokens, top, tok, limits, "prompt")
}

fn encode(tok: &Tokenizer, text: &str) -> Result<Vec<u32>, ApiError> {
    tok.encode_prompt(text)
        .map_err(|e| ApiError::Internal(e.to_string()))
}

fn build(
    prompts: Vec<Vec<u32>>,
    p: &CommonParams,
    max_tokens: Option<i64>,
    top_logprobs: Option<usize>,
    tok: &Tokenizer,
    limits: &Limits,
    prompt_param: &'static str,
) -> Result<Validated, ApiError> {
    let n = p.n.unwrap_or(1);
    if n < 1 || n as usize > limits.max_n {
        return Err(ApiError::invalid(
            format!("n must be between 1 and {}", limits.max_n),
            "n",
        ));
    }
    let temperature = range(p.temperature, 1.0, 0.0, 2.0, "temperature")?;
    let top_p = p.top_p.unwrap_or(1.0);
    if !(top_p > 0.0 && top_p <= 1.0) {
        return Err(ApiError::invalid(
            "top_p must be greater than 0 and at most 1",
            "top_p",
        ));
    }
    let top_k = p.top_k.unwrap_or(0);
    if top_k < 0 {
        return Err(ApiError::invalid(
            "top_k must be 0 (disabled) or positive",
            "top_k",
        ));
    }
    let presence = range(p.presence_penalty, 0.0, -2.0, 2.0, "presence_penalty")?;
    let frequency = range(p.frequency_penalty, 0.0, -2.0, 2.0, "frequency_penalty")?;
    let stop = match &p.stop {
        None => vec![],
        Some(StopIn::One(s)) => vec![s.clone()],
        Some(StopIn::Many(v)) => v.clone(),
    };
    if stop.len() > 4 {
        return Err(ApiError::invalid(
            "stop accepts at most 4 sequences",
            "stop",
        ));
    }
    if stop.iter().any(String::is_empty) {
        return Err(ApiError::invalid(
            "stop sequences must not be empty",
            "stop",
        ));
    }
    let mut logit_bias = HashMap::new();
    for (k, v) in p.logit_bias.iter().flatten() {
        let id: u32 = k.parse().map_err(|_| {
            ApiError::invalid(
                format!("logit_bias key '{k}' is not a token id"),
                "logit_bias",
            )
        })?;
        if id as usize >= tok.vocab_size() {
            return Err(ApiError::invalid(
                format!("logit_bias token {id} is outside the vocabulary"),
                "logit_bias",
            ));
        }
        if !(-100.0..=100.0).contains(v) {
            return Err(ApiError::invalid(
                "logit_bias values must be between -100 and 100",
                "logit_bias",
            ));
        }
        logit_bias.insert(id, *v);
    }
    let seed = match p.seed {
        Some(s) if s < 0 => return Err(ApiError::invalid("seed must be non-negative", "seed")),
        s => s.map(|s| s as u64),
    };
    if let Some(m) = max_tokens {
        if m < 1 {
            return Err(ApiError::invalid(
                "max_tokens must be at least 1",
                "max_tokens",
            ));
        }
    }
    let longest = prompts.iter().map(Vec::len).max().unwrap_or(0);
    if longest >= limits.max_context {
        return Err(ApiError::ContextLengthExceeded(format!(
            "This model's maximum context length is {} tokens. However, your {prompt_param} resulted in {longest} tokens.",
            limits.max_context
        )));
    }
    let room = limits.max_context - longest;
    let max_new = match max_tokens {
        Some(m) if m as usize > room => {
            return Err(ApiError::ContextLengthExceeded(format!(
                "This model's maximum context length is {} tokens. However, you requested {} tokens \
                 ({longest} in the {prompt_param}, {m} for the completion). Please reduce the length of the \
                 {prompt_param} or the completion.",
                limits.max_context,
                longest + m as usize
            )))
        }
        Some(m) => m as usize,
        None => limits.default_max_tokens.min(room),
    };
    if longest + max_new > limits.max_sequence_tokens {
        return Err(ApiError::ContextLengthExceeded(format!(
            "This request needs {} tokens of KV cache ({longest} prompt + {max_new} completion) but the worker's \
             KV budget holds at most {} per sequence; lower max_tokens or raise the worker's KV memory.",
            longest + max_new,
            limits.max_sequence_tokens
        )));
    }
    let sampling = SamplingParams {
        temperature,
        top_p,
        top_k: top_k as usize,
        presence_penalty: presence,
        frequency_penalty: frequency,
        logit_bias,
        seed,
        logprobs: top_logprobs.is_some(),
        top_logprobs: top_logprobs.unwrap_or(0),
    };
    sampling
        .validate()
        .map_err(|e| ApiError::invalid(e.to_string(), None))?;
    let prompt_tokens = prompts.iter().map(Vec::len).sum::<usize>() * n as usize;
    let mut jobs = Vec::new();
    for (pi, prompt) in prompts.into_iter().enumerate() {
        for c in 0..n as usize {
            let mut sampling = sampling.clone();
            // Choices of one request must differ, yet stay reproducible under a seed.
            sampling.seed = seed.map(|s| s.wrapping_add(c as u64));
            jobs.push(Job {
                prompt: prompt.clone(),
                max_new_tokens: max_new,
                sampling,
                stop: stop.clone(),
                index: pi * n as usize + c,
                ignore_eos: p.ignore_eos,
                constraint: None,
            });
        }
    }
    Ok(Validated {
        jobs,
        stream: p.stream,
        include_usage: p.stream_options.as_ref().is_some_and(|o| o.include_usage),
        prompt_tokens,
        logprobs: top_logprobs.is_some(),
        tool_names: None,
        user: p.user.clone(),
    })
}

fn range(
    v: Option<f32>,
    default: f32,
    lo: f32,
    hi: f32,
    name: &'static str,
) -> Result<f32, ApiError> {
    let v = v.unwrap_or(default);
    if v.is_nan() || v < lo || v > hi {
        return Err(ApiError::invalid(
            format!("{name} must be between {lo} and {hi}"),
            name,
        ));
    }
    Ok(v)
}
