//! Reading the Prometheus text exposition format (version 0.0.4), as the gateway and the
//! workers write it on `GET /metrics`: one reader for the tests, the benches and the load
//! tester, so that none of them picks a sample out of a line by hand.
//!
//! ```text
//! # HELP surge_workers Workers by model and state
//! # TYPE surge_workers gauge
//! surge_workers{model="smollm2-135m-instruct",state="ready"} 2
//! surge_cold_start_duration_seconds_bucket{model="whisper-tiny.en",le="+Inf"} 3 1700000000000
//! ```
//! A sample line is a metric name, optional `{label="value",…}` pairs (label values may
//! hold any character; `\\`, `\"` and `\n` are escaped), a value (`+Inf`, `-Inf` and `NaN`
//! included) and an optional timestamp in milliseconds. Comments, blank lines and lines
//! that are not samples (an HTTP header read along with the body, say) are skipped.
//! Histogram and summary series stay separate samples under their own names
//! (`…_bucket`, `…_sum`, `…_count`), as the format writes them.
//!
//! A small parser of our own rather than the `prometheus-parse` crate: that crate splits
//! label pairs with regular expressions and has mishandled values containing `=` or `,`
//! (an open fix upstream since 2024), folds histograms into one typed value (so `_sum` and
//! `_count` are no longer found by name), and brings regex, chrono and itertools; readers
//! here need only name, labels and value, which the grammar gives in a hundred lines.

/// Label pairs in the order written, values unescaped.
pub type Labels = Vec<(String, String)>;

/// One sample line.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// The metric name as written (`surge_cold_start_duration_seconds_count`).
    pub name: String,
    pub labels: Labels,
    pub value: f64,
    /// The optional trailing timestamp, milliseconds since the Unix epoch.
    pub timestamp_ms: Option<i64>,
}

