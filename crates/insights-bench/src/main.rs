//! `insights-bench queue|pipeline|connections [--json]`.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use insights_bench::pipeline_cmd::{self, ConnectionsArgs, PipelineArgs};
use insights_bench::queue_cmd::{self, QueueArgs};

/// The same allocator as the `insights` binary, so the in-process pipeline runs as it would
/// there.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
#[command(
    name = "insights-bench",
    about = "Benchmarks of the queue and the pipeline against their baselines"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Our queue against apalis-postgres 1.0: no-op drain, bulk enqueue, slow handler, decay.
    Queue(QueueArgs),
    /// The pipeline end to end: seeded leads, producer, worker, mock LLM at 0 ms: leads/s.
    Pipeline(PipelineArgs),
    /// Connection economy: mock LLM at 1 s, concurrency 256, pool max 4, against a naive worker
    /// that holds its connection through the LLM call.
    Connections(ConnectionsArgs),
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    // Logs of the code under test go to stderr; quiet unless RUST_LOG asks.
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
                tracing_subscriber::EnvFilter::new("warn,sqlx::pool::acquire=error")
            }),
        )
        .with_writer(std::io::stderr)
        .init();
    let result = match cli.command {
        Command::Queue(args) => queue_cmd::run(args).await,
        Command::Pipeline(args) => pipeline_cmd::run_pipeline(args).await,
        Command::Connections(args) => pipeline_cmd::run_connections(args).await,
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
