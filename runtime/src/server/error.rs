//! The worker's errors are the contract's: one [`ApiError`] shared with the gateway
//! (status, OpenAI body, `Retry-After`), rendered by axum through the protocol crate's
//! `axum` feature.

pub use surge_protocol::error::{parse_json, ApiError, ErrorBody};
