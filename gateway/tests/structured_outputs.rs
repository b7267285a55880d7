//! Structured outputs end to end: `response_format` on a real `surge worker` (SmolLM2),
//! constrained by the model's own vocabulary. Whatever the seed and temperature, the
//! output parses and validates; constrained and free sequences share batches without
//! changing each other's output; what cannot be honoured is refused by name.

mod support;

use std::sync::OnceLock;

use serde_json::{json, Value};
use support::http::{post, stream_chunks};
use support::worker::{Worker, LLM};

fn worker() -> &'static Worker {
    static W: OnceLock<Worker> = OnceLock::new();
    W.get_or_init(|| Worker::start(LLM, &[]))
}

fn chat(body: Value) -> (u16, Value) {
    post(&worker().url("/v1/chat/completions"), &body)
}

fn schema_format(name: &str, schema: &Value) -> Value {
    json!({"type": "json_schema", "json_schema": {"name": name, "schema": schema, "strict": true}})
}

/// Checks `v` against the JSON Schema subset the tests use (type, properties, required,
/// additionalProperties: false, items, enum, minItems/maxItems); the path in the error.
fn validate(v: &Value, schema: &Value, path: &str) -> Result<(), String> {
    if let Some(options) = schema.get("enum").and_then(Value::as_array) {
        if !options.contains(v) {
            return Err(format!("{path}: {v} not in {schema}"));
        }
    }
    let fits = match schema.get("type").and_then(Value::as_str) {
        None => true,
        Some("object") => v.is_object(),
        Some("array") => v.is_array(),
        Some("string") => v.is_string(),
        Some("integer") => v.is_i64() || v.is_u64(),
        Some("number") => v.is_number(),
        Some("boolean") => v.is_boolean(),
        Some("null") => v.is_null(),
        Some(t) => return Err(format!("test schema type {t}")),
    };
    if !fits {
        return Err(format!("{path}: {v} is not a {}", schema["type"]));
    }
    if let Some(o) = v.as_object() {
        let props = schema.get("properties").and_then(Value::as_object);
        for r in schema["required"].as_array().into_iter().flatten() {
            if !o.contains_key(r.as_str().unwrap()) {
                return Err(format!("{path}: missing {r}"));
            }
        }
        for (k, x) in o {
            match props.and_then(|p| p.get(k)) {
                Some(s) => validate(x, s, &format!("{path}.{k}"))?,
                None if schema["additionalProperties"] == false => {
                    return Err(format!("{path}: unexpected {k}"))
                }
                None => {}
            }
        }
    }
    if let Some(a) = v.as_array() {
        let n = a.len() as u64;
        if schema["minItems"].as_u64().is_some_and(|m| n < m)
            || schema["maxItems"].as_u64().is_some_and(|m| n > m)
        {
            return Err(format!("{path}: {n} items"));
        }
        if let Some(items) = schema.get("items") {
            for (i, x) in a.iter().enumerate() {
                validate(x, items, &format!("{path}[{i}]"))?;
            }
        }
    }
    Ok(())
}

fn schemas() -> Vec<(&'static str, &'static str, Value)> {
    vec![
        (
            "person",
            "Describe a fictional person as JSON.",
            json!({
                "type": "object",
                "properties": {
                    "name": {"type": "string", "maxLength": 40},
                    "age": {"type": "integer", "minimum": 0, "maximum": 120},
                    "email": {"type": "string", "maxLength": 60}
                },
                "required": ["name", "age"],
                "additionalProperties": false
            }),
        ),
        (
            "order",
            "Write a small pizza order as JSON.",
            json!({
                "type": "object",
                "properties": {
                    "size": {"enum": ["small", "medium", "large"]},
                    "toppings": {"type": "array", "items": {"type": "string", "maxLength": 20}, "minItems": 1, "maxItems": 4},
                    "delivery": {"type": "boolean"},
                    "address": {
                        "type": "object",
                        "properties": {
                            "street": {"type": "string", "maxLength": 40},
                            "zip": {"type": "string", "pattern": "^[0-9]{5}$"}
                        },
                        "required": ["street", "zip"],
                        "additionalProperties": false
                    }
                },
                "required": ["size", "toppings", "delivery", "address"],
                "additionalProperties": false
            }),
        ),
        (
            "scores",
            "List three students and their test scores as JSON.",
            json!({
                "type": "object",
                "properties": {
                    "students": {
                        "type": "array",
                        "minItems": 1,
                        "maxItems": 3,
                        "items": {
                            "type": "object",
                            "properties": {
                                "name": {"type": "string", "maxLength": 20},
                                "score": {"type": "number"},
                                "grade": {"enum": ["A", "B", "C", "D", "F"]}
                            },
                            "required": ["name", "score", "grade"],
                            "additionalProperties": false
                        }
                    }
                },
                "required": ["students"],
                "additionalProperties": false
            }),
        ),
    ]
}

