//! `multipart/form-data` bodies (audio uploads), read with `multer`: the gateway reads
//! `model` from them to pick a pool, the Whisper worker reads every field. Fields are
//! matched by their exact `name` — never by searching the bytes, which would find
//! `name="model"` inside a part's `filename="model"` or in the uploaded data.

use bytes::Bytes;

use crate::error::ApiError;

/// One part of a form.
#[derive(Debug, Clone)]
pub struct Part {
    /// The `name` of its `Content-Disposition`.
    pub name: String,
    pub file_name: Option<String>,
    pub content_type: Option<String>,
    pub data: Bytes,
}

impl Part {
    /// The part's value as a text field: a file upload or non-UTF-8 data where text
    /// belongs is a 400 naming `param`.
    pub fn text(&self, param: &'static str) -> Result<String, ApiError> {
        if self.file_name.is_some() {
            return Err(ApiError::invalid(
                format!("'{param}' must be a text field, not a file upload"),
                param,
            ));
        }
        String::from_utf8(self.data.to_vec())
            .map_err(|_| ApiError::invalid(format!("'{param}' must be UTF-8 text"), param))
    }

    /// A part sent as an upload (with a filename or a content type), not a text field.
    pub fn is_file(&self) -> bool {
        self.file_name.is_some() || self.content_type.is_some()
    }
}

/// True when `content_type` says `multipart/form-data` (any case, any parameters).
pub fn is_form(content_type: &str) -> bool {
    content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .eq_ignore_ascii_case("multipart/form-data")
}

/// Reads every part of a form held in memory. `content_type` is the request's header,
/// which carries the boundary; a missing or different type, a bad boundary or a
/// malformed body is a 400.
pub async fn read_form(content_type: Option<&str>, body: Bytes) -> Result<Vec<Part>, ApiError> {
    let content_type = content_type.unwrap_or("");
    if !is_form(content_type) {
        let got = if content_type.is_empty() {
            "no Content-Type".to_string()
        } else {
            format!("Content-Type '{content_type}'")
        };
        return Err(ApiError::invalid(
            format!(
                "Audio uploads must be sent as multipart/form-data (with the audio in a \
                 'file' field), got {got}"
            ),
            None,
        ));
    }
    let boundary = multer::parse_boundary(content_type).map_err(|e| {
        ApiError::invalid(
            format!("Invalid multipart/form-data Content-Type '{content_type}': {e}"),
            None,
        )
    })?;
    let stream = futures_util::stream::once(async move { Ok::<_, std::io::Error>(body) });
    let mut form = multer::Multipart::new(stream, boundary);
    let malformed = |e: multer::Error| {
        ApiError::invalid(
            format!("Could not parse the multipart/form-data body: {e}"),
            None,
        )
    };
    let mut parts = Vec::new();
    while let Some(field) = form.next_field().await.map_err(malformed)? {
        let name = field.name().unwrap_or("").to_string();
        let file_name = field.file_name().map(str::to_string);
        let content_type = field.content_type().map(|m| m.to_string());
        let data = field.bytes().await.map_err(malformed)?;
        parts.push(Part {
            name,
            file_name,
            content_type,
            data,
        });
    }
    Ok(parts)
}

/// The text value of the first field called exactly `name`, if the form has one.
pub async fn text_field(
    content_type: Option<&str>,
    body: Bytes,
    name: &'static str,
) -> Result<Option<String>, ApiError> {
    let parts = read_form(content_type, body).await?;
    parts
        .iter()
        .find(|p| p.name == name)
        .map(|p| p.text(name))
        .transpose()
}

#[cfg(test)]
mod tests {
    use super::*;

    const CT: &str = "multipart/form-data; boundary=XyZ";

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        // The body is in memory: the future never waits on I/O.
        let waker = std::task::Waker::noop();
        let mut cx = std::task::Context::from_waker(waker);
        let mut f = std::pin::pin!(f);
        loop {
            if let std::task::Poll::Ready(v) = f.as_mut().poll(&mut cx) {
                return v;
            }
        }
    }

    fn model(body: &'static [u8]) -> Result<Option<String>, ApiError> {
        block_on(text_field(Some(CT), Bytes::from_static(body), "model"))
    }

    #[test]
    fn finds_the_model_field() {
        let body = b"--XyZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.wav\"\r\n\r\nRIFF....\r\n--XyZ\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\nwhisper-1\r\n--XyZ--\r\n";
        assert_eq!(model(body).unwrap().as_deref(), Some("whisper-1"));
        let parts = block_on(read_form(Some(CT), Bytes::from_static(body))).unwrap();
        assert_eq!(parts.len(), 2);
        assert!(parts[0].is_file() && !parts[1].is_file());
        assert_eq!(&parts[0].data[..], b"RIFF....");
    }

    /// `curl -F file=@model -F model=whisper-1`: the file part's *filename* is `model`
    /// and its bytes are audio; the model is the text field after it.
    #[test]
    fn a_file_named_model_is_not_the_model_field() {
        let body = b"--XyZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"model\"\r\nContent-Type: application/octet-stream\r\n\r\nRIFF\r\nname=\"model\"\r\n--XyZ\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\nwhisper-1\r\n--XyZ--\r\n";
        assert_eq!(model(body).unwrap().as_deref(), Some("whisper-1"));
        let no_model = b"--XyZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"model\"\r\n\r\nRIFF\r\n--XyZ--\r\n";
        assert_eq!(model(no_model).unwrap(), None);
    }

    #[test]
    fn bad_forms_are_400s() {
        let cut = b"--XyZ\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\nwhis";
        assert_eq!(model(cut).unwrap_err().status(), 400);
        let e = block_on(read_form(Some("application/json"), Bytes::new())).unwrap_err();
        assert!(e.to_string().contains("multipart/form-data"), "{e}");
        let e = block_on(read_form(Some("multipart/form-data"), Bytes::new())).unwrap_err();
        assert!(e.to_string().contains("boundary"), "{e}");
        let file_as_model = b"--XyZ\r\nContent-Disposition: form-data; name=\"model\"; filename=\"m\"\r\n\r\nx\r\n--XyZ--\r\n";
        assert_eq!(model(file_as_model).unwrap_err().param(), Some("model"));
        assert!(is_form("Multipart/Form-Data; charset=utf-8; boundary=a"));
    }
}
