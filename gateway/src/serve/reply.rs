//! Writing the responses the gateway answers itself: JSON bodies and errors in
//! OpenAI's shape (with `Retry-After` and the key's `x-ratelimit-*` headers).

use bytes::Bytes;
use pingora::http::ResponseHeader;
use pingora::proxy::Session;
use pingora::Result;
use surge_protocol::error::ApiError;

use super::metrics::GatewayMetrics;

/// The request's `Authorization` header value.
pub fn authorization(session: &Session) -> Option<&str> {
    session
        .req_header()
        .headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
}

/// Writes a complete response with `extra` headers.
pub async fn write(
    session: &mut Session,
    status: u16,
    content_type: &str,
    body: Vec<u8>,
    extra: &[(&'static str, String)],
) -> Result<()> {
    let mut h = ResponseHeader::build(status, Some(3 + extra.len()))?;
    h.insert_header("Content-Type", content_type)?;
    h.insert_header("Content-Length", body.len().to_string())?;
    for (name, value) in extra {
        h.insert_header(*name, value.as_str())?;
    }
    session.write_response_header(Box::new(h), false).await?;
    session
        .write_response_body(Some(Bytes::from(body)), true)
        .await
}

/// A JSON value as a 200 (or `status`) response.
pub async fn json<T: serde::Serialize>(session: &mut Session, status: u16, v: &T) -> Result<()> {
    let body = serde_json::to_vec(v).expect("responses serialise");
    write(session, status, "application/json", body, &[]).await
}

/// Answers with `e` (OpenAI body, status, `Retry-After`) and counts it in
/// `surge_rejections_total{reason}`.
pub async fn error(
    session: &mut Session,
    metrics: &GatewayMetrics,
    e: &ApiError,
    extra: &[(&'static str, String)],
) -> Result<()> {
    metrics.rejections.with_label_values(&[e.reason()]).inc();
    let mut headers = extra.to_vec();
    if let Some(s) = e.retry_after() {
        headers.push(("Retry-After", s.to_string()));
    }
    write(
        session,
        e.status(),
        "application/json",
        e.body_bytes(),
        &headers,
    )
    .await
}
