use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{json, Value};

use super::*;

/// Reads `json` as a `T` and checks that writing it back gives the same JSON (every
/// field, nulls included; key order aside).
fn roundtrip<T: Serialize + DeserializeOwned>(json: &str) -> T {
    let t: T = serde_json::from_str(json).unwrap_or_else(|e| panic!("{e}: {json}"));
    let back = serde_json::to_value(&t).unwrap();
    let want: Value = serde_json::from_str(json).unwrap();
    assert_eq!(back, want);
    t
}

fn execution() -> SurgeExecution {
    SurgeExecution {
        queue_seconds: 0.0005,
        execution_seconds: 0.25,
        time_to_first_token_seconds: 0.0625,
        sequences: 1,
    }
}

fn chunk(choices: Vec<ChatChunkChoice>) -> ChatCompletionChunk {
    ChatCompletionChunk::new(
        ChatCompletionChunk::OBJECT,
        "chatcmpl-00000000000000010000000000000002",
        1733400000,
        "smollm2-135m-instruct",
        choices,
    )
}

// The JSON below is what the LLM worker's respond.rs wrote with `json!` before these
// types existed.

#[test]
fn chat_completion_as_the_worker_writes_it() {
    let json = r#"{"id":"chatcmpl-00000000000000010000000000000002","object":"chat.completion",
        "created":1733400000,"model":"smollm2-135m-instruct","system_fingerprint":null,
        "choices":[{"index":0,"message":{"role":"assistant","content":"Paris.","refusal":null},
                    "logprobs":null,"finish_reason":"stop"}],
        "usage":{"prompt_tokens":31,"completion_tokens":3,"total_tokens":34},
        "surge_execution":{"queue_seconds":0.0005,"execution_seconds":0.25,
                           "time_to_first_token_seconds":0.0625,"sequences":1}}"#;
    let c: ChatCompletion = roundtrip(json);
    let built = ChatCompletion {
        id: "chatcmpl-00000000000000010000000000000002".into(),
        object: ChatCompletion::OBJECT.into(),
        created: 1733400000,
        model: "smollm2-135m-instruct".into(),
        system_fingerprint: None,
        choices: vec![ChatChoice {
            index: 0,
            message: AssistantMessage::text("Paris."),
            logprobs: None,
            finish_reason: Some(FinishReason::Stop),
        }],
        usage: Some(Usage::new(31, 3)),
        surge_execution: Some(execution()),
        surge_meter: None,
    };
    assert_eq!(c, built);
}

#[test]
fn chat_logprobs_as_the_worker_writes_them() {
    let json = r#"{"id":"chatcmpl-1","object":"chat.completion","created":1,"model":"m",
        "system_fingerprint":null,
        "choices":[{"index":1,"message":{"role":"assistant","content":" Paris","refusal":null},
          "logprobs":{"content":[{"token":" Paris","logprob":-0.125,"bytes":[32,80,97,114,105,115],
             "top_logprobs":[{"token":" Paris","logprob":-0.125,"bytes":[32,80,97,114,105,115]},
                             {"token":"é","logprob":-2.5,"bytes":[195,169]}]}]},
          "finish_reason":"length"}],
        "usage":{"prompt_tokens":2,"completion_tokens":1,"total_tokens":3},
        "surge_execution":{"queue_seconds":0.0,"execution_seconds":0.5,
                           "time_to_first_token_seconds":0.0,"sequences":2}}"#;
    let c: ChatCompletion = roundtrip(json);
    let lp = c.choices[0].logprobs.as_ref().unwrap();
    assert_eq!(
        lp.content[0],
        ChatTokenLogprob::new(
            " Paris",
            -0.125,
            vec![
                TopLogprob::new(" Paris", -0.125),
                TopLogprob::new("é", -2.5)
            ]
        )
    );
    assert_eq!(c.choices[0].finish_reason, Some(FinishReason::Length));
}

#[test]
fn minus_infinity_logprobs_are_written_as_null_and_read_back() {
    let t = TopLogprob::new("x", f64::NEG_INFINITY);
    let v = serde_json::to_value(&t).unwrap();
    assert_eq!(v["logprob"], Value::Null);
    let back: TopLogprob = serde_json::from_value(v).unwrap();
    assert_eq!(back.logprob, f64::NEG_INFINITY);
}

