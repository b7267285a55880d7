//! Tests of the response and stream shapes, field for field.

use serde_json::{json, Value};

use super::*;

fn lps() -> Vec<TokenLogprob> {
    vec![
        TokenLogprob {
            token: " Paris".into(),
            logprob: -0.1,
            top: vec![(" Paris".into(), -0.1), ("é".into(), -2.3)],
        },
        TokenLogprob {
            token: ".".into(),
            logprob: f32::NEG_INFINITY,
            top: vec![],
        },
    ]
}

/// The typed logprobs are what the `json!` ones before them were, f32 digits included
/// (widened to f64, `-inf` as null).
#[test]
fn logprobs_are_unchanged_from_the_json_macro() {
    let lps = lps();
    let chat = serde_json::to_value(chat_logprobs(&lps)).unwrap();
    let before: Vec<Value> = lps
        .iter()
        .map(|l| {
            json!({
                "token": l.token,
                "logprob": l.logprob,
                "bytes": l.token.as_bytes(),
                "top_logprobs": l.top.iter().map(|(t, p)| json!({"token": t, "logprob": p, "bytes": t.as_bytes()})).collect::<Vec<_>>(),
            })
        })
        .collect();
    assert_eq!(chat, json!({ "content": before }));
    assert_eq!(
        chat["content"][0]["logprob"].to_string(),
        "-0.10000000149011612"
    );
    assert_eq!(chat["content"][1]["logprob"], Value::Null);

    let legacy = serde_json::to_value(completion_logprobs(&lps, 3)).unwrap();
    let before = json!({
        "tokens": lps.iter().map(|l| l.token.clone()).collect::<Vec<_>>(),
        "token_logprobs": lps.iter().map(|l| l.logprob).collect::<Vec<_>>(),
        "top_logprobs": lps.iter().map(|l| l.top.iter().map(|(t, p)| (t.clone(), json!(p))).collect::<serde_json::Map<_, _>>()).collect::<Vec<_>>(),
        "text_offset": [3, 9],
    });
    assert_eq!(legacy, before);
}

#[test]
fn usage_sums_sequences_and_execution_takes_the_worst_queue_and_first_token() {
    let seq = |completion, queue, exec, ttft| SeqUsage {
        prompt_tokens: 4,
        cached_tokens: 0,
        completion_tokens: completion,
        queue_seconds: queue,
        execution_seconds: exec,
        time_to_first_token: ttft,
        times: None,
    };
    let (u, e) = metering(8, &[seq(3, 0.5, 0.25, 0.75), seq(2, 0.25, 0.5, 0.5)]);
    let mut want = Usage::new(8, 5);
    want.prompt_tokens_details = Some(PromptTokensDetails { cached_tokens: 0 });
    assert_eq!(u, want);
    assert_eq!(u.total_tokens, 13);
    assert_eq!(
        e,
        SurgeExecution {
            queue_seconds: 0.5,
            execution_seconds: 0.75,
            time_to_first_token_seconds: 0.5,
            sequences: 2,
        }
    );
    assert_eq!(metering(1, &[]).1.time_to_first_token_seconds, 0.0);
}

fn reply(endpoint: Endpoint, logprobs: bool) -> Reply {
    let job = super::super::validate::Job {
        prompt: vec![1, 2, 3],
        max_new_tokens: 4,
        sampling: Default::default(),
        stop: vec![],
        index: 0,
        ignore_eos: false,
        constraint: None,
    };
    Reply::new(
        endpoint,
        "m",
        Validated {
            jobs: vec![job],
            stream: true,
            include_usage: false,
            prompt_tokens: 3,
            logprobs,
            tool_names: None,
            user: None,
        },
    )
}

fn events(logprobs: Vec<TokenLogprob>) -> UnboundedReceiver<SeqEvent> {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    // " there" was held back one token (stop matching): sent with the second token.
    for (text, tokens, secs) in [("Hi", 1, 0.125), ("", 2, 0.25), (" there", 2, 0.25)] {
        let logprobs = if text == "Hi" {
            logprobs.clone()
        } else {
            vec![]
        };
        tx.send(SeqEvent::Delta {
            text: text.into(),
            logprobs,
            so_far: Progress {
                completion_tokens: tokens,
                execution_seconds: secs,
            },
        })
        .unwrap();
    }
    let usage = SeqUsage {
        prompt_tokens: 3,
        cached_tokens: 0,
        completion_tokens: 2,
        queue_seconds: 0.5,
        execution_seconds: 0.25,
        time_to_first_token: 0.75,
        times: None,
    };
    tx.send(SeqEvent::Done {
        reason: FinishReason::Length,
        usage,
    })
    .unwrap();
    rx
}

/// The `data:` payloads of a response body.
async fn sse_data(resp: Response) -> Vec<String> {
    let body = axum::body::to_bytes(resp.into_body(), usize::MAX)
        .await
        .unwrap();
    String::from_utf8(body.to_vec())
        .unwrap()
        .lines()
        .filter_map(|l| l.strip_prefix("data: ").map(str::to_string))
        .collect()
}

