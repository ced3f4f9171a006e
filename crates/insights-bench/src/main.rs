//! `insights-bench queue|pipeline|connections [--json]`.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use insights_bench::queue_cmd::{self, QueueArgs};

#[derive(Debug, Parser)]
#[command(
    name = "insights-bench",
    about = "Benchmarks against their baselines (issues 2 and 3)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Our queue against apalis-postgres 1.0: no-op drain, bulk enqueue, slow handler, decay.
    Queue(QueueArgs),
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Queue(args) => queue_cmd::run(args).await,
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("insights-bench: {e:#}");
            ExitCode::from(1)
        }
    }
}