#[test]
fn chat_stream_chunks_as_the_worker_writes_them() {
    let head = r#""id":"chatcmpl-00000000000000010000000000000002","object":"chat.completion.chunk",
        "created":1733400000,"model":"smollm2-135m-instruct","system_fingerprint":null"#;
    // The role chunk each choice opens with.
    let role: ChatCompletionChunk = roundtrip(&format!(
        r#"{{{head},"choices":[{{"index":0,"delta":{{"role":"assistant","content":""}},
            "logprobs":null,"finish_reason":null}}]}}"#
    ));
    assert_eq!(role, chunk(vec![ChatChunkChoice::opening(0)]));
    assert!(!role.has_token() && !role.is_usage());
    // Content.
    let content: ChatCompletionChunk = roundtrip(&format!(
        r#"{{{head},"choices":[{{"index":0,"delta":{{"content":" Paris"}},
            "logprobs":null,"finish_reason":null}}]}}"#
    ));
    assert!(content.has_token() && !content.is_usage());
    // Content with logprobs.
    let with_lp: ChatCompletionChunk = roundtrip(&format!(
        r#"{{{head},"choices":[{{"index":0,"delta":{{"content":"!"}},
            "logprobs":{{"content":[{{"token":"!","logprob":-0.5,"bytes":[33],"top_logprobs":[]}}]}},
            "finish_reason":null}}]}}"#
    ));
    assert_eq!(
        with_lp.choices[0].logprobs.as_ref().unwrap().content.len(),
        1
    );
    // The finish chunk: empty delta.
    let finish: ChatCompletionChunk = roundtrip(&format!(
        r#"{{{head},"choices":[{{"index":0,"delta":{{}},"logprobs":null,"finish_reason":"stop"}}]}}"#
    ));
    assert_eq!(finish.choices[0].delta, ChatDelta::default());
    assert!(!finish.has_token() && !finish.is_usage());
    // The usage chunk.
    let usage: ChatCompletionChunk = roundtrip(&format!(
        r#"{{{head},"choices":[],
            "usage":{{"prompt_tokens":31,"completion_tokens":3,"total_tokens":34}},
            "surge_execution":{{"queue_seconds":0.0005,"execution_seconds":0.25,
                                "time_to_first_token_seconds":0.0625,"sequences":1}}}}"#
    ));
    assert!(usage.is_usage() && !usage.has_token());
    let mut built = chunk(vec![]);
    built.usage = Some(Usage::new(31, 3));
    built.surge_execution = Some(execution());
    assert_eq!(usage, built);
}

#[test]
fn tool_call_deltas_count_as_tokens_and_are_left_out_when_unset() {
    let mut c = chunk(vec![ChatChunkChoice {
        index: 0,
        delta: ChatDelta {
            tool_calls: Some(vec![ToolCallDelta {
                index: 0,
                id: Some("call_1".into()),
                kind: Some("function".into()),
                function: Some(FunctionCallDelta {
                    name: Some("get_weather".into()),
                    arguments: None,
                }),
            }]),
            ..ChatDelta::default()
        },
        logprobs: None,
        finish_reason: None,
    }]);
    assert!(c.has_token());
    let v = serde_json::to_value(&c).unwrap();
    assert_eq!(
        v["choices"][0]["delta"],
        json!({"tool_calls": [{"index": 0, "id": "call_1", "type": "function",
                               "function": {"name": "get_weather"}}]})
    );
    c.choices[0].delta.tool_calls = Some(vec![]);
    assert!(!c.has_token());
    let m = serde_json::to_value(AssistantMessage::text("hi")).unwrap();
    assert_eq!(
        m,
        json!({"role": "assistant", "content": "hi", "refusal": null})
    );
}

