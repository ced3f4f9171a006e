//! `insights demo`: one command on a machine with the local Postgres. Creates the demo database
//! if missing, migrates (domain + queue), seeds, starts the mock LLM in-process, enqueues,
//! works until the queue is drained, and returns a summary.
//!
//! Seeding appends (ids continue), so a second run works on its freshly seeded leads only: the
//! earlier ones already have fresh insights.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use insights_core::{DatabaseUrl, Profile, Settings};
use insights_llm::mock::{MockHandle, MockLlmConfig, serve_mock};
use insights_queue::Queue;
use insights_store::StoreOptions;
use percent_encoding::percent_decode_str;
use serde::Serialize;

use crate::defaults::{
    DEMO_CONCURRENCY, DEMO_DATABASE_URL, DEMO_LEADS, DEMO_LLM_LATENCY, DEMO_SEED,
};
use crate::error::WorkerError;
use crate::metrics::Metrics;
use crate::producer::{self, EnqueueRequest};
use crate::runner::{self, RunOptions, WorkerParts};
use crate::wiring::{self, store_err};

#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// `None`: [`DEMO_DATABASE_URL`].
    pub database_url: Option<String>,
    pub leads: u64,
    pub llm_latency: Duration,
    pub concurrency: usize,
    pub seed: u64,
}

impl Default for DemoOptions {
    fn default() -> Self {
        Self {
            database_url: None,
            leads: DEMO_LEADS,
            llm_latency: DEMO_LLM_LATENCY,
            concurrency: DEMO_CONCURRENCY,
            seed: DEMO_SEED,
        }
    }
}

/// What the demo prints.
#[derive(Debug, Clone, Serialize)]
pub struct DemoSummary {
    /// Database host:port/name (no credentials).
    pub database: String,
    pub leads_seeded: u64,
    pub booked: u64,
    pub enqueued: u64,
    pub insights_written: u64,
    pub skipped: u64,
    pub failed: u64,
    /// Enqueue to drained.
    pub wall_s: f64,
    pub leads_per_s: f64,
    pub llm_calls: u64,
    pub llm_latency_ms: u64,
    pub concurrency: usize,
    pub p50_ms: f64,
    pub p95_ms: f64,
    /// Peak connections this process had open to the database (app pool + queue pool).
    pub peak_backends: u64,
    pub pool_max: u32,
    /// Mean time one job kept an app-database connection checked out.
    pub mean_hold_ms: f64,
    /// Mean wall time of the handler's stages (waits included).
    pub mean_load_ms: f64,
    pub mean_llm_ms: f64,
    pub mean_write_ms: f64,
}

impl fmt::Display for DemoSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "insights demo on {}", self.database)?;
        writeln!(
            f,
            "  leads seeded        {} ({} booked)",
            self.leads_seeded, self.booked
        )?;
        writeln!(f, "  jobs enqueued       {}", self.enqueued)?;
        writeln!(f, "  insights written    {}", self.insights_written)?;
        writeln!(
            f,
            "  skipped / failed    {} / {}",
            self.skipped, self.failed
        )?;
        writeln!(f, "  wall time           {:.2} s", self.wall_s)?;
        writeln!(f, "  throughput          {:.1} leads/s", self.leads_per_s)?;
        writeln!(
            f,
            "  LLM calls           {} (mock latency {} ms, concurrency {})",
            self.llm_calls, self.llm_latency_ms, self.concurrency
        )?;
        writeln!(
            f,
            "  job latency         p50 {:.1} ms, p95 {:.1} ms",
            self.p50_ms, self.p95_ms
        )?;
        writeln!(
            f,
            "  peak DB connections {} (one pool of at most {}, shared by store and queue)",
            self.peak_backends, self.pool_max
        )?;
        writeln!(f, "  mean conn. hold/job {:.2} ms", self.mean_hold_ms)?;
        writeln!(
            f,
            "  mean stage times    load {:.1} ms, LLM {:.1} ms, write {:.1} ms",
            self.mean_load_ms, self.mean_llm_ms, self.mean_write_ms
        )
    }
}

