//! surge-loadtest: the open-loop load generator for OpenAI-compatible endpoints.
//!
//! Not implemented yet; this crate holds the place in the workspace layout.