#[test]
fn text_completion_and_its_chunks_as_the_worker_writes_them() {
    let head = r#""id":"cmpl-00000000000000010000000000000002","object":"text_completion",
        "created":1733400000,"model":"smollm2-135m-instruct","system_fingerprint":null"#;
    let full: TextCompletion = roundtrip(&format!(
        r#"{{{head},"choices":[{{"index":0,"text":" Paris is","finish_reason":"length",
            "logprobs":{{"tokens":[" Paris"," is"],"token_logprobs":[-0.25,-1.0],
                         "top_logprobs":[{{" Paris":-0.25," Lyon":-3.0}},{{" is":-1.0}}],
                         "text_offset":[0,6]}}}}],
            "usage":{{"prompt_tokens":4,"completion_tokens":2,"total_tokens":6}},
            "surge_execution":{{"queue_seconds":0.0,"execution_seconds":0.125,
                                "time_to_first_token_seconds":0.0625,"sequences":1}}}}"#
    ));
    assert_eq!(full.object, TextCompletion::OBJECT);
    assert_eq!(
        full.choices[0].logprobs.as_ref().unwrap().text_offset,
        [0, 6]
    );
    let content: TextCompletionChunk = roundtrip(&format!(
        r#"{{{head},"choices":[{{"index":1,"text":" Paris","logprobs":null,"finish_reason":null}}]}}"#
    ));
    assert!(content.has_token() && !content.is_usage());
    let finish: TextCompletionChunk = roundtrip(&format!(
        r#"{{{head},"choices":[{{"index":1,"text":"","logprobs":null,"finish_reason":"stop"}}]}}"#
    ));
    assert!(!finish.has_token() && !finish.is_usage());
    let usage: TextCompletionChunk = roundtrip(&format!(
        r#"{{{head},"choices":[],"usage":{{"prompt_tokens":4,"completion_tokens":2,"total_tokens":6}},
            "surge_execution":{{"queue_seconds":0.0,"execution_seconds":0.125,
                                "time_to_first_token_seconds":0.0625,"sequences":1}}}}"#
    ));
    assert!(usage.is_usage() && !usage.has_token());
}