impl Sample {
    /// The value of label `key`.
    pub fn label(&self, key: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Whether the sample is named `name` and has every one of `labels` (it may have more).
    pub fn matches(&self, name: &str, labels: &[(&str, &str)]) -> bool {
        self.name == name && labels.iter().all(|(k, v)| self.label(k) == Some(*v))
    }
}

/// Every sample in `text`, in order.
pub fn parse(text: &str) -> Vec<Sample> {
    text.lines().filter_map(parse_line).collect()
}

/// One line as a sample; `None` for a comment, a blank line or anything malformed.
pub fn parse_line(line: &str) -> Option<Sample> {
    let line = line.trim();
    if line.starts_with('#') {
        return None;
    }
    let (name, labels, rest) = series_prefix(line)?;
    let mut fields = rest.split_whitespace();
    let value = fields.next()?.parse().ok()?;
    let timestamp_ms = match fields.next() {
        Some(t) => Some(t.parse().ok()?),
        None => None,
    };
    if fields.next().is_some() {
        return None;
    }
    Some(Sample {
        name,
        labels,
        value,
        timestamp_ms,
    })
}

/// A series written as in the exposition, `name` or `name{key="value",…}`, as its name
/// and label pairs; `None` when it is not one.
pub fn series(s: &str) -> Option<(String, Labels)> {
    let (name, labels, rest) = series_prefix(s.trim())?;
    rest.trim().is_empty().then_some((name, labels))
}

/// The sum of the samples named `name` that have every one of `labels`; 0 when none.
pub fn sum(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    parse(text)
        .iter()
        .filter(|s| s.matches(name, labels))
        .map(|s| s.value)
        .sum()
}

/// The first sample named `name` that has every one of `labels`.
pub fn value(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines()
        .filter_map(parse_line)
        .find(|s| s.matches(name, labels))
        .map(|s| s.value)
}

/// [`value`] for a series written as in the exposition (see [`series`]), e.g.
/// `surge_worker_requests_total{status="200"}`; `None` also when `series` is malformed.
pub fn value_of(text: &str, series: &str) -> Option<f64> {
    let (name, labels) = self::series(series)?;
    let labels: Vec<(&str, &str)> = labels
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    value(text, &name, &labels)
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == ':'
}

/// The leading `name{labels}` of `s` (trimmed at the start) and what follows it. The name
/// must end at white space, `{` or the end.
fn series_prefix(s: &str) -> Option<(String, Labels, &str)> {
    let end = s.find(|c| !is_name_char(c)).unwrap_or(s.len());
    let name = &s[..end];
    if name.is_empty() || name.starts_with(|c: char| c.is_ascii_digit()) {
        return None;
    }
    let rest = &s[end..];
    let after_name = rest.trim_start();
    let Some(mut r) = after_name.strip_prefix('{') else {
        // A bare name: white space or nothing must follow it.
        return (rest.is_empty() || rest.starts_with(char::is_whitespace))
            .then(|| (name.to_string(), Vec::new(), rest));
    };
    let mut labels = Vec::new();
    loop {
        r = r.trim_start();
        if let Some(after) = r.strip_prefix('}') {
            return Some((name.to_string(), labels, after));
        }
        let end = r.find(|c| !is_name_char(c) || c == ':').unwrap_or(r.len());
        if end == 0 {
            return None;
        }
        let key = r[..end].to_string();
        r = r[end..].trim_start().strip_prefix('=')?;
        r = r.trim_start().strip_prefix('"')?;
        let (value, after) = quoted(r)?;
        labels.push((key, value));
        r = after.trim_start();
        if let Some(after) = r.strip_prefix(',') {
            r = after;
        } else if !r.starts_with('}') {
            return None;
        }
    }
}

/// The label value at the start of `s` (after its opening quote), unescaped, and what
/// follows its closing quote.
fn quoted(s: &str) -> Option<(String, &str)> {
    let mut value = String::new();
    let mut chars = s.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Some((value, &s[i + 1..])),
            '\\' => match chars.next()?.1 {
                'n' => value.push('\n'),
                '\\' => value.push('\\'),
                '"' => value.push('"'),
                // Not an escape the format defines: kept as written.
                other => {
                    value.push('\\');
                    value.push(other);
                }
            },
            c => value.push(c),
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"# HELP surge_workers Workers by model and state
# TYPE surge_workers gauge
surge_workers{model="smollm2-135m-instruct",state="ready"} 2
surge_workers{model="whisper-tiny.en",state="ready"} 1
surge_workers{model="smollm2-135m-instruct",state="starting"} 1

surge_queue_depth 5
surge_cold_start_duration_seconds_bucket{model="whisper-tiny.en",le="+Inf"} 2
surge_cold_start_duration_seconds_sum{model="whisper-tiny.en"} 0.84
surge_cold_start_duration_seconds_count{model="whisper-tiny.en"} 2
surge_rejections_total{reason="queue full, really"} 4 1700000000000
"#;

    fn pairs(s: &Sample) -> Vec<(&str, &str)> {
        s.labels
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect()
    }

    #[test]
    fn reads_names_labels_values_and_timestamps() {
        let s = parse(TEXT);
        assert_eq!(s.len(), 8, "{s:?}");
        assert_eq!(s[0].name, "surge_workers");
        assert_eq!(
            pairs(&s[0]),
            [("model", "smollm2-135m-instruct"), ("state", "ready")]
        );
        assert_eq!((s[0].value, s[0].timestamp_ms), (2.0, None));
        assert_eq!(s[3].name, "surge_queue_depth");
        assert!(s[3].labels.is_empty());
        assert_eq!(s[4].label("le"), Some("+Inf"));
        assert_eq!(s[7].label("reason"), Some("queue full, really"));
        assert_eq!(
            (s[7].value, s[7].timestamp_ms),
            (4.0, Some(1_700_000_000_000))
        );
        assert_eq!(s[7].label("model"), None);
    }

    #[test]
    fn unescapes_label_values_with_spaces_commas_braces_and_quotes() {
        let line = r#"m{a="x \"y\", z",b="back\\slash",c="two\nlines",d="{}=,",} -1.5e3 -7"#;
        let s = parse_line(line).unwrap();
        assert_eq!(
            pairs(&s),
            [
                ("a", "x \"y\", z"),
                ("b", "back\\slash"),
                ("c", "two\nlines"),
                ("d", "{}=,"),
            ]
        );
        assert_eq!((s.value, s.timestamp_ms), (-1500.0, Some(-7)));
        // White space around the label set and its pairs, an empty set.
        let s = parse_line("  m { a = \"1\" , b=\"2\" }  3 ").unwrap();
        assert_eq!((pairs(&s), s.value), (vec![("a", "1"), ("b", "2")], 3.0));
        let s = parse_line("m{} 4").unwrap();
        assert_eq!((s.name.as_str(), s.labels.len(), s.value), ("m", 0, 4.0));
    }

    #[test]
    fn special_values() {
        let v = |l: &str| parse_line(l).unwrap().value;
        assert_eq!(v("m +Inf"), f64::INFINITY);
        assert_eq!(v("m -Inf"), f64::NEG_INFINITY);
        assert!(v("m NaN").is_nan());
        assert_eq!(v("m 1e-3"), 0.001);
        assert_eq!(v("a:b_c 7"), 7.0);
    }

    #[test]
    fn skips_what_is_not_a_sample() {
        for line in [
            "",
            "   ",
            "# TYPE m counter",
            "#m 1",
            "HTTP/1.1 200 OK",
            "content-type: text/plain; version=0.0.4",
            "content-length: 1234",
            "date: Mon, 01 Jan 2024 00:00:00 GMT",
            "1abc 2",
            "m",
            "m{a=\"1\"}",
            "m x",
            "m 1 2 3",
            "m 1 1.5",
            "m{a=\"unterminated} 1",
            "m{a=1} 1",
            "m{=\"1\"} 1",
            "m{a=\"1\" b=\"2\"} 1",
            "m{a=\"1\"",
            "<html>404</html>",
        ] {
            assert_eq!(parse_line(line), None, "{line:?}");
        }
        assert!(parse("<html>\n<body>404</body>\n</html>").is_empty());
    }

    #[test]
    fn sums_and_values_by_name_and_labels() {
        let ready = [("state", "ready")];
        assert_eq!(sum(TEXT, "surge_workers", &ready), 3.0);
        assert_eq!(sum(TEXT, "surge_workers", &[]), 4.0);
        assert_eq!(
            sum(
                TEXT,
                "surge_workers",
                &[("model", "whisper-tiny.en"), ("state", "ready")]
            ),
            1.0
        );
        assert_eq!(sum(TEXT, "surge_workers", &[("state", "draining")]), 0.0);
        // Exact names: `_count` is not `_bucket`, and a prefix is not a name.
        assert_eq!(
            sum(TEXT, "surge_cold_start_duration_seconds_count", &[]),
            2.0
        );
        assert_eq!(sum(TEXT, "surge_cold_start_duration_seconds", &[]), 0.0);
        assert_eq!(sum(TEXT, "surge_worker", &[]), 0.0);
        assert_eq!(value(TEXT, "surge_workers", &ready), Some(2.0));
        assert_eq!(value(TEXT, "surge_queue_depth", &[]), Some(5.0));
        assert_eq!(value(TEXT, "surge_in_flight_requests", &[]), None);
        assert_eq!(
            value_of(TEXT, r#"surge_workers{state="starting"}"#),
            Some(1.0)
        );
        assert_eq!(
            value_of(
                TEXT,
                r#"surge_rejections_total{reason="queue full, really"}"#
            ),
            Some(4.0)
        );
        assert_eq!(value_of(TEXT, "surge_queue_depth"), Some(5.0));
        assert_eq!(value_of(TEXT, "surge_queue_depth{"), None);
    }

    #[test]
    fn series_selectors() {
        assert_eq!(
            series(r#"m{a="1",b="x y"}"#),
            Some((
                "m".to_string(),
                vec![
                    ("a".to_string(), "1".to_string()),
                    ("b".to_string(), "x y".to_string())
                ]
            ))
        );
        assert_eq!(series("m"), Some(("m".to_string(), Vec::new())));
        assert_eq!(series("m 1"), None);
        assert_eq!(series("m{a=\"1\"} 1"), None);
        assert_eq!(series(""), None);
    }
}
