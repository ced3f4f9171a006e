//! Command-line grammar and dispatch. Flags that mirror an environment variable are applied as
//! if that variable were set, so both go through the same validation in
//! `insights_core::Settings` and errors name the variable either way.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use insights_core::{ConfigError, Settings};
use insights_worker::WorkerError;

/// How a command failed, for the exit code.
pub enum Failure {
    /// Bad usage or configuration: exit 2.
    Usage(String),
    /// Runtime failure: exit 1.
    Runtime(anyhow::Error),
}

impl From<ConfigError> for Failure {
    fn from(e: ConfigError) -> Self {
        Failure::Usage(e.to_string())
    }
}

impl From<WorkerError> for Failure {
    fn from(e: WorkerError) -> Self {
        match e {
            WorkerError::Config(msg) => Failure::Usage(msg),
            other => Failure::Runtime(anyhow::Error::new(other)),
        }
    }
}

impl From<anyhow::Error> for Failure {
    fn from(e: anyhow::Error) -> Self {
        Failure::Runtime(e)
    }
}

#[derive(Debug, Parser)]
#[command(
    name = "insights",
    version,
    about = "LLM-written conversation insights for booked leads, without starving the database",
    after_help = "Configuration comes from the environment (see the README); the flags below override it."
)]
pub struct Cli {
    #[command(flatten)]
    pub overrides: Overrides,
    #[command(subcommand)]
    pub command: Command,
}

