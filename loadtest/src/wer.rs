//! Word error rate, normalised the way `testdata/speech/README.md` specifies (and
//! `loadtest/peers/faster_whisper_peer.py` implements): lowercase; every character that is
//! not `[a-z0-9']` becomes a space; split on whitespace. WER = word-level Levenshtein
//! distance ÷ reference words; a corpus WER is Σ edits ÷ Σ reference words.

/// The words of `text` after normalisation.
pub fn normalize(text: &str) -> Vec<String> {
    text.to_lowercase()
        .chars()
        .map(|c| {
            if c.is_ascii_lowercase() || c.is_ascii_digit() || c == '\'' {
                c
            } else {
                ' '
            }
        })
        .collect::<String>()
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

/// (word edits — substitutions + deletions + insertions — turning `reference` into
/// `hypothesis`, number of reference words), both normalised.
pub fn word_errors(reference: &str, hypothesis: &str) -> (usize, usize) {
    let r = normalize(reference);
    let h = normalize(hypothesis);
    let mut prev: Vec<usize> = (0..=h.len()).collect();
    let mut cur = vec![0; h.len() + 1];
    for (i, rw) in r.iter().enumerate() {
        cur[0] = i + 1;
        for (j, hw) in h.iter().enumerate() {
            cur[j + 1] = (prev[j + 1] + 1)
                .min(cur[j] + 1)
                .min(prev[j] + usize::from(rw != hw));
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    (prev[h.len()], r.len())
}

/// edits ÷ reference words (÷ 1 when the reference is empty, so any hypothesis word there
/// counts as a whole error).
pub fn wer(reference: &str, hypothesis: &str) -> f64 {
    let (edits, words) = word_errors(reference, hypothesis);
    edits as f64 / words.max(1) as f64
}

/// Σ edits ÷ Σ reference words over (reference, hypothesis) pairs.
pub fn corpus_wer<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> f64 {
    let (edits, words) = pairs
        .into_iter()
        .map(|(r, h)| word_errors(r, h))
        .fold((0, 0), |(e, w), (de, dw)| (e + de, w + dw));
    edits as f64 / words.max(1) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalization() {
        assert_eq!(
            normalize("  Hello, World! It's 9-to-5 — ÉTÉ\tok.\n"),
            ["hello", "world", "it's", "9", "to", "5", "t", "ok"]
        );
        assert!(normalize("...!?").is_empty());
        assert_eq!(normalize("round-foc"), ["round", "foc"]);
    }

    #[test]
    fn identical_and_punctuation_only_differences_are_free() {
        assert_eq!(
            word_errors("The quick brown fox.", "the QUICK brown, fox"),
            (0, 4)
        );
        assert_eq!(wer("a b c", "a b c"), 0.0);
    }

    #[test]
    fn substitutions_deletions_insertions() {
        // one substitution
        assert_eq!(word_errors("the cat sat", "the bat sat"), (1, 3));
        // one deletion
        assert_eq!(word_errors("the cat sat", "the sat"), (1, 3));
        // one insertion
        assert_eq!(word_errors("the cat sat", "the cat sat down"), (1, 3));
        // "air fill" heard as "airfield": 1 substitution + 1 deletion
        assert_eq!(
            word_errors(
                "let the cool morning air fill the quiet kitchen",
                "let the cool morning airfield the quiet kitchen"
            ),
            (2, 9)
        );
        // classic example: kitten/sitting on words
        assert_eq!(
            word_errors("k i t t e n", "s i t t i n g"),
            (3, 6),
            "2 substitutions + 1 insertion"
        );
    }

    #[test]
    fn empty_sides() {
        assert_eq!(word_errors("", ""), (0, 0));
        assert_eq!(word_errors("one two", ""), (2, 2));
        assert_eq!(word_errors("", "one two"), (2, 0));
        assert_eq!(wer("one two", ""), 1.0);
        assert_eq!(wer("", ""), 0.0);
        assert_eq!(wer("", "x"), 1.0);
    }

    #[test]
    fn wer_can_exceed_one() {
        assert_eq!(wer("yes", "no no no"), 3.0);
    }

    #[test]
    fn corpus_wer_weights_by_reference_length() {
        // 1 edit in 1 word and 0 in 9 words: 1/10, not the mean of 1.0 and 0.0
        let pairs = [
            ("hello", "yellow"),
            ("a b c d e f g h i", "a b c d e f g h i"),
        ];
        assert!((corpus_wer(pairs) - 0.1).abs() < 1e-12);
    }
}
