//! Tool calling end to end on real workers: Qwen2.5-Coder-0.5B (its own chat template
//! renders the tools) and SmolLM2 (no tools in its template: the fallback prompt).
//! Forced calls (`required`, a named function) always parse and validate; `auto`
//! calls come back as OpenAI `tool_calls` with `arguments` a JSON string, streamed
//! as `delta.tool_calls` that assemble into the same call; a call → result → next
//! turn round trip renders; bad tool parameters get a 400 naming them.

mod support;

use std::sync::OnceLock;

use serde_json::{json, Value};
use support::http::{post, stream_chunks};
use support::worker::{Worker, LLM};

const QWEN: &str = "qwen2.5-coder-0.5b-instruct";

fn qwen() -> &'static Worker {
    static W: OnceLock<Worker> = OnceLock::new();
    W.get_or_init(|| Worker::start(QWEN, &[]))
}

fn smol() -> &'static Worker {
    static W: OnceLock<Worker> = OnceLock::new();
    W.get_or_init(|| Worker::start(LLM, &[]))
}

fn chat(w: &Worker, body: Value) -> (u16, Value) {
    post(&w.url("/v1/chat/completions"), &body)
}

fn tools() -> Value {
    json!([
        {"type": "function", "function": {
            "name": "get_weather",
            "description": "Get the current weather in a city",
            "parameters": {
                "type": "object",
                "properties": {
                    "city": {"type": "string", "maxLength": 40},
                    "unit": {"enum": ["celsius", "fahrenheit"]}
                },
                "required": ["city", "unit"],
                "additionalProperties": false
            }
        }},
        {"type": "function", "function": {
            "name": "add",
            "description": "Add two integers",
            "parameters": {
                "type": "object",
                "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
                "required": ["a", "b"],
                "additionalProperties": false
            }
        }}
    ])
}

const WEATHER_QUESTION: &str = "What is the weather like in Paris today?";

fn ask(question: &str) -> Value {
    json!({"messages": [{"role": "user", "content": question}], "tools": tools(), "max_tokens": 120})
}

/// The calls of a non-streamed answer, each checked against its tool's schema.
fn calls(body: &Value) -> Vec<(String, Value)> {
    assert_eq!(body["choices"][0]["finish_reason"], "tool_calls", "{body}");
    complete_calls(body)
}

/// [`calls`] for an answer that may have been cut by `max_tokens` after its calls.
fn complete_calls(body: &Value) -> Vec<(String, Value)> {
    let choice = &body["choices"][0];
    let list = choice["message"]["tool_calls"].as_array().cloned();
    let list = list.unwrap_or_else(|| panic!("no tool_calls: {body}"));
    list.iter()
        .map(|c| {
            assert!(c["id"].as_str().unwrap().starts_with("call_"), "{c}");
            assert_eq!(c["type"], "function");
            let name = c["function"]["name"].as_str().unwrap().to_string();
            let args: Value = serde_json::from_str(c["function"]["arguments"].as_str().unwrap())
                .unwrap_or_else(|e| panic!("arguments not a JSON string: {e}: {c}"));
            match name.as_str() {
                "get_weather" => {
                    assert!(args["city"].is_string(), "{args}");
                    assert!(["celsius", "fahrenheit"].contains(&args["unit"].as_str().unwrap()));
                    assert_eq!(args.as_object().unwrap().len(), 2, "{args}");
                }
                "add" => assert!(args["a"].is_i64() && args["b"].is_i64(), "{args}"),
                other => panic!("called {other}"),
            }
            (name, args)
        })
        .collect()
}

