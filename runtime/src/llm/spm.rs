//! SentencePiece-style tokenizer (`tokenizer.ggml.model = "llama"`), as llama.cpp
//! runs it: Gemma 3's GGUF carries pieces and scores but no BPE merges, so the
//! Hugging Face BPE pipeline in `tokenizer.rs` cannot be built from it.
//!
//! The algorithm is llama.cpp's `llm_tokenizer_spm` (which greedy-prompt parity
//! tests compare against): split the text into UTF-8 characters, then repeatedly
//! merge the adjacent pair whose concatenation is a piece with the highest score
//! (leftmost on ties); characters no piece covers fall back to `<0xXX>` byte
//! tokens. Spaces are written as `▁` first. Control and user-defined tokens
//! (`<start_of_turn>`, newline runs) are matched whole in the raw text before
//! any of that, longest first, as llama.cpp does with `parse_special`.

use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap};

use aho_corasick::{AhoCorasick, MatchKind};

use super::error::{LlmError, Result};

/// llama.cpp token types.
const NORMAL: usize = 1;
const CONTROL: usize = 3;
const USER_DEFINED: usize = 4;
const BYTE: usize = 6;

const SPACE: &str = "\u{2581}";

pub struct SpmTokenizer {
    pieces: Vec<String>,
    scores: Vec<f32>,
    types: Vec<usize>,
    ids: HashMap<String, u32>,
    /// Token id of each `<0xXX>` byte piece.
    bytes: [Option<u32>; 256],
    /// Control and user-defined tokens, matched whole in raw text.
    specials: Option<AhoCorasick>,
    special_ids: Vec<u32>,
    add_space_prefix: bool,
}

impl SpmTokenizer {
    pub fn new(
        pieces: Vec<String>,
        scores: Vec<f32>,
        types: Vec<usize>,
        add_space_prefix: bool,
    ) -> Result<Self> {
        if scores.len() != pieces.len() {
            return Err(LlmError::Tokenizer(format!(
                "{} scores for {} pieces",
                scores.len(),
                pieces.len()
            )));
        }
        let types = if types.len() == pieces.len() {
            types
        } else {
            vec![NORMAL; pieces.len()]
        };
        let ids: HashMap<String, u32> = pieces
            .iter()
            .enumerate()
            .map(|(i, p)| (p.clone(), i as u32))
            .collect();
        let mut bytes = [None; 256];
        for (i, p) in pieces.iter().enumerate() {
            if types[i] == BYTE {
                if let Some(b) = parse_byte_piece(p) {
                    bytes[b as usize] = Some(i as u32);
                }
            }
        }
        let special_ids: Vec<u32> = (0..pieces.len())
            .filter(|&i| matches!(types[i], CONTROL | USER_DEFINED) && !pieces[i].is_empty())
            .map(|i| i as u32)
            .collect();
        let specials = if special_ids.is_empty() {
            None
        } else {
            let patterns = special_ids.iter().map(|&i| pieces[i as usize].as_str());
            Some(
                AhoCorasick::builder()
                    .match_kind(MatchKind::LeftmostLongest)
                    .build(patterns)
                    .map_err(|e| LlmError::Tokenizer(e.to_string()))?,
            )
        };
        Ok(Self {
            pieces,
            scores,
            types,
            ids,
            bytes,
            specials,
            special_ids,
            add_space_prefix,
        })
    }

    pub fn encode(&self, text: &str) -> Vec<u32> {
        let mut out = Vec::new();
        // Raw fragments always start the text or follow a special token, which is
        // where llama.cpp adds the prefix space (for models that want one).
        let raw = |out: &mut Vec<u32>, s: &str| {
            if s.is_empty() {
                return;
            }
            let mut escaped = String::with_capacity(s.len() + 3);
            if self.add_space_prefix {
                escaped.push_str(SPACE);
            }
            escaped.push_str(&s.replace(' ', SPACE));
            self.encode_piece(&escaped, out);
        };
        let mut at = 0;
        if let Some(ac) = &self.specials {
            for m in ac.find_iter(text) {
                raw(&mut out, &text[at..m.start()]);
                out.push(self.special_ids[m.pattern().as_usize()]);
                at = m.end();
            }
        }
        raw(&mut out, &text[at..]);
        out
    }

