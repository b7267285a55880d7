//! Constrained decoding: a per-sequence token mask from a JSON schema or a Lark
//! grammar, computed by llguidance (the engine llama.cpp and vLLM use), so that
//! structured output always parses.
//!
//! The mask is applied to a sequence's row of logits before its sampler runs, which
//! is what lets constrained and free sequences share one batch: the forward pass does
//! not know about grammars at all. The grammar engine sees tokens as bytes, taken
//! from the model's own vocabulary ([`Tokenizer::token_bytes`]).

use std::sync::{Arc, OnceLock};

use llguidance::api::TopLevelGrammar;
use llguidance::{Matcher, ParserFactory};
use serde_json::{json, Value};
use toktrie::{TokEnv, TokRxInfo, TokTrie, TokenId, TokenizerEnv};

use super::tokenizer::Tokenizer;

/// What a sequence's output must match.
#[derive(Debug, Clone, PartialEq)]
pub enum GrammarSpec {
    /// Any JSON object (`response_format: {"type": "json_object"}`).
    JsonObject,
    /// JSON that validates against a schema (`json_schema`).
    JsonSchema(Value),
    /// A grammar in llguidance's Lark syntax (forced tool calls).
    Lark(String),
}

impl GrammarSpec {
    fn to_grammar(&self) -> TopLevelGrammar {
        match self {
            GrammarSpec::JsonObject => TopLevelGrammar::from_json_schema(compact(json!({
                "type": "object"
            }))),
            GrammarSpec::JsonSchema(schema) => {
                TopLevelGrammar::from_json_schema(compact(schema.clone()))
            }
            GrammarSpec::Lark(source) => TopLevelGrammar::from_lark(source.clone()),
        }
    }
}

/// JSON laid out as `json.dumps` does (`", "`, `": "`, no other whitespace) unless the
/// schema sets llguidance's own `x-guidance` options: with free whitespace, small
/// models can spend their whole budget on newlines inside a valid document.
pub fn compact(mut schema: Value) -> Value {
    if let Some(o) = schema.as_object_mut() {
        o.entry("x-guidance").or_insert_with(
            || json!({"whitespace_flexible": false, "item_separator": ", ", "key_separator": ": "}),
        );
    }
    schema
}

/// The model's vocabulary as the grammar engine needs it.
struct Vocabulary {
    trie: TokTrie,
    tok: Tokenizer,
}

impl TokenizerEnv for Vocabulary {
    fn tok_trie(&self) -> &TokTrie {
        &self.trie
    }

    fn tokenize_bytes(&self, s: &[u8]) -> Vec<TokenId> {
        self.tok
            .encode(&String::from_utf8_lossy(s))
            .unwrap_or_default()
    }
}

/// Compiles grammars for one model. The vocabulary index is built on first use (a
/// model that never sees a constrained request never pays for it) and shared by every
/// grammar after.
pub struct Grammars {
    tok: Tokenizer,
    n_vocab: usize,
    /// Tokens that end a turn: all are allowed wherever the grammar allows its end.
    ends: Arc<[u32]>,
    factory: OnceLock<Result<ParserFactory, String>>,
}

impl Grammars {
    /// `n_vocab`: the width of the model's logits (may exceed the tokenizer's
    /// vocabulary: padding rows are never allowed). `ends`: the end-of-turn tokens.
    pub fn new(tok: Tokenizer, n_vocab: usize, ends: &[u32]) -> Self {
        Grammars {
            tok,
            n_vocab,
            ends: ends.into(),
            factory: OnceLock::new(),
        }
    }