/// Flags that override environment variables (same names, same validation).
#[derive(Debug, Args)]
pub struct Overrides {
    /// Overrides DATABASE_URL.
    #[arg(long, global = true, value_name = "URL")]
    pub database_url: Option<String>,
    /// Overrides QUEUE_DATABASE_URL.
    #[arg(long, global = true, value_name = "URL")]
    pub queue_database_url: Option<String>,
    /// Overrides DIRECT_DATABASE_URL.
    #[arg(long, global = true, value_name = "URL")]
    pub direct_database_url: Option<String>,
    /// Overrides INSIGHTS_DB_POOLER (`none` or `transaction`).
    #[arg(long, global = true, value_name = "MODE")]
    pub db_pooler: Option<String>,
    /// Overrides INSIGHTS_DB_POOL_MAX.
    #[arg(long, global = true, value_name = "N")]
    pub pool_max: Option<String>,
    /// Overrides INSIGHTS_MAX_ATTEMPTS.
    #[arg(long, global = true, value_name = "N")]
    pub max_attempts: Option<String>,
    /// Overrides INSIGHTS_BREAKER_THRESHOLD.
    #[arg(long, global = true, value_name = "N")]
    pub breaker_threshold: Option<String>,
    /// Overrides INSIGHTS_LLM_BASE_URL.
    #[arg(long, global = true, value_name = "URL")]
    pub llm_base_url: Option<String>,
    /// Overrides INSIGHTS_LLM_MODEL.
    #[arg(long, global = true, value_name = "NAME")]
    pub llm_model: Option<String>,
    /// Overrides INSIGHTS_HTTP_BIND (`off` disables the HTTP server of `work`).
    #[arg(long, global = true, value_name = "ADDR")]
    pub http_bind: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Apply the domain and queue migrations (through DIRECT_DATABASE_URL when set).
    Migrate,
    /// Insert deterministic synthetic leads with message threads.
    Seed {
        /// Number of leads to create.
        #[arg(long, value_name = "N")]
        leads: u64,
        /// Random seed (same seed, same data).
        #[arg(long, value_name = "S", default_value_t = 42)]
        seed: u64,
    },
    /// Enqueue one job per booked lead whose insight is missing or stale.
    Enqueue {
        /// At most this many leads (overrides INSIGHTS_ENQUEUE_LIMIT).
        #[arg(long, value_name = "N")]
        limit: Option<String>,
        /// Enqueue these leads (when they exist and are booked) instead of querying candidates.
        #[arg(long = "lead-id", value_name = "ID")]
        lead_ids: Vec<i64>,
        /// Count candidates without enqueueing.
        #[arg(long)]
        dry_run: bool,
        /// Print `{"candidates":N,"enqueued":N,"duplicates":N}`.
        #[arg(long)]
        json: bool,
    },
    /// Run the worker.
    Work {
        /// Jobs in flight (overrides INSIGHTS_CONCURRENCY).
        #[arg(long, value_name = "N")]
        concurrency: Option<String>,
        /// Stop once no job is available, scheduled, retryable or running.
        #[arg(long)]
        exit_when_idle: bool,
        /// Print the final summary as JSON on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Job counts by state of the insights queue.
    Status {
        #[arg(long)]
        json: bool,
    },
    /// Inspect and steer individual jobs.
    Jobs {
        #[command(subcommand)]
        command: JobsCommand,
    },
    /// Serve the dashboard, health and metrics without working jobs.
    Dashboard,
    /// Serve a mock OpenAI-compatible LLM (for tests and demos).
    MockLlm(MockLlmArgs),
    /// One command on the local Postgres: create, migrate, seed, work with an in-process mock LLM,
    /// print a summary.
    Demo {
        /// Leads to seed.
        #[arg(long, value_name = "N")]
        leads: Option<u64>,
        /// Mock LLM latency.
        #[arg(long, value_name = "MS")]
        latency_ms: Option<u64>,
        /// Jobs in flight.
        #[arg(long, value_name = "N")]
        concurrency: Option<usize>,
        /// Print the summary as JSON on stdout.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum JobsCommand {
    /// List jobs, newest first.
    List {
        /// Only this state (available, scheduled, running, retryable, completed, discarded,
        /// cancelled).
        #[arg(long, value_name = "STATE")]
        state: Option<String>,
        #[arg(long, value_name = "N", default_value_t = 20)]
        limit: u32,
        #[arg(long)]
        json: bool,
    },
    /// Show one job with its errors.
    Show {
        id: i64,
        #[arg(long)]
        json: bool,
    },
    /// Make a discarded (or cancelled) job available again.
    Retry { id: i64 },
    /// Cancel an available, scheduled or retryable job.
    Cancel { id: i64 },
}

#[derive(Debug, Args)]
pub struct MockLlmArgs {
    /// Address to listen on.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8089")]
    pub bind: SocketAddr,
    /// Latency of every answered request.
    #[arg(long, value_name = "MS", default_value_t = 0)]
    pub latency_ms: u64,
    /// Extra latency, uniform in 0..N ms.
    #[arg(long, value_name = "MS", default_value_t = 0)]
    pub latency_jitter_ms: u64,
    /// Fraction of requests answered with HTTP 500 (0 to 1).
    #[arg(long, value_name = "P", default_value_t = 0.0)]
    pub fail_rate: f64,
    /// Fraction of requests answered with content that is not a valid insight (0 to 1).
    #[arg(long, value_name = "P", default_value_t = 0.0)]
    pub malformed_rate: f64,
    /// Every N requests, the last `--rate-limit-burst` get a 429.
    #[arg(long, value_name = "N")]
    pub rate_limit_every: Option<u64>,
    /// Length of each 429 burst.
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub rate_limit_burst: u64,
    /// `retry-after-ms` of the 429s.
    #[arg(long, value_name = "MS", default_value_t = 100)]
    pub retry_after_ms: u64,
    /// Start in an outage (every request 503).
    #[arg(long)]
    pub outage: bool,
    /// Seed of the fault plan.
    #[arg(long, value_name = "S", default_value_t = 0)]
    pub seed: u64,
}

impl Overrides {
    fn vars(&self) -> HashMap<&'static str, String> {
        let mut m = HashMap::new();
        let mut put = |name: &'static str, v: &Option<String>| {
            if let Some(v) = v {
                m.insert(name, v.clone());
            }
        };
        put("DATABASE_URL", &self.database_url);
        put("QUEUE_DATABASE_URL", &self.queue_database_url);
        put("DIRECT_DATABASE_URL", &self.direct_database_url);
        put("INSIGHTS_DB_POOLER", &self.db_pooler);
        put("INSIGHTS_DB_POOL_MAX", &self.pool_max);
        put("INSIGHTS_MAX_ATTEMPTS", &self.max_attempts);
        put("INSIGHTS_BREAKER_THRESHOLD", &self.breaker_threshold);
        put("INSIGHTS_LLM_BASE_URL", &self.llm_base_url);
        put("INSIGHTS_LLM_MODEL", &self.llm_model);
        if self.http_bind.as_deref() != Some("off") {
            put("INSIGHTS_HTTP_BIND", &self.http_bind);
        }
        m
    }
}

