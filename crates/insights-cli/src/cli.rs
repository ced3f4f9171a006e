//! Command-line grammar and dispatch. Flags that mirror an environment variable are applied as
//! if that variable were set, so both go through the same validation in
//! `insights_core::Settings` and errors name the variable either way.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use insights_core::{ConfigError, Settings};
use insights_worker::demo::DemoOptions;
use insights_worker::producer::EnqueueRequest;
use insights_worker::{RunOptions, WorkerError, admin, http};

/// How a command failed, for the exit code.
pub enum Failure {
    /// Bad usage or configuration: exit 2.
    Usage(String),
    /// Runtime failure: exit 1.
    Runtime(anyhow::Error),
    /// A profile the database cannot serve: exit 2, one line per problem.
    Problems(Vec<String>),
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
            WorkerError::Unusable(lines) => Failure::Problems(lines),
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
    /// Overrides INSIGHTS_PROFILE: the profile `enqueue`, `work` and `check` use, and with which
    /// `migrate` applies only the queue's migrations (`demo` keeps the built-in profile).
    #[arg(long, global = true, value_name = "FILE")]
    pub profile: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Apply the domain and queue migrations (through DIRECT_DATABASE_URL when set); with a
    /// profile only the queue's (the tables are the app's).
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
    Enqueue(EnqueueArgs),
    /// Run the worker.
    Work(WorkArgs),
    /// Check the profile against the app database without changing anything: statement types
    /// against the contract, the candidate query's plan, the prompt for a real lead. Exit 0
    /// when usable (warnings allowed), 2 with one line per problem, 1 when the database cannot
    /// be reached.
    Check(CheckArgs),
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
    Demo(DemoArgs),
    /// Exit 0 when this machine's worker answers GET /healthz within 2 s, else 1 (for a
    /// container's HEALTHCHECK: the image has no curl).
    Healthcheck,
}

#[derive(Debug, Args)]
pub struct EnqueueArgs {
    /// At most this many leads (overrides INSIGHTS_ENQUEUE_LIMIT).
    #[arg(long, value_name = "N")]
    pub limit: Option<String>,
    /// Enqueue these leads (when they exist and are booked) instead of querying candidates;
    /// keys of the profile's type (a number, a uuid or text).
    #[arg(long = "lead-id", value_name = "KEY")]
    pub lead_ids: Vec<String>,
    /// Count candidates without enqueueing.
    #[arg(long)]
    pub dry_run: bool,
    /// Print `{"candidates":N,"enqueued":N,"duplicates":N}`.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Print the prompt rendered for the sample lead.
    #[arg(long)]
    pub show_prompt: bool,
    /// Print the report as JSON on stdout: problems (severity, statement, column or parameter,
    /// expected, found, message), the plan, the sample.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct WorkArgs {
    /// Jobs in flight (overrides INSIGHTS_CONCURRENCY).
    #[arg(long, value_name = "N")]
    pub concurrency: Option<String>,
    /// Stop once no job is available, scheduled, retryable or running.
    #[arg(long)]
    pub exit_when_idle: bool,
    /// Print the final summary as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Leads to seed.
    #[arg(long, value_name = "N")]
    pub leads: Option<u64>,
    /// Mock LLM latency.
    #[arg(long, value_name = "MS")]
    pub latency_ms: Option<u64>,
    /// Jobs in flight.
    #[arg(long, value_name = "N", value_parser = parse_concurrency)]
    pub concurrency: Option<usize>,
    /// Print the summary as JSON on stdout.
    #[arg(long)]
    pub json: bool,
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
    #[arg(long, value_name = "P", default_value_t = 0.0, value_parser = parse_fraction)]
    pub fail_rate: f64,
    /// Fraction of requests answered with content that is not a valid insight (0 to 1).
    #[arg(long, value_name = "P", default_value_t = 0.0, value_parser = parse_fraction)]
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

/// `--concurrency` of `demo`: the range `INSIGHTS_CONCURRENCY` accepts.
fn parse_concurrency(v: &str) -> Result<usize, String> {
    use insights_core::config::{Form, INSIGHTS_CONCURRENCY};
    INSIGHTS_CONCURRENCY
        .form
        .parse(v.trim())
        .map_err(|expected| format!("expected {expected}, got {v}"))
}

/// A probability for the mock's fault rates.
fn parse_fraction(v: &str) -> Result<f64, String> {
    match v.trim().parse::<f64>() {
        Ok(p) if (0.0..=1.0).contains(&p) => Ok(p),
        _ => Err(format!("expected a fraction from 0 to 1, got {v}")),
    }
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
        put("INSIGHTS_PROFILE", &self.profile);
        if !self.http_off() {
            put("INSIGHTS_HTTP_BIND", &self.http_bind);
        }
        m
    }