/// The demo owns its database: the queue lives next to the data, no pooler, no LISTEN; the HTTP
/// server is not part of it. Everything else keeps its default.
fn demo_settings(url: &str, base_url: &str, concurrency: usize) -> Result<Settings, WorkerError> {
    Ok(Settings {
        database_url: insights_core::config::DATABASE_URL.parse(url)?,
        llm_base_url: insights_core::config::INSIGHTS_LLM_BASE_URL.parse(base_url)?,
        concurrency: insights_core::config::INSIGHTS_CONCURRENCY.check(concurrency)?,
        ..Settings::default()
    })
}

/// Runs the demo end to end: the mock LLM, the database (created, migrated, seeded), one
/// enqueue, a worker until the queue is drained, and the summary.
pub async fn run_demo(opts: DemoOptions) -> Result<DemoSummary, WorkerError> {
    let url = opts
        .database_url
        .clone()
        .unwrap_or_else(|| DEMO_DATABASE_URL.to_owned());
    let mock = start_mock_llm(opts.llm_latency).await?;
    let settings = demo_settings(&url, &mock.base_url(), opts.concurrency)?;
    let database = settings.require_database_url()?.redacted();

    // The demo runs on this project's own tables: the built-in profile, whatever the environment.
    let profile = wiring::load_profile(None)?;
    let pools = prepare_database(&settings, &profile).await?;
    let outcome = seed_and_drain(&settings, &profile, &pools, &opts).await;
    let mock_stats = mock.stats();
    let _ = mock.shutdown().await;
    pools.app.close().await;
    pools.queue.close().await;
    let drained = outcome?;

    Ok(summarize(
        database,
        &opts,
        settings.db_pool_max,
        &drained,
        mock_stats.total,
    ))
}

async fn start_mock_llm(latency: Duration) -> Result<MockHandle, WorkerError> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| WorkerError::Runtime(format!("cannot bind the mock LLM: {e}")))?;
    serve_mock(listener, MockLlmConfig::with_latency(latency))
        .map_err(|e| WorkerError::Runtime(format!("cannot start the mock LLM: {e}")))
}

/// The demo database, created when missing and migrated, and the worker's pools on it.
async fn prepare_database(
    settings: &Settings,
    profile: &Profile,
) -> Result<wiring::Pools, WorkerError> {
    ensure_database(settings).await?;
    crate::admin::migrate(settings, profile).await?;
    wiring::pools(settings).await
}

/// What seeding and draining the queue produced, for the summary.
struct Drained {
    seeded: insights_store::SeedReport,
    enqueued: u64,
    wall: Duration,
    summary: runner::WorkSummary,
}

/// Seeds `opts.leads` leads, enqueues every stale one and works until the queue is drained.
async fn seed_and_drain(
    settings: &Settings,
    profile: &Arc<Profile>,
    pools: &wiring::Pools,
    opts: &DemoOptions,
) -> Result<Drained, WorkerError> {
    let store = wiring::store(
        pools.app.clone(),
        profile,
        StoreOptions::for_pool(&pools.app_settings),
    );
    let queue = Queue::new(pools.queue.clone(), wiring::queue_config(settings));

    let n = usize::try_from(opts.leads)
        .map_err(|_| WorkerError::Config(format!("--leads: {} is too large", opts.leads)))?;
    let seeded = insights_store::seed(&pools.app, n, opts.seed)
        .await
        .map_err(store_err)?;
    tracing::info!(
        leads = seeded.leads,
        booked = seeded.booked,
        messages = seeded.messages,
        "seeded"
    );

    let started = Instant::now();
    let report = producer::enqueue(
        &store,
        &queue,
        EnqueueRequest {
            limit: u64::MAX,
            lead_ids: Vec::new(),
            dry_run: false,
        },
    )
    .await?;

    let mut options = RunOptions::from_settings(settings)?;
    options.profile = Arc::clone(profile);
    options.exit_when_idle = true;
    options.http_bind = None;
    options.name = "insights-demo".to_owned();
    let summary = runner::run_worker_with(WorkerParts {
        store,
        queue,
        llm: wiring::llm_client(settings, Arc::clone(&options.profile))?,
        metrics: Metrics::new(),
        options,
        backend_sampler: Some(runner::pools_sampler(pools)),
        stop: None,
    })
    .await?;
    Ok(Drained {
        seeded,
        enqueued: report.enqueued,
        wall: started.elapsed(),
        summary,
    })
}

