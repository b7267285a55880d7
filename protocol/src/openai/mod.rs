//! OpenAI's API shapes as surge speaks them: the requests of `/v1/chat/completions` and
//! `/v1/completions`, their responses and stream chunks, usage, the transcription
//! responses of `/v1/audio/transcriptions`, and the model list.
//!
//! The worker serialises these and nothing else, so what they say is what goes on the
//! wire: a field without `skip_serializing_if` is always present (as `null` when `None`),
//! one with it appears only when set. surge adds `surge_execution` (how the request ran)
//! beside OpenAI's `usage`.
//!
//! Reading is lenient, for clients of other OpenAI-compatible servers (the load tester
//! measures llama.cpp and others too): unknown fields are ignored and the fields a client
//! does not need (`id`, `created`, `index`, …) default when missing. What identifies a
//! shape stays required: `choices` of a completion or chunk, `delta` of a chat chunk's
//! choice, `message` of a chat choice, `text` of a text choice and of a transcription.

mod chat;
mod common;
mod completion;
mod models;
mod request;
mod stream;
#[cfg(test)]
mod tests;
mod transcription;

pub use chat::*;
pub use common::*;
pub use completion::*;
pub use models::*;
pub use request::*;
pub use stream::*;
pub use transcription::*;