    /// `--http-bind off`: `work` runs without its HTTP server.
    fn http_off(&self) -> bool {
        self.http_bind.as_deref() == Some("off")
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
    // A flag overrides the variable's `_FILE` companion too, as it overrides the variable.
    let overridden_file = |name: &str| {
        name.strip_suffix("_FILE")
            .is_some_and(|variable| vars.contains_key(variable))
    };
    Settings::from_lookup(|name| match vars.get(name) {
        Some(value) => Some(value.clone()),
        None if overridden_file(name) => None,
        None => std::env::var(name).ok(),
    })
}

/// Runs one command: settings from the environment and flags, the `insights-worker` call, the
/// output.
pub async fn run(cli: Cli) -> Result<(), Failure> {
    let ov = &cli.overrides;
    match cli.command {
        Command::Migrate => migrate(ov).await,
        Command::Seed { leads, seed } => seed_leads(ov, leads, seed).await,
        Command::Enqueue(args) => enqueue(ov, args).await,
        Command::Work(args) => work(ov, args).await,
        Command::Check(args) => check(ov, args).await,
        Command::Status { json } => status(ov, json).await,
        Command::Jobs { command } => jobs(&settings(ov, &[])?, command).await,
        Command::Dashboard => Ok(http::run_dashboard(&settings(ov, &[])?).await?),
        Command::MockLlm(args) => mock_llm(args).await,
        Command::Demo(args) => demo(ov, args).await,
        Command::Healthcheck => healthcheck(ov).await,
    }
}

/// `value` as one line of JSON on stdout.
fn print_json(value: &impl serde::Serialize) -> Result<(), Failure> {
    println!(
        "{}",
        serde_json::to_string(value).map_err(anyhow::Error::new)?
    );
    Ok(())
}

async fn migrate(ov: &Overrides) -> Result<(), Failure> {
    let s = settings(ov, &[])?;
    admin::migrate(&s, &*insights_worker::load_profile(s.profile.as_deref())?).await?;
    println!("migrations applied");
    Ok(())
}

async fn seed_leads(ov: &Overrides, leads: u64, seed: u64) -> Result<(), Failure> {
    let report = admin::seed(&settings(ov, &[])?, leads, seed).await?;
    println!("{report}");
    Ok(())
}

async fn enqueue(ov: &Overrides, args: EnqueueArgs) -> Result<(), Failure> {
    let s = settings(ov, &[("INSIGHTS_ENQUEUE_LIMIT", &args.limit)])?;
    let profile = insights_worker::load_profile(s.profile.as_deref())?;
    let kind = profile.lead_key();
    let lead_ids = args
        .lead_ids
        .iter()
        .map(|raw| kind.parse(raw))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| WorkerError::Config(format!("--lead-id: {e}")))?;
    let request = EnqueueRequest {
        limit: s.enqueue_limit,
        lead_ids,
        dry_run: args.dry_run,
    };
    let report = admin::enqueue(&s, &profile, request).await?;
    if args.json {
        return print_json(&report);
    }
    let dry_run = if args.dry_run { " (dry run)" } else { "" };
    println!("{report}{dry_run}");
    Ok(())
}

async fn work(ov: &Overrides, args: WorkArgs) -> Result<(), Failure> {
    let s = settings(ov, &[("INSIGHTS_CONCURRENCY", &args.concurrency)])?;
    let mut options = RunOptions::from_settings(&s)?;
    options.exit_when_idle = args.exit_when_idle;
    if ov.http_off() {
        options.http_bind = None;
    }
    let summary = insights_worker::run_worker(options).await?;
    if args.json {
        print_json(&summary)?;
    }
    Ok(())
}