fn summarize(
    database: String,
    opts: &DemoOptions,
    pool_max: u32,
    drained: &Drained,
    llm_calls: u64,
) -> DemoSummary {
    let m = &drained.summary.metrics;
    let wall = drained.wall.as_secs_f64();
    DemoSummary {
        database,
        leads_seeded: drained.seeded.leads as u64,
        booked: drained.seeded.booked as u64,
        enqueued: drained.enqueued,
        insights_written: m.written,
        skipped: m.skipped,
        failed: m.failed,
        wall_s: wall,
        leads_per_s: if wall > 0.0 {
            m.processed as f64 / wall
        } else {
            0.0
        },
        llm_calls,
        llm_latency_ms: u64::try_from(opts.llm_latency.as_millis()).unwrap_or(u64::MAX),
        concurrency: opts.concurrency,
        p50_ms: m.latency_p50_ms,
        p95_ms: m.latency_p95_ms,
        peak_backends: m.peak_backends,
        pool_max,
        mean_hold_ms: drained.summary.mean_hold_ms,
        mean_load_ms: m.mean_load_ms,
        mean_llm_ms: m.mean_llm_ms,
        mean_write_ms: m.mean_write_ms,
    }
}

/// Creates the demo database when the server says it does not exist.
async fn ensure_database(settings: &Settings) -> Result<(), WorkerError> {
    let url = settings.require_database_url()?;
    let ps = insights_store::PoolSettings::app_from_settings(settings)?;
    match insights_store::pool::connect(&ps).await {
        Ok(pool) => {
            pool.close().await;
            Ok(())
        }
        Err(e) if e.to_string().contains("does not exist") => {
            tracing::info!(database = %url, "creating the demo database");
            create_database(url).await
        }
        Err(e) => Err(store_err(e)),
    }
}

/// Query parameters libpq's `createdb` must not see: the password travels in `PGPASSWORD`, and
/// `pgbouncer` is a hint libpq does not know.
const WITHHELD_PARAMS: [&str; 2] = ["password", insights_core::secret::PGBOUNCER_PARAM];

/// `CREATE DATABASE` through the Postgres client's `createdb` (this crate holds no SQL),
/// connecting to the server's `postgres` database with the same credentials. The password goes
/// through the environment (`PGPASSWORD`): a process's arguments are readable by every user of
/// the machine (`/proc/<pid>/cmdline`, `ps`).
async fn create_database(url: &DatabaseUrl) -> Result<(), WorkerError> {
    let mut server = url::Url::parse(url.expose())
        .map_err(|e| WorkerError::Config(format!("DATABASE_URL: not a URL: {e}")))?;
    let name = server.path().trim_start_matches('/').to_owned();
    if name.is_empty() {
        return Err(WorkerError::Config(
            "DATABASE_URL: expected a database name in the path".to_owned(),
        ));
    }
    let password = server
        .password()
        .map(|p| percent_decode_str(p).decode_utf8_lossy().into_owned())
        .or_else(|| {
            server
                .query_pairs()
                .find(|(k, _)| k == "password")
                .map(|(_, v)| v.into_owned())
        });
    let kept: Vec<(String, String)> = server
        .query_pairs()
        .filter(|(k, _)| !WITHHELD_PARAMS.contains(&k.as_ref()))
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    // Fails only for URLs that cannot carry credentials, which have no password to remove.
    let _ = server.set_password(None);
    server.set_path("/postgres");
    server.set_query(None);
    if !kept.is_empty() {
        server.query_pairs_mut().extend_pairs(kept);
    }

    let mut createdb = tokio::process::Command::new("createdb");
    createdb
        .arg(format!("--maintenance-db={server}"))
        .arg(&name)
        .kill_on_drop(true);
    if let Some(password) = password {
        createdb.env("PGPASSWORD", password);
    }
    let out = tokio::time::timeout(Duration::from_secs(30), createdb.output())
        .await
        .map_err(|_| WorkerError::Runtime("createdb did not finish within 30 s".to_owned()))?
        .map_err(|e| WorkerError::Runtime(format!("cannot run createdb to create {name}: {e}")))?;
    if out.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    // Another demo created it meanwhile: fine.
    if stderr.contains("already exists") {
        return Ok(());
    }
    Err(WorkerError::Runtime(format!(
        "cannot create database {name}: {}",
        stderr.split_whitespace().collect::<Vec<_>>().join(" ")
    )))
}