/// `tool_choice` naming a function, or `required`, always yields valid calls, on a
/// template that renders tools (Qwen) and on the fallback (SmolLM2), greedy and sampled.
/// With parallel calls allowed these small models often repeat the call until
/// `max_tokens` (`finish_reason: length`): every complete call is still valid.
#[test]
fn forced_calls_are_always_valid() {
    let named = json!({"type": "function", "function": {"name": "get_weather"}});
    for w in [qwen(), smol()] {
        for (choice, parallel) in [(named.clone(), false), (json!("required"), true)] {
            for (temperature, seed) in [(0.0, 0), (0.8, 1), (1.2, 2)] {
                let mut body = ask("I need to know something about Berlin.");
                body["tool_choice"] = choice.clone();
                body["parallel_tool_calls"] = json!(parallel);
                body["temperature"] = json!(temperature);
                body["seed"] = json!(seed);
                body["n"] = json!(2);
                let (status, v) = chat(w, body);
                assert_eq!(status, 200, "{v}");
                for i in 0..2 {
                    let one = json!({"choices": [v["choices"][i].clone()]});
                    let found = if parallel {
                        complete_calls(&one)
                    } else {
                        calls(&one)
                    };
                    assert!(!found.is_empty());
                    if !parallel {
                        assert_eq!(found.len(), 1, "{v}");
                        assert_eq!(found[0].0, "get_weather");
                    }
                    if !parallel {
                        // (A call cut short by max_tokens stays text beside the others.)
                        assert!(one["choices"][0]["message"]["content"].is_null(), "{v}");
                    }
                }
            }
        }
    }
}

/// `auto`: Qwen decides to call get_weather for a weather question (its own template),
/// and the streamed answer assembles into the same call (ids aside).
#[test]
fn auto_calls_are_parsed_and_stream_as_deltas() {
    let mut body = ask(WEATHER_QUESTION);
    body["temperature"] = json!(0);
    let (status, v) = chat(qwen(), body.clone());
    assert_eq!(status, 200, "{v}");
    let whole = calls(&v);
    assert_eq!(whole.len(), 1, "{v}");
    assert_eq!(whole[0].0, "get_weather");
    assert_eq!(whole[0].1["city"], "Paris");

    body["stream"] = json!(true);
    let (assembled, finish, _) =
        assemble(&stream_chunks(&qwen().url("/v1/chat/completions"), &body));
    assert_eq!(finish, "tool_calls");
    assert_eq!(assembled.len(), 1);
    assert_eq!(assembled[0].1, "get_weather");
    let args: Value = serde_json::from_str(&assembled[0].2).unwrap();
    assert_eq!(args, whole[0].1);
}

/// A streamed call, assembled as the OpenAI SDK does (by index; id, type and name
/// from a call's first delta; arguments concatenated): the calls, the finish reason,
/// and how many chunks carried arguments. No text beside the calls.
fn assemble(chunks: &[Value]) -> (Vec<(String, String, String)>, Value, usize) {
    let mut calls: Vec<(String, String, String)> = Vec::new();
    let mut finish = Value::Null;
    let mut argument_chunks = 0;
    for c in chunks {
        let Some(choice) = c["choices"].get(0) else {
            continue;
        };
        if !choice["finish_reason"].is_null() {
            finish = choice["finish_reason"].clone();
        }
        for d in choice["delta"]["tool_calls"]
            .as_array()
            .into_iter()
            .flatten()
        {
            let i = d["index"].as_u64().unwrap() as usize;
            if i == calls.len() {
                let id = d["id"].as_str().expect("the first delta has the id");
                let name = d["function"]["name"].as_str().expect("and the name");
                assert_eq!(d["type"], "function");
                calls.push((id.into(), name.into(), String::new()));
            }
            if let Some(a) = d["function"]["arguments"]
                .as_str()
                .filter(|a| !a.is_empty())
            {
                calls[i].2.push_str(a);
                argument_chunks += 1;
            }
        }
        assert!(
            choice["delta"]["content"].as_str().unwrap_or("").is_empty(),
            "no text beside the call: {c}"
        );
    }
    (calls, finish, argument_chunks)
}