/// Every schema, at several temperatures and seeds (4 choices per request, so
/// constrained sequences also batch with each other): the output always parses and
/// validates, and stops by itself (`finish_reason: stop`) well inside max_tokens.
#[test]
fn schema_constrained_output_always_parses_and_validates() {
    for (name, prompt, schema) in schemas() {
        for (temperature, seed) in [(0.0, 0), (0.7, 1), (1.0, 2), (1.3, 3)] {
            let (status, body) = chat(json!({
                "model": LLM,
                "messages": [{"role": "user", "content": prompt}],
                "response_format": schema_format(name, &schema),
                "temperature": temperature,
                "seed": seed,
                "n": 4,
                "max_tokens": 200,
            }));
            assert_eq!(status, 200, "{body}");
            for c in body["choices"].as_array().unwrap() {
                let text = c["message"]["content"].as_str().unwrap();
                assert_eq!(c["finish_reason"], "stop", "{name} t={temperature}: {text}");
                let v: Value = serde_json::from_str(text)
                    .unwrap_or_else(|e| panic!("{name} t={temperature}: {e}: {text}"));
                validate(&v, &schema, "$")
                    .unwrap_or_else(|e| panic!("{name} t={temperature}: {e}: {text}"));
            }
        }
    }
}

#[test]
fn json_object_mode_gives_an_object() {
    let (status, body) = chat(json!({
        "model": LLM,
        // SmolLM2 needs a system message to answer sensibly (without one its greedy
        // object can repeat an array entry until max_tokens).
        "messages": [
            {"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": "Give me a JSON object describing a cat."},
        ],
        "response_format": {"type": "json_object"},
        "temperature": 0,
        "max_tokens": 200,
    }));
    assert_eq!(status, 200, "{body}");
    let text = body["choices"][0]["message"]["content"].as_str().unwrap();
    assert_eq!(body["choices"][0]["finish_reason"], "stop", "{text}");
    let v: Value = serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}"));
    assert!(v.is_object(), "{text}");
}

/// A constrained and a free request decoded together give what each gives alone
/// (greedy): the mask touches only its own sequence's logits.
#[test]
fn constrained_and_free_sequences_share_a_batch_unchanged() {
    let (_, _, schema) = &schemas()[0];
    let constrained = json!({
        "model": LLM,
        "messages": [{"role": "user", "content": "Describe a fictional person as JSON."}],
        "response_format": schema_format("person", schema),
        "temperature": 0,
        "max_tokens": 80,
    });
    let free = json!({
        "model": LLM,
        "messages": [{"role": "user", "content": "Write a haiku about the sea."}],
        "temperature": 0,
        "max_tokens": 40,
    });
    let alone: Vec<Value> = [&constrained, &free]
        .iter()
        .map(|b| chat((*b).clone()).1["choices"][0]["message"]["content"].clone())
        .collect();
    let together: Vec<Value> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..3)
            .flat_map(|_| [&constrained, &free])
            .map(|b| s.spawn(move || chat(b.clone()).1["choices"][0]["message"]["content"].clone()))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (i, got) in together.iter().enumerate() {
        assert_eq!(got, &alone[i % 2], "request {i} in the batch");
    }
}

#[test]
fn a_streamed_constrained_answer_is_the_same_json() {
    let (_, _, schema) = &schemas()[1];
    let body = json!({
        "model": LLM,
        "messages": [{"role": "user", "content": "Write a small pizza order as JSON."}],
        "response_format": schema_format("order", schema),
        "temperature": 0,
        "max_tokens": 200,
    });
    let (_, whole) = chat(body.clone());
    let mut streamed = body;
    streamed["stream"] = json!(true);
    let chunks = stream_chunks(&worker().url("/v1/chat/completions"), &streamed);
    let text: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(
        text, whole["choices"][0]["message"]["content"],
        "{chunks:?}"
    );
    validate(&serde_json::from_str(&text).unwrap(), schema, "$").unwrap();
}

/// Formats and schemas that cannot be honoured get a 400 naming `response_format`, other
/// unsupported parameters a 400 naming them, and the worker goes on serving.
#[test]
fn unusable_formats_are_refused_by_name() {
    for format in [
        json!({"type": "yaml"}),
        json!({"type": "json_schema"}),
        json!({"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "banana"}}}),
        // A keyword the grammar engine does not implement is refused, never dropped.
        json!({"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "array", "uniqueItems": true}}}),
        json!({"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "string", "pattern": "("}}}),
    ] {
        let (status, body) = chat(json!({
            "model": LLM,
            "messages": [{"role": "user", "content": "hi"}],
            "response_format": format,
            "max_tokens": 5,
        }));
        assert_eq!(status, 400, "{format}: {body}");
        assert_eq!(body["error"]["param"], "response_format", "{body}");
        assert_eq!(body["error"]["type"], "invalid_request_error", "{body}");
    }
    // OpenAI parameters surge cannot honour are refused by name, not dropped.
    for (name, value) in [
        ("functions", json!([{"name": "f"}])),
        ("modalities", json!(["text", "audio"])),
        ("store", json!(true)),
    ] {
        let mut body = json!({"model": LLM, "messages": [{"role": "user", "content": "hi"}]});
        body[name] = value;
        let (status, v) = chat(body);
        assert_eq!(status, 400, "{v}");
        assert_eq!(v["error"]["param"], name, "{v}");
    }
    // Accepted: `user` (recorded in traces), text-only modalities, vendor extensions.
    let (status, v) = chat(json!({
        "model": LLM,
        "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": 2,
        "user": "user-1234",
        "modalities": ["text"],
        "some_vendor_extension": {"x": 1},
    }));
    assert_eq!(status, 200, "{v}");
}
