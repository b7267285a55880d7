use super::*;

fn names() -> Vec<String> {
    vec!["get_weather".into(), "add".into()]
}

/// The text of the content pieces.
fn content_of(pieces: &[Piece]) -> String {
    let text = |x: &Piece| match x {
        Piece::Content(c) => Some(c.clone()),
        _ => None,
    };
    pieces.iter().filter_map(text).collect()
}

#[test]
fn text_without_calls_is_content() {
    let (c, calls) = split(&names(), "Paris is sunny.");
    assert_eq!(c.as_deref(), Some("Paris is sunny."));
    assert!(calls.is_empty());
}

#[test]
fn calls_are_parsed_with_arguments_as_a_json_string() {
    let text = "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>\n<tool_call>\n{\"name\": \"add\", \"arguments\": {\"a\": 1, \"b\": 2}}\n</tool_call>";
    let (c, calls) = split(&names(), text);
    assert_eq!(c, None);
    assert_eq!(calls.len(), 2);
    assert_eq!(calls[0].function.name, "get_weather");
    assert_eq!(calls[0].function.arguments, r#"{"city":"Paris"}"#);
    assert_eq!(calls[1].function.arguments, r#"{"a":1,"b":2}"#);
    assert!(calls[0].id.starts_with("call_") && calls[0].id != calls[1].id);
    assert_eq!(calls[0].kind, "function");
}

#[test]
fn text_before_a_call_is_content_and_bad_blocks_stay_text() {
    let text =
        "Let me check.\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {}}\n</tool_call>";
    let (c, calls) = split(&names(), text);
    assert_eq!(c.as_deref(), Some("Let me check.\n"));
    assert_eq!(calls.len(), 1);
    for bad in [
        "<tool_call>\n{\"name\": \"rm_rf\", \"arguments\": {}}\n</tool_call>",
        "<tool_call>\nnot json\n</tool_call>",
        "<tool_call>\n{\"name\": \"add\", \"arguments\": [1]}\n</tool_call>",
    ] {
        let (c, calls) = split(&names(), bad);
        assert_eq!(c.as_deref(), Some(bad));
        assert!(calls.is_empty());
    }
}

#[test]
fn an_unclosed_last_call_still_counts() {
    let text = "<tool_call>\n{\"name\": \"add\", \"arguments\": \"{\\\"a\\\": 1}\"}\n";
    let (_, calls) = split(&names(), text);
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].function.arguments, r#"{"a":1}"#);
}

#[test]
fn a_bare_call_is_a_call_and_other_json_is_content() {
    for text in [
        "{\"name\": \"add\", \"arguments\": {\"a\": 1}}",
        "```json\n{\"name\": \"add\", \"arguments\": {\"a\": 1}}\n```",
        "  [{\"name\": \"add\", \"arguments\": {\"a\": 1}}]",
    ] {
        let (c, calls) = split(&names(), text);
        assert_eq!((c, calls.len()), (None, 1), "{text}");
        assert_eq!(calls[0].function.arguments, r#"{"a":1}"#);
    }
    for text in [
        "{\"answer\": 42}",
        "[1, 2]",
        "{\"name\": \"rm\", \"arguments\": {}}",
    ] {
        let (c, calls) = split(&names(), text);
        assert_eq!(c.as_deref(), Some(text));
        assert!(calls.is_empty());
    }
    // Held back while it could be one, then let out whole.
    let mut p = CallParser::new(names());
    assert!(p.push("{\"answer\"").is_empty());
    assert_eq!(p.finish(), vec![Piece::Content("{\"answer\"".into())]);
}

#[test]
fn a_closing_tag_inside_a_string_does_not_end_the_call() {
    let text = "<tool_call>\n{\"name\": \"add\", \"arguments\": {\"note\": \"x</tool_call>y\"}}\n</tool_call>";
    let (c, calls) = split(&names(), text);
    assert_eq!(c, None);
    assert_eq!(calls[0].function.arguments, r#"{"note":"x</tool_call>y"}"#);
}

/// A streaming parser fed one character at a time: the call's name as soon as its
/// header is read, then its arguments text in pieces (braces and a closing tag
/// inside strings included), then nothing of the tags; another shape comes whole.
#[test]
fn streamed_calls_come_out_as_they_are_generated() {
    let args = r#"{"a": 1, "b": {"c": "}</tool_call>\"x"}}"#;
    let text = format!(
        "Sure.<tool_call>\n{{\"name\": \"add\", \"arguments\": {args}}}\n</tool_call>\n\
         <tool_call>\n{{\"arguments\": {{}}, \"name\": \"get_weather\"}}\n</tool_call>"
    );
    let mut p = CallParser::streaming(names());
    let mut pieces = Vec::new();
    let mut name_seen_at = None;
    for (i, ch) in text.chars().enumerate() {
        let got = p.push(&ch.to_string());
        if name_seen_at.is_none() && got.iter().any(|x| matches!(x, Piece::CallStart { .. })) {
            name_seen_at = Some(i);
        }
        pieces.extend(got);
    }
    pieces.extend(p.finish());
    // The name is out before the arguments are.
    assert!(name_seen_at.unwrap() < text.find("\"a\"").unwrap());
    let streamed: String = pieces
        .iter()
        .filter_map(|x| match x {
            Piece::Args(a) => Some(a.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(streamed, args);
    let content = content_of(&pieces);
    assert_eq!(content, "Sure.");
    let start = pieces.iter().find(|x| matches!(x, Piece::CallStart { .. }));
    assert!(matches!(start, Some(Piece::CallStart { name, .. }) if name == "add"));
    let Some(Piece::Call(whole)) = pieces.last() else {
        panic!("{pieces:?}")
    };
    assert_eq!(whole.function.name, "get_weather");
    assert_eq!(p.calls(), 2);
}

/// Fed one character at a time, the parser finds the same pieces and never lets out
/// part of a tag as content.
#[test]
fn streaming_in_tiny_pieces_gives_the_same_calls() {
    let text = "Sure.<tool_call>\n{\"name\": \"add\", \"arguments\": {\"a\": 1}}\n</tool_call>\n";
    let mut p = CallParser::new(names());
    let mut pieces = Vec::new();
    for ch in text.chars() {
        pieces.extend(p.push(&ch.to_string()));
    }
    pieces.extend(p.finish());
    let content = content_of(&pieces);
    assert_eq!(content, "Sure.");
    assert_eq!(p.calls(), 1);
}