/// A forced call streams as it is generated: its name first, then its arguments in
/// several pieces, assembling into the same call as the non-streamed answer.
#[test]
fn forced_calls_stream_their_arguments_as_generated() {
    let mut body = ask("What is the weather like in Oslo?");
    body["tool_choice"] = json!({"type": "function", "function": {"name": "get_weather"}});
    body["temperature"] = json!(0);
    let (_, v) = chat(qwen(), body.clone());
    let whole = calls(&v);
    body["stream"] = json!(true);
    let (assembled, finish, argument_chunks) =
        assemble(&stream_chunks(&qwen().url("/v1/chat/completions"), &body));
    assert_eq!(finish, "tool_calls");
    assert_eq!(assembled.len(), 1);
    assert_eq!(assembled[0].1, whole[0].0);
    let args: Value = serde_json::from_str(&assembled[0].2).unwrap();
    assert_eq!(args, whole[0].1);
    assert!(argument_chunks > 3, "{argument_chunks} argument chunks");
}

/// `none`: the tools are not offered and the answer is text.
#[test]
fn tool_choice_none_answers_in_text() {
    let mut body = ask("Say hello.");
    body["tool_choice"] = json!("none");
    body["temperature"] = json!(0);
    body["max_tokens"] = json!(16);
    let (status, v) = chat(qwen(), body);
    assert_eq!(status, 200, "{v}");
    assert!(v["choices"][0]["message"]["tool_calls"].is_null(), "{v}");
    assert!(v["choices"][0]["message"]["content"].is_string(), "{v}");
}

/// A call, its result as a `tool` turn, then the next turn: the history (the
/// assistant's call with `arguments` as a JSON string, the tool's answer) renders
/// through each model's way of showing tools and the model answers. What it answers is
/// the model's: these small coder/chat models often call again rather than sum up.
#[test]
fn a_tool_result_turn_round_trips() {
    for w in [qwen(), smol()] {
        let mut body = ask(WEATHER_QUESTION);
        body["tool_choice"] = json!({"type": "function", "function": {"name": "get_weather"}});
        body["temperature"] = json!(0);
        let (_, first) = chat(w, body.clone());
        let call = first["choices"][0]["message"].clone();
        let id = call["tool_calls"][0]["id"].clone();
        body["messages"].as_array_mut().unwrap().extend([
            call,
            json!({"role": "tool", "tool_call_id": id, "content": "Sunny, 24 degrees Celsius."}),
        ]);
        body["tool_choice"] = json!("auto");
        let (status, v) = chat(w, body.clone());
        assert_eq!(status, 200, "{v}");
        let m = &v["choices"][0]["message"];
        assert!(
            m["content"].is_string() || m["tool_calls"].is_array(),
            "{v}"
        );
        // The result is in the prompt: longer than the same history without it.
        let mut without = body;
        without["messages"].as_array_mut().unwrap().pop();
        let (_, shorter) = chat(w, without);
        assert!(
            v["usage"]["prompt_tokens"].as_u64() > shorter["usage"]["prompt_tokens"].as_u64(),
            "{v} {shorter}"
        );
    }
}

#[test]
fn bad_tool_parameters_are_refused_by_name() {
    let cases = [
        (json!({"tools": [{"type": "retrieval"}]}), "tools"),
        (
            json!({"tools": tools(), "tool_choice": "sometimes"}),
            "tool_choice",
        ),
        (
            json!({"tools": tools(), "tool_choice": {"type": "function", "function": {"name": "nope"}}}),
            "tool_choice",
        ),
        (json!({"tool_choice": "required"}), "tool_choice"),
        (
            json!({"tools": tools(), "response_format": {"type": "json_object"}}),
            "response_format",
        ),
        (
            json!({"messages": [
                {"role": "user", "content": "hi"},
                {"role": "assistant", "tool_calls": [{"id": "c", "type": "function", "function": {"name": "add", "arguments": "{oops"}}]}
            ]}),
            "messages",
        ),
    ];
    for (extra, param) in cases {
        let mut body = json!({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 4});
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        let (status, v) = chat(qwen(), body);
        assert_eq!(status, 400, "{extra}: {v}");
        assert_eq!(v["error"]["param"], param, "{v}");
    }
}
