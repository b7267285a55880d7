//! Finding the routing facts (`model`, `stream_options.include_usage`) in a request
//! body, or in the prefix of one that pingora's retry buffer holds: multipart form
//! fields and a streaming scan of top-level JSON keys.

/// A `multipart/form-data` text field's value from (a prefix of) the body.
pub fn multipart_field(body: &[u8], content_type: &str, name: &str) -> Option<String> {
    let boundary = content_type.split(';').find_map(|p| {
        let p = p.trim();
        let (k, v) = p.split_once('=')?;
        k.trim()
            .eq_ignore_ascii_case("boundary")
            .then(|| v.trim().trim_matches('"').to_string())
    })?;
    let delim = format!("--{boundary}");
    let mut rest = body;
    while let Some(i) = find(rest, delim.as_bytes()) {
        rest = &rest[i + delim.len()..];
        let head_end = find(rest, b"\r\n\r\n")?;
        let head = String::from_utf8_lossy(&rest[..head_end]).to_ascii_lowercase();
        let wanted = format!("name=\"{}\"", name.to_ascii_lowercase());
        if head.contains("content-disposition") && head.contains(&wanted) {
            let value = &rest[head_end + 4..];
            let end = find(value, format!("\r\n{delim}").as_bytes())?;
            return Some(String::from_utf8_lossy(&value[..end]).trim().to_string());
        }
    }
    None
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// What a scan of a JSON body's prefix found.
#[derive(Debug, Default, PartialEq)]
pub struct PrefixScan {
    pub model: Option<String>,
    pub include_usage: bool,
}

/// Finds the top-level `"model": "…"` and `stream_options.include_usage: true` in a
/// prefix of a JSON object (a minimal tokenizer: strings, escapes, nesting).
pub fn scan_json_prefix(buf: &[u8]) -> PrefixScan {
    let mut out = PrefixScan::default();
    let mut depth = 0usize;
    let mut i = 0;
    // The last object key read at each depth, and the key path.
    let mut keys: Vec<Option<String>> = Vec::new();
    let mut expect_value = false;
    while i < buf.len() {
        match buf[i] {
            b'{' | b'[' => {
                depth += 1;
                keys.truncate(depth - 1);
                keys.push(None);
                expect_value = false;
                i += 1;
            }
            b'}' | b']' => {
                depth = depth.saturating_sub(1);
                keys.truncate(depth);
                i += 1;
            }
            b':' => {
                expect_value = true;
                i += 1;
            }
            b',' => {
                expect_value = false;
                i += 1;
            }
            b'"' => {
                let Some((s, len)) = json_string(&buf[i..]) else {
                    return out;
                };
                i += len;
                if expect_value {
                    if depth == 1 && keys.last() == Some(&Some("model".into())) {
                        out.model.get_or_insert(s);
                    }
                    expect_value = false;
                } else if let Some(k) = keys.last_mut() {
                    *k = Some(s);
                }
            }
            b't' if expect_value => {
                if depth == 2
                    && keys.first() == Some(&Some("stream_options".into()))
                    && keys.get(1) == Some(&Some("include_usage".into()))
                    && buf[i..].starts_with(b"true")
                {
                    out.include_usage = true;
                }
                expect_value = false;
                i += 1;
            }
            _ => i += 1,
        }
    }
    out
}

/// A JSON string at the start of `buf`: its value and its length in bytes.
fn json_string(buf: &[u8]) -> Option<(String, usize)> {
    let mut i = 1;
    while i < buf.len() {
        match buf[i] {
            b'\\' => i += 2,
            b'"' => {
                let s: String = serde_json::from_slice(&buf[..=i]).ok()?;
                return Some((s, i + 1));
            }
            _ => i += 1,
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multipart_model_field() {
        let ct = "multipart/form-data; boundary=XyZ";
        let body = b"--XyZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.wav\"\r\n\r\nRIFF....\r\n--XyZ\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\nwhisper-1\r\n--XyZ--\r\n";
        assert_eq!(
            multipart_field(body, ct, "model").as_deref(),
            Some("whisper-1")
        );
        assert_eq!(multipart_field(body, ct, "language"), None);
        // A prefix that ends inside the file part has no model.
        assert_eq!(multipart_field(&body[..40], ct, "model"), None);
    }

    #[test]
    fn json_prefix_scan() {
        let s = scan_json_prefix(
            br#"{"messages":[{"role":"user","content":"say \"model\": \"x\""}],"stream_options":{"include_usage":true},"model":"smollm2","extra":"#,
        );
        assert_eq!(s.model.as_deref(), Some("smollm2"));
        assert!(s.include_usage);
        let s = scan_json_prefix(br#"{"messages":[{"model":"inner"}],"#);
        assert_eq!(s, PrefixScan::default());
    }
}
