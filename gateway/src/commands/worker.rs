//! `surge worker`: the process the gateway spawns, one model each. Also usable alone:
//! `surge worker --model smollm2-135m-instruct --listen tcp:127.0.0.1:9000`, or
//! `surge worker --model whisper-tiny.en …` for speech to text.
//!
//! The flags are the contract's [`WorkerOptions`] (`surge_protocol::worker`), which the
//! gateway renders back into a worker's command line.

use clap::Args;
use surge_runtime::worker::{self, WorkerOptions};

#[derive(Args, Debug)]
pub struct WorkerCommand {
    #[command(flatten)]
    pub options: WorkerOptions,
}

pub fn run(cmd: WorkerCommand) -> i32 {
    worker::run(cmd.options)
}
