//! The `surge` binary: parses arguments and hands off to the command modules.

use clap::{Parser, Subcommand};
use surge_gateway::commands::models::ModelsCommand;
use surge_gateway::commands::serve::ServeCommand;
use surge_gateway::commands::worker::WorkerCommand;
use surge_gateway::telemetry::{self, TraceConfig};

#[derive(Parser)]
#[command(
    name = "surge",
    version,
    about = "Self-hosted serverless inference gateway"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the OpenAI-compatible gateway: starts workers on demand, scales them to zero.
    Serve(ServeCommand),
    /// Manage the shared model cache.
    Models(ModelsCommand),
    /// Manage API keys (stored hashed in the ledger database).
    Keys(surge_gateway::commands::keys::KeysCommand),
    /// Usage reports from the ledger.
    Usage(surge_gateway::commands::usage::UsageCommand),
    /// Serve one cached model (the process the gateway spawns).
    Worker(WorkerCommand),
}

fn main() {
    // The cold-start clock of `surge worker` (its /health reports spawn → main → ready).
    surge_runtime::server::startup::mark_main();
    let cli = Cli::parse();
    let (service, trace) = match &cli.command {
        Command::Serve(cmd) => ("surge-gateway", cmd.trace()),
        Command::Worker(_) => ("surge-worker", TraceConfig::from_env()),
        _ => ("surge", None),
    };
    let telemetry = telemetry::init(service, trace);
    let code = match cli.command {
        Command::Serve(cmd) => surge_gateway::commands::serve::run(cmd),
        Command::Models(cmd) => surge_gateway::commands::models::run(cmd),
        Command::Keys(cmd) => surge_gateway::commands::keys::run(cmd),
        Command::Usage(cmd) => surge_gateway::commands::usage::run(cmd),
        Command::Worker(cmd) => surge_gateway::commands::worker::run(cmd),
    };
    // Exports the last spans (exit skips destructors).
    drop(telemetry);
    std::process::exit(code);
}
