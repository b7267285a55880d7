//! The contracts of surge as types, shared by the gateway, the workers and the load
//! tester so that a client, the proxy and a worker cannot disagree about a shape.
//!
//! - [`error`]: one error type → HTTP status, OpenAI `type`/`code`/`param`, `Retry-After`
//! - [`openai`]: OpenAI requests, responses, stream chunks and usage, as surge speaks them
//! - [`sse`]: server-sent event framing (writing) and an incremental reader
//! - [`multipart`]: reading fields of a `multipart/form-data` body
//! - [`prom`]: reading the Prometheus text format (tests, benches, the load tester)
//! - [`worker`]: gateway ↔ worker: `surge worker`'s options, where it listens, its `/health`

pub mod error;
pub mod multipart;
pub mod openai;
pub mod prom;
pub mod sse;
pub mod worker;
