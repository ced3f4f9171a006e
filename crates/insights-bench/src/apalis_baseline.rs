//! The baseline: apalis-postgres 1.0, configured for a fair comparison (poll interval 50 ms;
//! batch size its default or 100), driven by the same apalis `WorkerBuilder` and the same
//! handler and clock as our queue.

use std::time::Instant;

use anyhow::{Context, anyhow};
use apalis::prelude::{BackendExt, TaskSink, WorkerBuilder, WorkerBuilderExt};
use apalis_postgres::{Config, PostgresStorage};

use crate::bench_db::{BenchDb, admin_url};
use crate::defaults::{APALIS_POLL_INTERVAL, QUEUE_POOL_MAX};
use crate::measure::{
    BackendSampler, DoneCounter, Progress, drain_deadline, quiesced_transactions, rate, timed,
    wait_drained,
};
use crate::scenario::{DrainOutcome, DrainSpec, HandlerSpec, handler};

const QUEUE: &str = "insights_bench";

async fn setup(label: &str) -> anyhow::Result<(BenchDb, sqlx::PgPool)> {
    let db = BenchDb::create(label).await?;
    let pool = db.pool(QUEUE_POOL_MAX).await?;
    timed(PostgresStorage::setup(&pool))
        .await
        .context("apalis-postgres migrations")?;
    Ok((db, pool))
}

fn storage(pool: &sqlx::PgPool, batch: usize) -> PostgresStorage<u64> {
    PostgresStorage::<u64>::new(pool).with_config(Config::default().queue(QUEUE).batch_size(batch))
}

/// Bulk enqueue of `jobs` no-op jobs through apalis' own `push_bulk` (one statement).
pub async fn enqueue(jobs: usize) -> anyhow::Result<f64> {
    let (db, pool) = setup("apalis_enqueue").await?;
    let mut sink = storage(&pool, crate::defaults::APALIS_DEFAULT_BATCH);
    let payload: Vec<u64> = (0..jobs as u64).collect();
    let t0 = Instant::now();
    timed(sink.push_bulk(payload))
        .await
        .context("apalis push_bulk")?;
    let t1 = Instant::now();
    let n = count(&pool, "select count(*) from apalis.jobs").await?;
    if n != jobs as i64 {
        return Err(anyhow!("apalis enqueue stored {n} of {jobs} jobs"));
    }
    pool.close().await;
    drop(db);
    Ok(rate(jobs, t0, t1))
}

/// Drains `spec.jobs` jobs with apalis-postgres at `batch`.
pub async fn drain(label: &str, spec: DrainSpec, batch: usize) -> anyhow::Result<DrainOutcome> {
    let (db, setup_pool) = setup(label).await?;
    let mut sink = storage(&setup_pool, batch);
    timed(sink.push_bulk((0..spec.jobs as u64).collect()))
        .await
        .context("apalis push_bulk (setup)")?;
    timed(sqlx::query("analyze apalis.jobs").execute(&setup_pool)).await?;
    drop(sink);
    // The worker gets a pool of its own, so its backends and transactions are its alone.
    setup_pool.close().await;
    let tx_before = quiesced_transactions(&admin_url(), &db.name).await?;
    let pool = db.pool(QUEUE_POOL_MAX).await?;

    let progress = Progress::new(spec.jobs);
    let handler_spec = HandlerSpec {
        work: spec.work,
        progress: progress.clone(),
    };
    let counter = DoneCounter::connect(
        &db.url,
        "select count(*) from apalis.jobs where status = 'Done'",
    )
    .await?;
    let sampler = BackendSampler::start(&admin_url(), &db.name, &[counter.pid]).await?;
    let backend = storage(&pool, batch).poll_with_interval(APALIS_POLL_INTERVAL);
    let worker = WorkerBuilder::new(format!("bench-{label}"))
        .backend(backend)
        .data(handler_spec)
        .concurrency(spec.concurrency)
        .build(handler);
    let run = tokio::spawn(async move { worker.run().await });

    let deadline = drain_deadline(spec.jobs, spec.work, spec.concurrency);
    let waited = wait_drained(&progress, spec.jobs, deadline, || counter.count()).await;
    run.abort();
    let _ = run.await;
    let (peak_backends, peak_backends_at_ms) = sampler.finish_with_time().await?;
    counter.close().await;
    let done_at = waited?;
    let first = progress.first().context("no handler ran")?;
    pool.close().await;
    let tx_after = quiesced_transactions(&admin_url(), &db.name).await?;
    let outcome = DrainOutcome {
        jobs_per_s: rate(spec.jobs, first, done_at),
        peak_backends,
        peak_backends_at_ms,
        decay_ratio: progress.decay_ratio(crate::defaults::DECAY_WINDOW_FRACTION),
        timing: progress.timing(spec.concurrency, done_at),
        transactions_per_job: Some((tx_after - tx_before) as f64 / spec.jobs as f64),
    };
    drop(db);
    Ok(outcome)
}

async fn count(pool: &sqlx::PgPool, sql: &'static str) -> anyhow::Result<i64> {
    timed(sqlx::query_scalar(sql).fetch_one(pool)).await
}