    fn factory(&self) -> Result<&ParserFactory, String> {
        self.factory
            .get_or_init(|| {
                let eos = self
                    .ends
                    .first()
                    .copied()
                    .or(self.tok.eos_token_id())
                    .ok_or("the model has no end-of-turn token")?;
                let words: Vec<Vec<u8>> = (0..self.n_vocab as u32)
                    .map(|id| {
                        self.tok.token_bytes(id).unwrap_or_else(|| {
                            // Control tokens are kept apart from text by the marker byte.
                            let name =
                                (self.tok.id_to_token(id)).unwrap_or_else(|| format!("<[{id}]>"));
                            let mut b = vec![TokTrie::SPECIAL_TOKEN_MARKER];
                            b.extend_from_slice(name.as_bytes());
                            b
                        })
                    })
                    .collect();
                let info = TokRxInfo::new(self.n_vocab as u32, eos);
                let vocabulary = Vocabulary {
                    trie: TokTrie::from(&info, &words),
                    tok: self.tok.clone(),
                };
                let env: TokEnv = Arc::new(vocabulary);
                let mut factory = ParserFactory::new_simple(&env).map_err(|e| e.to_string())?;
                factory.quiet();
                Ok(factory)
            })
            .as_ref()
            .map_err(Clone::clone)
    }

    /// A fresh constraint for one sequence, or why `spec` cannot be used (an
    /// unsupported schema feature, a syntax error): the text names the problem.
    pub fn compile(&self, spec: &GrammarSpec) -> Result<Constraint, String> {
        let factory = self.factory()?;
        let parser = factory
            .create_parser(spec.to_grammar())
            .map_err(|e| e.to_string())?;
        let matcher = Matcher::new(Ok(parser));
        if let Some(e) = matcher.get_error() {
            return Err(e);
        }
        Ok(Constraint {
            matcher,
            ends: self.ends.clone(),
            eos: factory.tok_env().tok_trie().eos_token(),
        })
    }
}

/// One sequence's place in its grammar.
pub struct Constraint {
    matcher: Matcher,
    ends: Arc<[u32]>,
    eos: u32,
}

impl Clone for Constraint {
    /// An independent copy at the same place (each of `n` choices gets one).
    fn clone(&self) -> Self {
        Constraint {
            matcher: self.matcher.deep_clone(),
            ends: self.ends.clone(),
            eos: self.eos,
        }
    }
}

impl std::fmt::Debug for Constraint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Constraint")
            .field("stopped", &self.matcher.is_stopped())
            .finish()
    }
}

impl Constraint {
    /// The tokens the grammar allows next. Apart from [`Allowed::apply`] so that the
    /// scheduler can compute it beside the forward pass that makes the logits.
    pub fn allowed(&mut self) -> Result<Allowed, String> {
        let vob = self.matcher.compute_mask().map_err(|e| e.to_string())?;
        Ok(Allowed {
            may_end: vob.is_allowed(self.eos),
            vob,
            ends: self.ends.clone(),
        })
    }

    /// [`Self::allowed`], applied to `logits`.
    pub fn mask(&mut self, logits: &mut [f32]) -> Result<(), String> {
        self.allowed()?.apply(logits);
        Ok(())
    }

    /// Moves past the sampled `token` (not an end-of-turn token). True when the
    /// grammar is complete and allows nothing more: the output is finished.
    pub fn advance(&mut self, token: u32) -> Result<bool, String> {
        self.matcher
            .consume_token(token)
            .map_err(|e| e.to_string())?;
        Ok(self.matcher.is_stopped())
    }
}

/// One step's mask of one sequence.
pub struct Allowed {
    vob: toktrie::SimpleVob,
    may_end: bool,
    ends: Arc<[u32]>,
}

impl Allowed {
    /// Sets the logits of the tokens the grammar does not allow next to −∞ (the
    /// end-of-turn tokens stay when the output may end here).
    pub fn apply(&self, logits: &mut [f32]) {
        for (id, x) in logits.iter_mut().enumerate() {
            let id = id as u32;
            if !(self.vob.is_allowed(id) || self.may_end && self.ends.contains(&id)) {
                *x = f32::NEG_INFINITY;
            }
        }
    }
}

#[cfg(test)]
#[path = "grammar_tests.rs"]
mod tests;
