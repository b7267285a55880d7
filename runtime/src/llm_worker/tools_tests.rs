use serde_json::json;

use super::*;

fn weather() -> Value {
    json!([{"type": "function", "function": {
        "name": "get_weather",
        "description": "Weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 20}}, "required": ["city"], "additionalProperties": false}
    }}, {"type": "function", "function": {"name": "now"}}])
}

fn param(e: ApiError) -> Option<String> {
    match e {
        ApiError::InvalidRequest { param, .. } => param,
        other => panic!("{other:?}"),
    }
}

#[test]
fn tools_and_choices_are_read() {
    let t = tool_set(Some(&weather()), None, None).unwrap().unwrap();
    assert_eq!(t.names, ["get_weather", "now"]);
    assert_eq!(t.choice, ToolChoice::Auto);
    assert!(t.parallel);
    // A function without parameters takes an empty object.
    assert_eq!(
        t.tools[1]["function"]["parameters"],
        json!({"type": "object", "properties": {}, "additionalProperties": false})
    );
    let named = json!({"type": "function", "function": {"name": "now"}});
    let t = tool_set(Some(&weather()), Some(&named), Some(false))
        .unwrap()
        .unwrap();
    assert_eq!(t.choice, ToolChoice::Named("now".into()));
    assert!(!t.parallel);
    for (c, want) in [
        ("none", ToolChoice::None),
        ("auto", ToolChoice::Auto),
        ("required", ToolChoice::Required),
    ] {
        let t = tool_set(Some(&weather()), Some(&json!(c)), None).unwrap();
        assert_eq!(t.unwrap().choice, want);
    }
    assert!(tool_set(None, None, None).unwrap().is_none());
    assert!(tool_set(None, Some(&json!("none")), None)
        .unwrap()
        .is_none());
}

#[test]
fn bad_tools_and_choices_are_refused_by_name() {
    let cases = [
        (json!({"a": 1}), None, "tools"),
        (json!([{"type": "code_interpreter"}]), None, "tools"),
        (
            json!([{"type": "function", "function": {"name": "a b"}}]),
            None,
            "tools",
        ),
        (
            json!([{"type": "function", "function": {"name": "f", "parameters": "x"}}]),
            None,
            "tools",
        ),
        (
            json!([{"type": "function", "function": {"name": "f"}}, {"type": "function", "function": {"name": "f"}}]),
            None,
            "tools",
        ),
        (weather(), Some(json!("always")), "tool_choice"),
        (
            weather(),
            Some(json!({"type": "function", "function": {"name": "nope"}})),
            "tool_choice",
        ),
        (weather(), Some(json!({"type": "function"})), "tool_choice"),
        (json!([]), Some(json!("required")), "tool_choice"),
    ];
    for (tools, choice, want) in cases {
        let e = tool_set(Some(&tools), choice.as_ref(), None).expect_err("refused");
        assert_eq!(param(e).as_deref(), Some(want), "{tools} {choice:?}");
    }
}

#[test]
fn history_calls_take_arguments_as_objects() {
    let calls = json!([{"id": "call_1", "type": "function",
        "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}}]);
    let got = history_calls(2, Some(&calls)).unwrap().unwrap();
    assert_eq!(got[0]["function"]["arguments"], json!({"city": "Paris"}));
    assert_eq!(got[0]["id"], "call_1");
    let bad = json!([{"function": {"name": "f", "arguments": "{oops"}}]);
    let e = history_calls(2, Some(&bad)).expect_err("bad arguments");
    assert_eq!(param(e).as_deref(), Some("messages"));
}

#[test]
fn templates_without_tools_get_the_fallback_turns() {
    let t = tool_set(Some(&weather()), None, None).unwrap().unwrap();
    let mut call = ChatMessage::new("assistant", "");
    call.tool_calls = history_calls(
        1,
        Some(&json!([{"id": "c", "type": "function",
        "function": {"name": "get_weather", "arguments": "{\"city\": \"Oslo\"}"}}])),
    )
    .unwrap();
    let messages = vec![
        ChatMessage::new("user", "Weather in Oslo and Rome?"),
        call,
        ChatMessage::new("tool", "sunny"),
        ChatMessage::new("tool", "rainy"),
    ];
    let out = without_tool_turns(messages, Some(&t.tools));
    let roles: Vec<&str> = out.iter().map(|m| m.role.as_str()).collect();
    assert_eq!(roles, ["system", "user", "assistant", "user"]);
    assert!(
        out[0].content.contains("\"name\":\"get_weather\""),
        "{}",
        out[0].content
    );
    assert_eq!(
        out[2].content,
        "<tool_call>\n{\"name\":\"get_weather\",\"arguments\":{\"city\":\"Oslo\"}}\n</tool_call>"
    );
    assert_eq!(
        out[3].content,
        "<tool_response>\nsunny\n</tool_response>\n<tool_response>\nrainy\n</tool_response>"
    );
}

/// The forced-call grammar on a real vocabulary, driven by random logits: whatever the
/// model prefers, the output is a call of an allowed function with valid arguments.
#[test]
fn forced_calls_always_parse() {
    use crate::llm::test_support::test_gguf_path;
    use crate::llm::{GgufFile, Grammars, Tokenizer};
    use rand::{Rng, SeedableRng};

    let tok = Tokenizer::from_gguf(&GgufFile::open(test_gguf_path()).unwrap()).unwrap();
    let eos = [tok.eos_token_id().unwrap()];
    let grammars = Grammars::new(tok.clone(), tok.vocab_size(), &eos);
    let choice = json!({"type": "function", "function": {"name": "get_weather"}});
    for (choice, parallel) in [(json!("required"), true), (choice, false)] {
        let t = tool_set(Some(&weather()), Some(&choice), Some(parallel))
            .unwrap()
            .unwrap();
        let mut c = grammars.compile(&t.grammar().unwrap()).unwrap();
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let mut out = Vec::new();
        let mut done = false;
        for _ in 0..300 {
            let mut row: Vec<f32> = (0..tok.vocab_size()).map(|_| rng.random()).collect();
            c.mask(&mut row).unwrap();
            let best = (0..row.len())
                .max_by(|&a, &b| row[a].total_cmp(&row[b]))
                .unwrap() as u32;
            if eos.contains(&best) {
                done = true;
                break;
            }
            out.push(best);
            if c.advance(best).unwrap() {
                done = true;
                break;
            }
        }
        let text = tok.decode(&out, false).unwrap();
        assert!(done, "{text}");
        let (content, calls) = super::super::tool_calls::split(&t.names, &text);
        assert!(!calls.is_empty() && content.is_none(), "{text}");
        if !parallel {
            assert_eq!(calls.len(), 1);
            assert_eq!(calls[0].function.name, "get_weather");
            let args: Value = serde_json::from_str(&calls[0].function.arguments).unwrap();
            assert!(args["city"].is_string(), "{text}");
        }
    }
}
