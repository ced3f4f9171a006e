//! Our queue (insights-queue) under the same scenarios, handler and clock as the baseline.

use std::time::{Duration, Instant};

use anyhow::{Context, anyhow};
use apalis::prelude::{WorkerBuilder, WorkerBuilderExt};
use insights_queue::{BackendOptions, NewJob, Queue, QueueConfig};
use tokio::sync::oneshot;

use crate::bench_db::{BenchDb, admin_url};
use crate::defaults::{DECAY_WINDOW_FRACTION, OURS_POLL_INTERVAL, QUEUE_POOL_MAX};
use crate::measure::{
    BackendSampler, DoneCounter, Progress, drain_deadline, quiesced_transactions, rate, timed,
    wait_drained,
};
use crate::scenario::{DrainOutcome, DrainSpec, HandlerSpec, handler};

const QUEUE: &str = "insights_bench";
/// How long a graceful worker stop may take before the bench aborts the worker task.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// [`OURS_POLL_INTERVAL`], or `INSIGHTS_BENCH_OURS_POLL_MS` for experiments.
fn poll_interval() -> Duration {
    std::env::var("INSIGHTS_BENCH_OURS_POLL_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .map(Duration::from_millis)
        .unwrap_or(OURS_POLL_INTERVAL)
}

async fn connect(db: &BenchDb) -> anyhow::Result<Queue> {
    let pool = db.pool(QUEUE_POOL_MAX).await?;
    Ok(Queue::new(
        pool,
        QueueConfig {
            poll_interval: poll_interval(),
            ..QueueConfig::default()
        },
    ))
}

async fn setup(label: &str) -> anyhow::Result<(BenchDb, Queue)> {
    let db = BenchDb::create(label).await?;
    let queue = connect(&db).await?;
    timed(queue.migrate())
        .await
        .context("insights-queue migrate")?;
    Ok((db, queue))
}

fn jobs(n: usize) -> Vec<NewJob<u64>> {
    (0..n as u64).map(NewJob::new).collect()
}

/// Bulk enqueue of `n` no-op jobs through `Queue::push_bulk` (it chunks internally).
pub async fn enqueue(n: usize) -> anyhow::Result<f64> {
    let (db, queue) = setup("q_enqueue").await?;
    let batch = jobs(n);
    let t0 = Instant::now();
    let outcome = timed(queue.push_bulk(QUEUE, batch))
        .await
        .context("push_bulk")?;
    let t1 = Instant::now();
    if outcome.inserted != n as u64 {
        return Err(anyhow!("push_bulk inserted {} of {n}", outcome.inserted));
    }
    let stored = count(&queue, "select count(*) from insights_queue.jobs").await?;
    if stored != n as i64 {
        return Err(anyhow!("{stored} rows stored for {n} jobs"));
    }
    queue.pool().close().await;
    drop(db);
    Ok(rate(n, t0, t1))
}

/// Drains `spec.jobs` jobs with our backend at `spec.concurrency`.
pub async fn drain(label: &str, spec: DrainSpec) -> anyhow::Result<DrainOutcome> {
    let (db, setup_queue) = setup(label).await?;
    timed(setup_queue.push_bulk(QUEUE, jobs(spec.jobs)))
        .await
        .context("push_bulk (setup)")?;
    timed(sqlx::query("analyze insights_queue.jobs").execute(setup_queue.pool())).await?;
    // The worker gets a pool of its own, so its backends and transactions are its alone.
    setup_queue.pool().close().await;
    let tx_before = quiesced_transactions(&admin_url(), &db.name).await?;
    let queue = connect(&db).await?;

    let progress = Progress::new(spec.jobs);
    let handler_spec = HandlerSpec {
        work: spec.work,
        progress: progress.clone(),
    };
    let counter = DoneCounter::connect(
        &db.url,
        "select count(*) from insights_queue.jobs where state = 'completed'",
    )
    .await?;
    let sampler = BackendSampler::start(&admin_url(), &db.name, &[counter.pid]).await?;
    let backend =
        queue.worker_backend::<u64>(QUEUE, BackendOptions::with_concurrency(spec.concurrency));
    let worker = WorkerBuilder::new(format!("bench-{label}"))
        .backend(backend)
        .concurrency(spec.concurrency)
        .data(handler_spec)
        .build(handler);
    let (stop, stopped) = oneshot::channel::<()>();
    let mut run = tokio::spawn(worker.run_until(async move {
        let _ = stopped.await;
        Ok::<(), std::io::Error>(())
    }));

    let deadline = drain_deadline(spec.jobs, spec.work, spec.concurrency);
    let waited = wait_drained(&progress, spec.jobs, deadline, || counter.count()).await;
    let _ = stop.send(());
    if tokio::time::timeout(STOP_TIMEOUT, &mut run).await.is_err() {
        run.abort();
    }
    let (peak_backends, peak_backends_at_ms) = sampler.finish_with_time().await?;
    counter.close().await;
    let done_at = waited?;
    let first = progress.first().context("no handler ran")?;
    queue.pool().close().await;
    let tx_after = quiesced_transactions(&admin_url(), &db.name).await?;
    let outcome = DrainOutcome {
        jobs_per_s: rate(spec.jobs, first, done_at),
        peak_backends,
        peak_backends_at_ms,
        decay_ratio: progress.decay_ratio(DECAY_WINDOW_FRACTION),
        timing: progress.timing(spec.concurrency, done_at),
        transactions_per_job: Some((tx_after - tx_before) as f64 / spec.jobs as f64),
    };
    drop(db);
    Ok(outcome)
}

async fn count(queue: &Queue, sql: &'static str) -> anyhow::Result<i64> {
    timed(sqlx::query_scalar(sql).fetch_one(queue.pool())).await
}