#[test]
fn stream_chunks_of_either_endpoint_are_told_apart() {
    let chat: StreamChunk =
        serde_json::from_str(r#"{"choices":[{"delta":{"content":"Hi"}}]}"#).unwrap();
    assert!(matches!(chat, StreamChunk::Chat(_)));
    assert!(chat.has_token());
    assert_eq!(chat.text(), "Hi");
    let text: StreamChunk =
        serde_json::from_str(r#"{"object":"text_completion","choices":[{"text":" Paris"}]}"#)
            .unwrap();
    assert!(matches!(text, StreamChunk::Text(_)));
    assert_eq!(text.text(), " Paris");
    let role: StreamChunk = serde_json::from_str(
        r#"{"choices":[{"delta":{"role":"assistant","content":""},"finish_reason":null}]}"#,
    )
    .unwrap();
    assert!(!role.has_token());
    let usage: StreamChunk = serde_json::from_str(
        r#"{"object":"text_completion","choices":[],"usage":{"prompt_tokens":5,"completion_tokens":7}}"#,
    )
    .unwrap();
    assert!(usage.is_usage() && !usage.has_token());
    assert_eq!(usage.usage().unwrap().completion_tokens, 7);
    // A null usage is no usage; an error event is no chunk.
    let delta: StreamChunk =
        serde_json::from_str(r#"{"choices":[{"delta":{"content":"usage"}}],"usage":null}"#)
            .unwrap();
    assert!(!delta.is_usage());
    assert!(serde_json::from_str::<StreamChunk>(
        r#"{"error":{"message":"worker crashed","type":"server_error"}}"#
    )
    .is_err());
    // Other servers' finish reasons and extra fields read fine.
    let other: StreamChunk = serde_json::from_str(
        r#"{"choices":[{"index":0,"delta":{},"finish_reason":"eos"}],"timings":{"n":1}}"#,
    )
    .unwrap();
    let StreamChunk::Chat(c) = other else {
        panic!("not chat")
    };
    assert_eq!(c.choices[0].finish_reason, Some(FinishReason::Other));
}

// The JSON below is what the Whisper worker's format.rs wrote with `json!`.

#[test]
fn transcriptions_as_the_worker_writes_them() {
    let exec = r#"{"queue_seconds":0.25,"execution_seconds":1.5,"audio_seconds":3662.25,"decode_seconds":0.01}"#;
    let t: Transcription = roundtrip(&format!(
        r#"{{"text":"Hello there.","usage":{{"type":"duration","seconds":3663}},"surge_execution":{exec}}}"#
    ));
    assert_eq!(t.usage, Some(TranscriptionUsage::duration(3662.25)));
    let v: VerboseTranscription = roundtrip(&format!(
        r#"{{"task":"transcribe","language":"english","duration":3662.25,"text":"Hello there.",
            "segments":[{{"id":0,"seek":0,"start":0.0,"end":2.5,"text":" Hello there.",
                          "tokens":[50363,383],"temperature":0.0,"avg_logprob":-0.25,
                          "compression_ratio":1.2,"no_speech_prob":0.01}}],
            "usage":{{"type":"duration","seconds":3663}},"surge_execution":{exec}}}"#
    ));
    assert_eq!(v.segments[0].tokens, [50363, 383]);
    // Seconds are whole, rounded up; another usage kind reads as Other.
    assert_eq!(TranscriptionUsage::duration(2.0).seconds(), Some(2));
    assert_eq!(TranscriptionUsage::duration(2.01).seconds(), Some(3));
    assert_eq!(TranscriptionUsage::duration(-1.0).seconds(), Some(0));
    let other: TranscriptionUsage =
        serde_json::from_str(r#"{"type":"tokens","input_tokens":3}"#).unwrap();
    assert_eq!(other, TranscriptionUsage::Other);
    // Other servers' plain `{"text"}` reads too.
    let plain: Transcription = serde_json::from_str(r#"{"text":"hi"}"#).unwrap();
    assert_eq!(plain.usage, None);
    assert_eq!(serde_json::to_value(&plain).unwrap(), json!({"text": "hi"}));
}

#[test]
fn model_list_as_the_worker_writes_it() {
    let l: ModelList = roundtrip(
        r#"{"object":"list","data":[{"id":"whisper-tiny.en","object":"model","created":0,"owned_by":"surge"},
                                    {"id":"whisper-1","object":"model","created":0,"owned_by":"surge"}]}"#,
    );
    assert_eq!(
        l,
        ModelList::new(vec![
            Model::new("whisper-tiny.en", 0, "surge"),
            Model::new("whisper-1", 0, "surge")
        ])
    );
}

#[test]
fn requests_read_every_shape_and_ignore_unknown_fields() {
    let r: ChatCompletionRequest = serde_json::from_str(
        r#"{"model":"m","messages":[{"role":"user","content":"hi"},
            {"role":"user","content":[{"type":"text","text":"a"},{"type":"image_url"}]}],
            "max_tokens":5,"stop":"x","stream":true,"stream_options":{"include_usage":true},
            "logprobs":true,"top_logprobs":2,"logit_bias":{"42":-100},"tools":[],"ignore_eos":true}"#,
    )
    .unwrap();
    assert_eq!(r.messages.as_ref().unwrap().len(), 2);
    assert!(matches!(
        r.messages.as_ref().unwrap()[1].content,
        Some(ContentIn::Parts(ref p)) if p.len() == 2 && p[1].text.is_none()
    ));
    assert!(matches!(r.common.stop, Some(StopIn::One(ref s)) if s == "x"));
    assert!(r.common.stream && r.common.ignore_eos);
    assert!(r.common.stream_options.unwrap().include_usage);
    assert_eq!((r.logprobs, r.top_logprobs), (Some(true), Some(2)));
    let r: CompletionRequest =
        serde_json::from_str(r#"{"prompt":"text","logprobs":3,"echo":false}"#).unwrap();
    assert!(matches!(r.prompt, Some(PromptIn::Text(_))));
    assert_eq!((r.logprobs, r.echo), (Some(3), Some(false)));
    let r: CompletionRequest = serde_json::from_str(r#"{"prompt":[1,2]}"#).unwrap();
    assert!(matches!(r.prompt, Some(PromptIn::Tokens(_))));
    let r: CompletionRequest = serde_json::from_str(r#"{"prompt":[[1],[2,3]]}"#).unwrap();
    assert!(matches!(r.prompt, Some(PromptIn::TokenLists(_))));
    let r: CompletionRequest = serde_json::from_str(r#"{"prompt":["a"]}"#).unwrap();
    assert!(matches!(r.prompt, Some(PromptIn::Texts(_))));
    // A wrong type is an error, not a default.
    assert!(serde_json::from_str::<ChatCompletionRequest>(r#"{"max_tokens":"5"}"#).is_err());
    assert!(serde_json::from_str::<ChatCompletionRequest>(r#"{"stream":null}"#).is_err());
}

#[test]
fn requests_write_only_what_is_set() {
    let r = ChatCompletionRequest {
        model: Some("m".into()),
        messages: Some(vec![ChatMessageIn::text("user", "hi")]),
        common: CommonParams {
            max_tokens: Some(5),
            stream: true,
            stream_options: Some(StreamOptions {
                include_usage: true,
            }),
            ..CommonParams::default()
        },
        ..ChatCompletionRequest::default()
    };
    assert_eq!(
        serde_json::to_value(&r).unwrap(),
        json!({"model": "m", "messages": [{"role": "user", "content": "hi"}],
               "max_tokens": 5, "stream": true, "stream_options": {"include_usage": true}})
    );
    let back: ChatCompletionRequest =
        serde_json::from_value(serde_json::to_value(&r).unwrap()).unwrap();
    assert_eq!(back.common.max_tokens, Some(5));
}
