//! Grammars on the real vocabularies (byte-level BPE: SmolLM2; SentencePiece: Gemma 3),
//! driven by random logits: whatever the model would prefer, the masked output parses.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

use super::*;
use crate::llm::test_support::{gemma_test_gguf_path, test_gguf_path};
use crate::llm::GgufFile;

fn tokenizer(path: std::path::PathBuf) -> Tokenizer {
    Tokenizer::from_gguf(&GgufFile::open(path).unwrap()).unwrap()
}

fn grammars(tok: &Tokenizer) -> Grammars {
    let ends = [tok.eos_token_id().unwrap()];
    Grammars::new(tok.clone(), tok.vocab_size(), &ends)
}

/// Samples from random logits under `c` until the grammar completes, an end token is
/// picked, or `limit` tokens; returns the text.
fn random_walk(tok: &Tokenizer, mut c: Constraint, seed: u64, limit: usize) -> (String, bool) {
    let mut rng = StdRng::seed_from_u64(seed);
    let ends = [tok.eos_token_id().unwrap()];
    let mut out = Vec::new();
    for _ in 0..limit {
        // Skewed towards short tokens' ids being unlikely, like no model in particular.
        let mut row: Vec<f32> = (0..tok.vocab_size())
            .map(|_| rng.random::<f32>() * 8.0)
            .collect();
        c.mask(&mut row).unwrap();
        let best = (0..row.len())
            .max_by(|&a, &b| row[a].total_cmp(&row[b]))
            .unwrap() as u32;
        assert!(row[best as usize].is_finite(), "no token allowed");
        if ends.contains(&best) {
            return (tok.decode(&out, true).unwrap(), true);
        }
        out.push(best);
        if c.advance(best).unwrap() {
            return (tok.decode(&out, true).unwrap(), true);
        }
    }
    (tok.decode(&out, true).unwrap(), false)
}

#[test]
fn byte_level_token_bytes_are_the_decoded_text() {
    let tok = tokenizer(test_gguf_path());
    let mut checked = 0;
    for id in 0..tok.vocab_size() as u32 {
        let Some(bytes) = tok.token_bytes(id) else {
            continue;
        };
        if let Ok(text) = String::from_utf8(bytes) {
            assert_eq!(text, tok.decode(&[id], false).unwrap(), "token {id}");
            checked += 1;
        }
    }
    assert!(checked > tok.vocab_size() * 9 / 10, "{checked}");
    // `<|im_end|>` is a control token: it stands for no text.
    let im_end = tok.token_to_id("<|im_end|>").unwrap();
    assert_eq!(tok.token_bytes(im_end), None);
}

#[test]
fn a_schema_constrains_any_logits_to_valid_json() {
    let tok = tokenizer(test_gguf_path());
    let g = grammars(&tok);
    let schema = json!({
        "type": "object",
        "properties": {
            "name": {"type": "string", "maxLength": 12},
            "age": {"type": "integer"},
            "tags": {"type": "array", "items": {"enum": ["a", "b"]}, "maxItems": 3},
            "address": {
                "type": "object",
                "properties": {"city": {"type": "string", "maxLength": 8}},
                "required": ["city"],
                "additionalProperties": false
            }
        },
        "required": ["name", "age", "tags", "address"],
        "additionalProperties": false
    });
    let c = g.compile(&GrammarSpec::JsonSchema(schema)).unwrap();
    for seed in 0..5 {
        let (text, done) = random_walk(&tok, c.clone(), seed, 400);
        assert!(done, "seed {seed}: unfinished {text:?}");
        let v: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
        assert!(v["name"].is_string() && v["age"].is_i64(), "{v}");
        assert!(v["address"]["city"].is_string(), "{v}");
        let tags = v["tags"].as_array().unwrap();
        assert!(
            tags.len() <= 3 && tags.iter().all(|t| t == "a" || t == "b"),
            "{v}"
        );
        assert_eq!(v.as_object().unwrap().len(), 4, "{v}");
    }
}

#[test]
fn json_object_on_a_sentencepiece_vocabulary() {
    let tok = tokenizer(gemma_test_gguf_path());
    let g = grammars(&tok);
    let c = g.compile(&GrammarSpec::JsonObject).unwrap();
    let mut finished = 0;
    for seed in 0..4 {
        let (text, done) = random_walk(&tok, c.clone(), seed, 300);
        if done {
            finished += 1;
            let v: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
            assert!(v.is_object(), "{text}");
        } else {
            // Random logits may keep a string open; what there is must be a prefix.
            assert!(text.starts_with('{'), "{text}");
        }
    }
    assert!(finished > 0);
}

#[test]
fn bad_schemas_are_refused_with_the_reason() {
    let tok = tokenizer(test_gguf_path());
    let g = grammars(&tok);
    // A keyword JSON Schema defines but the engine does not implement is refused, not
    // dropped (unknown keywords are annotations, as the standard says).
    let unique = json!({"type": "array", "uniqueItems": true});
    let unknown = g.compile(&GrammarSpec::JsonSchema(unique));
    assert!(
        unknown.as_ref().unwrap_err().contains("uniqueItems"),
        "{unknown:?}"
    );
    let annotation = json!({"type": "object", "x-foo": 1});
    assert!(g.compile(&GrammarSpec::JsonSchema(annotation)).is_ok());
    let bad_type = g.compile(&GrammarSpec::JsonSchema(json!({"type": "banana"})));
    let lark = g.compile(&GrammarSpec::Lark("start: (".into()));
    for r in [unknown, bad_type, lark] {
        let e = r.expect_err("refused");
        assert!(!e.is_empty());
    }
}
