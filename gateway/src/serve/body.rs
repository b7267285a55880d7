//! Finding `model` in a multipart request body (JSON bodies are parsed with serde).

/// A `multipart/form-data` text field's value.
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
        assert_eq!(multipart_field(&body[..40], ct, "model"), None);
    }
}