    /// llama.cpp's bigram merge over one escaped fragment.
    fn encode_piece(&self, text: &str, out: &mut Vec<u32>) {
        // Symbols are byte ranges of `text`, linked so merged ones drop out.
        let mut syms: Vec<Symbol> = Vec::new();
        for (start, ch) in text.char_indices() {
            let i = syms.len();
            syms.push(Symbol {
                start,
                len: ch.len_utf8(),
                prev: i.checked_sub(1),
                next: Some(i + 1),
            });
        }
        let Some(last) = syms.last_mut() else {
            return;
        };
        last.next = None;
        let mut queue = BinaryHeap::new();
        // (start, bytes) of a merged piece → the symbol that was its right half.
        let mut merged_from: HashMap<(usize, usize), usize> = HashMap::new();
        let try_add = |queue: &mut BinaryHeap<Bigram>,
                       merged_from: &mut HashMap<(usize, usize), usize>,
                       syms: &[Symbol],
                       left: Option<usize>,
                       right: Option<usize>| {
            let (Some(l), Some(r)) = (left, right) else {
                return;
            };
            let (a, b) = (&syms[l], &syms[r]);
            let piece = &text[a.start..b.start + b.len];
            if let Some(&id) = self.ids.get(piece) {
                queue.push(Bigram {
                    left: l,
                    right: r,
                    score: self.scores[id as usize],
                    size: piece.len(),
                });
                merged_from.insert((a.start, piece.len()), r);
            }
        };
        for i in 1..syms.len() {
            try_add(&mut queue, &mut merged_from, &syms, Some(i - 1), Some(i));
        }
        while let Some(bg) = queue.pop() {
            let (l, r) = (bg.left, bg.right);
            // Stale: one side was merged away since this pair was queued.
            if syms[l].len == 0 || syms[r].len == 0 || syms[l].len + syms[r].len != bg.size {
                continue;
            }
            syms[l].len += syms[r].len;
            syms[r].len = 0;
            syms[l].next = syms[r].next;
            if let Some(n) = syms[r].next {
                syms[n].prev = Some(l);
            }
            let (prev, next) = (syms[l].prev, syms[l].next);
            try_add(&mut queue, &mut merged_from, &syms, prev, Some(l));
            try_add(&mut queue, &mut merged_from, &syms, Some(l), next);
        }
        let mut i = Some(0);
        while let Some(s) = i {
            self.resegment(text, &syms, &merged_from, syms[s].start, syms[s].len, out);
            i = syms[s].next;
        }
    }

    /// Emits the piece at `text[start..start + len]`, or the two symbols it was merged
    /// from when it is not itself a token, down to bytes.
    fn resegment(
        &self,
        text: &str,
        syms: &[Symbol],
        merged_from: &HashMap<(usize, usize), usize>,
        start: usize,
        len: usize,
        out: &mut Vec<u32>,
    ) {
        let piece = &text[start..start + len];
        if let Some(&id) = self.ids.get(piece) {
            out.push(id);
            return;
        }
        match merged_from.get(&(start, len)) {
            Some(&r) => {
                let right_start = syms[r].start;
                self.resegment(text, syms, merged_from, start, right_start - start, out);
                self.resegment(
                    text,
                    syms,
                    merged_from,
                    right_start,
                    start + len - right_start,
                    out,
                );
            }
            None => out.extend(piece.bytes().filter_map(|b| self.bytes[b as usize])),
        }
    }

    /// Text of `ids`: `▁` becomes a space, byte pieces their bytes (invalid UTF-8
    /// is replaced, as a streamed decode holds it back until complete), control
    /// tokens nothing when `skip_special_tokens`.
    pub fn decode(&self, ids: &[u32], skip_special_tokens: bool) -> String {
        let mut bytes = Vec::new();
        for &id in ids {
            let Some(piece) = self.pieces.get(id as usize) else {
                continue;
            };
            match self.types[id as usize] {
                BYTE => bytes.extend(parse_byte_piece(piece)),
                CONTROL if skip_special_tokens => {}
                CONTROL | USER_DEFINED => bytes.extend_from_slice(piece.as_bytes()),
                _ => bytes.extend_from_slice(piece.replace(SPACE, " ").as_bytes()),
            }
        }
        let text = String::from_utf8_lossy(&bytes).into_owned();
        // The prefix space the encoder added is not part of the text.
        match (self.add_space_prefix, text.strip_prefix(' ')) {
            (true, Some(rest)) => rest.to_string(),
            _ => text,
        }
    }