/// The JSON of a chunk of `reply` of type `object`, with `extra`'s fields.
fn envelope_with(reply: &Reply, object: &str) -> impl Fn(Value) -> Value {
    let head = json!({"id": reply.id, "object": object,
                      "created": reply.created, "model": "m", "system_fingerprint": null});
    move |extra: Value| {
        let mut v = head.clone();
        for (k, x) in extra.as_object().unwrap() {
            v[k] = x.clone();
        }
        v
    }
}

fn meter(prompt: u64, completion: u64, secs: f64) -> Value {
    json!({"prompt_tokens": prompt, "completion_tokens": completion,
           "execution_seconds": secs})
}

/// What the stream wrote before the typed chunks, field for field, plus the running
/// `surge_meter` on the opening chunk and every token chunk.
#[tokio::test]
async fn chat_stream_is_the_same_json_as_before() {
    let reply = reply(Endpoint::Chat, false);
    let with = envelope_with(&reply, "chat.completion.chunk");
    let data = sse_data(stream(reply, vec![events(vec![])])).await;
    let want = [
        with(
            json!({"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""},
                                 "logprobs": null, "finish_reason": null}],
                   "surge_meter": meter(3, 0, 0.0)}),
        ),
        with(json!({"choices": [{"index": 0, "delta": {"content": "Hi"},
                                 "logprobs": null, "finish_reason": null}],
                    "surge_meter": meter(3, 1, 0.125)})),
        with(
            json!({"choices": [{"index": 0, "delta": {"content": " there"},
                                 "logprobs": null, "finish_reason": null}],
                   "surge_meter": meter(3, 2, 0.25)}),
        ),
        with(
            json!({"choices": [{"index": 0, "delta": {}, "logprobs": null,
                                 "finish_reason": "length"}]}),
        ),
        with(json!({"choices": [],
                    "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5,
                              "prompt_tokens_details": {"cached_tokens": 0}},
                    "surge_execution": {"queue_seconds": 0.5, "execution_seconds": 0.25,
                                        "time_to_first_token_seconds": 0.75, "sequences": 1}})),
    ];
    assert_eq!(data.len(), want.len() + 1, "{data:?}");
    for (got, want) in data.iter().zip(&want) {
        assert_eq!(&serde_json::from_str::<Value>(got).unwrap(), want);
    }
    assert_eq!(data.last().unwrap(), "[DONE]");
}

#[tokio::test]
async fn completion_stream_is_the_same_json_as_before() {
    let reply = reply(Endpoint::Completion, true);
    let with = envelope_with(&reply, "text_completion");
    let lp = vec![TokenLogprob {
        token: "Hi".into(),
        logprob: -0.5,
        top: vec![("Hi".into(), -0.5)],
    }];
    let data = sse_data(stream(reply, vec![events(lp)])).await;
    let empty_lp = json!({"tokens": [], "token_logprobs": [], "top_logprobs": [],
                          "text_offset": []});
    let want = [
        with(
            json!({"choices": [{"index": 0, "text": "Hi", "finish_reason": null,
            "logprobs": {"tokens": ["Hi"], "token_logprobs": [-0.5],
                         "top_logprobs": [{"Hi": -0.5}], "text_offset": [0]}}],
            "surge_meter": meter(3, 1, 0.125)}),
        ),
        with(
            json!({"choices": [{"index": 0, "text": " there", "finish_reason": null,
                                 "logprobs": empty_lp}],
                   "surge_meter": meter(3, 2, 0.25)}),
        ),
        with(
            json!({"choices": [{"index": 0, "text": "", "logprobs": null,
                                 "finish_reason": "length"}]}),
        ),
        with(json!({"choices": [],
                    "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5,
                              "prompt_tokens_details": {"cached_tokens": 0}},
                    "surge_execution": {"queue_seconds": 0.5, "execution_seconds": 0.25,
                                        "time_to_first_token_seconds": 0.75, "sequences": 1}})),
    ];
    assert_eq!(data.len(), want.len() + 1, "{data:?}");
    for (got, want) in data.iter().zip(&want) {
        assert_eq!(&serde_json::from_str::<Value>(got).unwrap(), want);
    }
}

#[tokio::test]
async fn complete_answers_one_typed_body() {
    let reply = reply(Endpoint::Chat, false);
    let (id, created) = (reply.id.clone(), reply.created);
    let resp = complete(reply, vec![events(vec![])]).await.unwrap();
    let body = axum::body::to_bytes(resp.into_body(), usize::MAX)
        .await
        .unwrap();
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        v,
        json!({"id": id, "object": "chat.completion", "created": created, "model": "m",
               "system_fingerprint": null,
               "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hi there",
                            "refusal": null}, "logprobs": null, "finish_reason": "length"}],
               "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5,
                              "prompt_tokens_details": {"cached_tokens": 0}},
               "surge_execution": {"queue_seconds": 0.5, "execution_seconds": 0.25,
                                   "time_to_first_token_seconds": 0.75, "sequences": 1}})
    );
}
