//! Every size, setting, target and deadline of the benchmarks, in one place.
//!
//! The targets are what the queue and the pipeline promise on this project's 2-core reference
//! machine; the CLI may shrink the sizes for a quick run, never the targets.

use std::time::Duration;

/// Server the bench creates its throwaway databases on (as the `postgres` superuser, because the
/// apalis-postgres migrations create the `hstore` and `pgcrypto` extensions). Override with
/// `INSIGHTS_BENCH_PG_URL`. Plaintext on purpose: the local server offers TLS and sqlx's default
/// (`sslmode=prefer`) would take it, which on two cores halves the no-op drain; the bench
/// measures the queue and the pipeline, not the cipher, and both queues run on the same URL.
pub const ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable";
/// Every database the bench creates starts with this; it only ever drops names it created.
pub const BENCH_DB_PREFIX: &str = "insights_bench_";

// ---- queue -------------------------------------------------------------------------------
/// No-op drain: jobs and worker concurrency.
pub const NOOP_JOBS: usize = 20_000;
pub const NOOP_CONCURRENCY: usize = 32;
/// Bulk enqueue size.
pub const ENQUEUE_JOBS: usize = 100_000;
/// Rows per bulk statement when the bench itself enqueues (setup of the drains).
pub const ENQUEUE_CHUNK: usize = 5_000;
/// Slow handler: sleep, concurrency, jobs. Ideal rate = concurrency / sleep = 250 jobs/s.
pub const SLOW_HANDLER: Duration = Duration::from_millis(200);
pub const SLOW_CONCURRENCY: usize = 50;
pub const SLOW_JOBS: usize = 5_000;
/// Decay: size of the drain whose first and last 10% are compared.
pub const DECAY_JOBS: usize = 100_000;
pub const DECAY_WINDOW_FRACTION: f64 = 0.10;
/// apalis-postgres settings the issue names: poll interval 50 ms; batch sizes its default (10)
/// and 100.
pub const APALIS_POLL_INTERVAL: Duration = Duration::from_millis(50);
pub const APALIS_DEFAULT_BATCH: usize = 10;
pub const APALIS_LARGE_BATCH: usize = 100;
/// Poll interval our queue is configured with for the drains (the same as apalis gets).
pub const OURS_POLL_INTERVAL: Duration = Duration::from_millis(50);
/// Pool size given to every queue backend (ours and apalis alike), the production default
/// (`INSIGHTS_DB_POOL_MAX`).
pub const QUEUE_POOL_MAX: u32 = insights_core::defaults::DB_POOL_MAX;

pub const TARGET_NOOP_JOBS_PER_S: f64 = 10_000.0;
pub const TARGET_NOOP_VS_APALIS: f64 = 1.5;
pub const TARGET_ENQUEUE_JOBS_PER_S: f64 = 100_000.0;
pub const TARGET_SLOW_JOBS_PER_S: f64 = 247.0;
pub const TARGET_SLOW_MAX_BACKENDS: i64 = 3;
pub const TARGET_DECAY_RATIO: f64 = 0.8;

// ---- pipeline ----------------------------------------------------------------------------
pub const PIPELINE_LEADS: usize = 20_000;
/// Worker concurrency of the pipeline run: at 0 ms LLM latency, more jobs in flight make bigger
/// load/write/completion batches (measured: 64 → 1.5k leads/s, 256 → 1.9k on a loaded machine).
pub const PIPELINE_CONCURRENCY: usize = 256;
pub const PIPELINE_POOL_MAX: u32 = 4;
/// Seed of the synthetic leads (deterministic content).
pub const SEED: u64 = 42;
pub const TARGET_PIPELINE_LEADS_PER_S: f64 = 5_000.0;

pub const CONNECTIONS_LLM_LATENCY: Duration = Duration::from_secs(1);
pub const CONNECTIONS_CONCURRENCY: usize = 256;
pub const CONNECTIONS_POOL_MAX: u32 = 4;
/// Leads for the connections run: enough for ~20 s of steady state at the ideal rate.
pub const CONNECTIONS_LEADS: usize = 5_120;
/// Leads the naive baseline works through: it does pool_max leads per LLM latency (4/s), so
/// this is about 20 s.
pub const NAIVE_LEADS: usize = 80;
pub const TARGET_CONNECTIONS_FRACTION_OF_IDEAL: f64 = 0.97;
pub const TARGET_CONNECTIONS_MIN_LEADS_PER_S: f64 = 248.0;
pub const TARGET_CONNECTIONS_MAX_BACKENDS: i64 = 6;
pub const TARGET_PEAK_RSS_MB: f64 = 100.0;

// ---- measurement ----------------------------------------------------------------------------
/// How often the sampler counts the bench database's backends (from its own connection to
/// another database, so it never counts itself).
pub const BACKEND_SAMPLE_INTERVAL: Duration = Duration::from_millis(20);
/// How often the in-process progress counter is checked while a drain runs (memory only).
pub const PROGRESS_POLL_INTERVAL: Duration = Duration::from_millis(2);
/// How often the database is asked for the done count once every handler has run (the tail of
/// a drain, where the batched completions land).
pub const DONE_POLL_INTERVAL: Duration = Duration::from_millis(5);
/// Upper bound on any single statement the bench itself issues.
pub const STATEMENT_TIMEOUT: Duration = Duration::from_secs(60);
/// A drain that has not finished by `expected_duration * factor + slack` is reported as failed.
pub const DRAIN_DEADLINE_SLACK: Duration = Duration::from_secs(60);
/// Slowest rate a drain is allowed before its deadline trips (jobs/s): apalis at batch 10 on a
/// loaded machine did 600 jobs/s.
pub const DRAIN_DEADLINE_MIN_RATE: f64 = 150.0;
/// How long the bench waits for a closed pool's backends to exit before reading statistics.
pub const QUIESCE_TIMEOUT: Duration = Duration::from_secs(10);