/// Settings from the environment with `extra` (flag values keyed by variable) on top.
fn settings(
    overrides: &Overrides,
    extra: &[(&'static str, &Option<String>)],
) -> Result<Settings, ConfigError> {
    let mut vars = overrides.vars();
    for (name, value) in extra {
        if let Some(v) = value {
            vars.insert(name, v.clone());
        }
    }
    Settings::from_lookup(|name| vars.get(name).cloned().or_else(|| std::env::var(name).ok()))
}

pub async fn run(cli: Cli) -> Result<(), Failure> {
    let ov = &cli.overrides;
    let http_off = ov.http_bind.as_deref() == Some("off");
    match cli.command {
        Command::Migrate => {
            let s = settings(ov, &[])?;
            insights_worker::admin::migrate(&s).await?;
            println!("migrations applied");
        }
        Command::Seed { leads, seed } => {
            let s = settings(ov, &[])?;
            let report = insights_worker::admin::seed(&s, leads, seed).await?;
            println!("{report}");
        }
        Command::Enqueue {
            limit,
            lead_ids,
            dry_run,
            json,
        } => {
            let s = settings(ov, &[("INSIGHTS_ENQUEUE_LIMIT", &limit)])?;
            let report = insights_worker::admin::enqueue(
                &s,
                insights_worker::producer::EnqueueRequest {
                    limit: s.enqueue_limit,
                    lead_ids,
                    dry_run,
                },
            )
            .await?;
            if json {
                println!(
                    "{}",
                    serde_json::to_string(&report).map_err(anyhow::Error::new)?
                );
            } else {
                println!(
                    "candidates: {}, enqueued: {}, duplicates: {}{}",
                    report.candidates,
                    report.enqueued,
                    report.duplicates,
                    if dry_run { " (dry run)" } else { "" }
                );
            }
        }
        Command::Work {
            concurrency,
            exit_when_idle,
            json,
        } => {
            let s = settings(ov, &[("INSIGHTS_CONCURRENCY", &concurrency)])?;
            let mut opts = insights_worker::runner::WorkerOptions::from_settings(&s)?;
            opts.exit_when_idle = exit_when_idle;
            if http_off {
                opts.http_bind = None;
            }
            let summary = insights_worker::runner::run_worker(opts).await?;
            if json {
                println!(
                    "{}",
                    serde_json::to_string(&summary).map_err(anyhow::Error::new)?
                );
            }
        }
        Command::Status { json } => {
            let s = settings(ov, &[])?;
            let status = insights_worker::admin::status(&s).await?;
            if json {
                println!(
                    "{}",
                    serde_json::to_string(&status).map_err(anyhow::Error::new)?
                );
            } else {
                print!("{status}");
            }
        }
        Command::Jobs { command } => {
            let s = settings(ov, &[])?;
            jobs(&s, command).await?;
        }
        Command::Dashboard => {
            let s = settings(ov, &[])?;
            insights_worker::runner::run_dashboard(&s).await?;
        }
        Command::MockLlm(args) => mock_llm(args).await?,
        Command::Demo {
            leads,
            latency_ms,
            concurrency,
            json,
        } => {
            let mut opts = insights_worker::demo::DemoOptions::default();
            if let Some(n) = leads {
                opts.leads = n;
            }
            if let Some(ms) = latency_ms {
                opts.llm_latency = Duration::from_millis(ms);
            }
            if let Some(c) = concurrency {
                if c == 0 {
                    return Err(Failure::Usage(
                        "--concurrency: expected a whole number from 1 to 4096, got 0".into(),
                    ));
                }
                opts.concurrency = c;
            }
            opts.database_url = ov.database_url.clone().or_else(|| {
                std::env::var("DATABASE_URL")
                    .ok()
                    .filter(|v| !v.trim().is_empty())
            });
            let summary = insights_worker::demo::run_demo(opts).await?;
            if json {
                println!(
                    "{}",
                    serde_json::to_string(&summary).map_err(anyhow::Error::new)?
                );
            } else {
                print!("{summary}");
            }
        }
    }
    Ok(())
}

async fn jobs(s: &Settings, command: JobsCommand) -> Result<(), Failure> {
    use insights_worker::admin;
    match command {
        JobsCommand::List { state, limit, json } => {
            let state = state
                .map(|st| st.parse::<insights_queue::JobState>())
                .transpose()
                .map_err(|e| Failure::Usage(format!("--state: {e}")))?;
            let jobs = admin::list_jobs(s, state, limit).await?;
            if json {
                println!(
                    "{}",
                    serde_json::to_string(&jobs).map_err(anyhow::Error::new)?
                );
            } else {
                print!("{}", admin::format_job_list(&jobs));
            }
        }
        JobsCommand::Show { id, json } => {
            let job = admin::show_job(s, id).await?;
            if json {
                println!(
                    "{}",
                    serde_json::to_string(&job).map_err(anyhow::Error::new)?
                );
            } else {
                print!("{}", admin::format_job(&job));
            }
        }
        JobsCommand::Retry { id } => {
            admin::retry_job(s, id).await?;
            println!("job {id} is available again");
        }
        JobsCommand::Cancel { id } => {
            admin::cancel_job(s, id).await?;
            println!("job {id} cancelled");
        }
    }
    Ok(())
}

async fn mock_llm(args: MockLlmArgs) -> Result<(), Failure> {
    use insights_llm::mock::{MockLlmConfig, RateLimitBurst};
    for (flag, p) in [
        ("--fail-rate", args.fail_rate),
        ("--malformed-rate", args.malformed_rate),
    ] {
        if !(0.0..=1.0).contains(&p) {
            return Err(Failure::Usage(format!(
                "{flag}: expected a fraction from 0 to 1, got {p}"
            )));
        }
    }
    let config = MockLlmConfig {
        latency: Duration::from_millis(args.latency_ms),
        latency_jitter: Duration::from_millis(args.latency_jitter_ms),
        fail_rate: args.fail_rate,
        rate_limit: args.rate_limit_every.map(|every_n| RateLimitBurst {
            every_n,
            burst_len: args.rate_limit_burst,
            retry_after_ms: args.retry_after_ms,
        }),
        malformed_rate: args.malformed_rate,
        outage: args.outage,
        seed: args.seed,
        ..MockLlmConfig::default()
    };
    insights_worker::admin::serve_mock_llm(args.bind, config).await?;
    Ok(())
}