async fn check(ov: &Overrides, args: CheckArgs) -> Result<(), Failure> {
    use insights_worker::check::CheckOptions;
    let options = CheckOptions {
        show_prompt: args.show_prompt,
    };
    let report = insights_worker::check::check(&settings(ov, &[])?, options).await?;
    if args.json {
        print_json(&report)?;
    } else {
        print!("{report}");
    }
    for warning in report.warnings() {
        eprintln!("warning: {}", warning.line());
    }
    if report.usable() {
        Ok(())
    } else {
        Err(Failure::Problems(report.error_lines()))
    }
}

async fn status(ov: &Overrides, json: bool) -> Result<(), Failure> {
    let status = admin::status(&settings(ov, &[])?).await?;
    if json {
        return print_json(&status);
    }
    print!("{status}");
    Ok(())
}

async fn jobs(s: &Settings, command: JobsCommand) -> Result<(), Failure> {
    match command {
        JobsCommand::List { state, limit, json } => {
            let state = state
                .map(|st| st.parse::<insights_queue::JobState>())
                .transpose()
                .map_err(|e| Failure::Usage(format!("--state: {e}")))?;
            let jobs = admin::list_jobs(s, state, limit).await?;
            if json {
                return print_json(&jobs);
            }
            print!("{}", admin::format_job_list(&jobs));
        }
        JobsCommand::Show { id, json } => {
            let job = admin::show_job(s, id).await?;
            if json {
                return print_json(&job);
            }
            print!("{}", admin::format_job(&job));
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
    admin::serve_mock_llm(args.bind, config).await?;
    Ok(())
}

async fn demo(ov: &Overrides, args: DemoArgs) -> Result<(), Failure> {
    let defaults = DemoOptions::default();
    let options = DemoOptions {
        database_url: ov.database_url.clone().or_else(|| {
            std::env::var("DATABASE_URL")
                .ok()
                .filter(|v| !v.trim().is_empty())
        }),
        leads: args.leads.unwrap_or(defaults.leads),
        llm_latency: args
            .latency_ms
            .map_or(defaults.llm_latency, Duration::from_millis),
        concurrency: args.concurrency.unwrap_or(defaults.concurrency),
        ..defaults
    };
    let summary = insights_worker::demo::run_demo(options).await?;
    if args.json {
        return print_json(&summary);
    }
    print!("{summary}");
    Ok(())
}

/// The bound of the whole health request, connection included.
const HEALTHCHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// GET `/healthz` on the address `INSIGHTS_HTTP_BIND` (or `--http-bind`) names, through
/// loopback when it binds every interface. Every failure exits 1: a container runtime reserves
/// exit code 2 of a health check.
async fn healthcheck(ov: &Overrides) -> Result<(), Failure> {
    use insights_core::config::INSIGHTS_HTTP_BIND;
    let set = ov
        .http_bind
        .clone()
        .or_else(|| std::env::var(INSIGHTS_HTTP_BIND.name).ok())
        .filter(|v| !v.trim().is_empty());
    let bind = match set {
        Some(value) => INSIGHTS_HTTP_BIND
            .parse(&value)
            .map_err(|e| Failure::Runtime(anyhow::Error::new(e)))?,
        None => INSIGHTS_HTTP_BIND.default_value(),
    };
    let url = format!("http://{}/healthz", health_target(bind));
    let client = reqwest::Client::builder()
        .timeout(HEALTHCHECK_TIMEOUT)
        .build()
        .map_err(|e| anyhow::anyhow!("cannot build the HTTP client: {e}"))?;
    let response = client
        .get(&url)
        .send()
        .await
        .map_err(|e| anyhow::anyhow!("GET {url}: {e}"))?;
    if response.status().is_success() {
        Ok(())
    } else {
        Err(anyhow::anyhow!("GET {url}: {}", response.status()).into())
    }
}

/// Where a local client reaches a server bound to `bind`: loopback of the same family for an
/// unspecified address (`0.0.0.0`, `::`), the address itself otherwise.
fn health_target(bind: SocketAddr) -> SocketAddr {
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
    let ip = match bind.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::new(ip, bind.port())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_health_check_reaches_an_unspecified_bind_through_loopback() {
        let target = |bind: &str| health_target(bind.parse().unwrap_or_else(|e| panic!("{e}")));
        assert_eq!(target("0.0.0.0:9090").to_string(), "127.0.0.1:9090");
        assert_eq!(target("[::]:9191").to_string(), "[::1]:9191");
        assert_eq!(target("10.1.2.3:9090").to_string(), "10.1.2.3:9090");
    }
}
