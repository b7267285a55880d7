//! The Whisper worker process: `surge worker --model NAME` for a Whisper model.

pub mod metrics;
pub mod scheduler;
