//! OpenAI request shapes for `/v1/chat/completions` and `/v1/completions`: the shared
//! contract in [`surge_protocol::openai`], re-exported here for the validator.
//!
//! Unknown fields are ignored (clients send many we do not use); known fields are
//! checked in `validate.rs`, where errors get a `param`.

pub use surge_protocol::openai::{
    ChatCompletionRequest, ChatMessageIn, CommonParams, CompletionRequest, ContentIn, ContentPart,
    PromptIn, StopIn, StreamOptions,
};