    /// The bytes piece `id` adds to generated text (`▁` a space, a byte piece its
    /// byte); `None` for control, unknown and unused pieces.
    pub fn token_bytes(&self, id: u32) -> Option<Vec<u8>> {
        let piece = self.pieces.get(id as usize)?;
        match self.types[id as usize] {
            BYTE => parse_byte_piece(piece).map(|b| vec![b]),
            USER_DEFINED => Some(piece.as_bytes().to_vec()),
            NORMAL => Some(piece.replace(SPACE, " ").into_bytes()),
            _ => None,
        }
    }

    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.ids.get(token).copied()
    }

    pub fn id_to_token(&self, id: u32) -> Option<String> {
        self.pieces.get(id as usize).cloned()
    }

    pub fn vocab_size(&self) -> usize {
        self.pieces.len()
    }
}

fn parse_byte_piece(p: &str) -> Option<u8> {
    let hex = p.strip_prefix("<0x")?.strip_suffix('>')?;
    u8::from_str_radix(hex, 16).ok()
}

struct Symbol {
    start: usize,
    /// Bytes; 0 once merged into its left neighbour.
    len: usize,
    prev: Option<usize>,
    next: Option<usize>,
}

/// A candidate merge; the heap pops the highest score, then the leftmost.
struct Bigram {
    left: usize,
    right: usize,
    score: f32,
    size: usize,
}

impl PartialEq for Bigram {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Bigram {}

impl PartialOrd for Bigram {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Bigram {
    fn cmp(&self, other: &Self) -> Ordering {
        self.score
            .total_cmp(&other.score)
            .then_with(|| other.left.cmp(&self.left))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toy() -> SpmTokenizer {
        let mut pieces: Vec<String> = ["<pad>", "<eos>", "<bos>", "<start_of_turn>", "\n"]
            .map(String::from)
            .to_vec();
        let mut types = vec![CONTROL, CONTROL, CONTROL, CONTROL, USER_DEFINED];
        let mut scores = vec![0.0; 5];
        for b in 0..=255u8 {
            pieces.push(format!("<0x{b:02X}>"));
            types.push(BYTE);
            scores.push(0.0);
        }
        for (p, s) in [
            ("▁", -1.0),
            ("h", -2.0),
            ("e", -2.0),
            ("l", -2.0),
            ("o", -2.0),
            ("he", -3.0),
            ("ll", -2.5),
            ("hell", -4.0),
            ("hello", -5.0),
            ("▁hello", -7.0),
            ("lo", -3.5),
        ] {
            pieces.push(p.to_string());
            types.push(NORMAL);
            scores.push(s);
        }
        SpmTokenizer::new(pieces, scores, types, false).unwrap()
    }

    fn ids(t: &SpmTokenizer, pieces: &[&str]) -> Vec<u32> {
        pieces.iter().map(|p| t.token_to_id(p).unwrap()).collect()
    }

    #[test]
    fn merges_by_score_and_falls_back_to_bytes() {
        let t = toy();
        assert_eq!(t.encode("hello"), ids(&t, &["hello"]));
        assert_eq!(t.encode(" hello"), ids(&t, &["▁hello"]));
        // "é" has no piece: its two UTF-8 bytes.
        assert_eq!(t.encode("é"), ids(&t, &["<0xC3>", "<0xA9>"]));
        assert_eq!(t.decode(&t.encode("hello é"), false), "hello é");
    }

    #[test]
    fn specials_are_matched_whole_and_skippable() {
        let t = toy();
        let got = t.encode("<start_of_turn>hello\n");
        assert_eq!(got, ids(&t, &["<start_of_turn>", "hello", "\n"]));
        assert_eq!(t.decode(&got, true), "hello\n");
        assert_eq!(t.decode(&got, false), "<start_of_turn>hello\n");
    }
}
