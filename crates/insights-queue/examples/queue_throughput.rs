//! Quick throughput check of the queue on the local Postgres (the real benchmark with
//! baselines is `insights-bench queue`). Creates and drops its own database.
//!
//! `cargo run --release -p insights-queue --example queue_throughput -- [noop|enqueue|slow|decay|all]`

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use apalis::prelude::WorkerBuilderExt;
use apalis_core::error::BoxDynError;
use apalis_core::task::data::Data;
use apalis_core::worker::builder::WorkerBuilder;
use insights_queue::{BackendOptions, NewJob, Queue, QueueConfig};
use serde::{Deserialize, Serialize};
use sqlx::Row;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Job {
    n: u64,
    sleep_ms: u64,
}

#[derive(Default)]
struct Progress {
    done: AtomicUsize,
    marks: std::sync::Mutex<Vec<(usize, Instant)>>,
    mark_every: usize,
    /// Sum of handler run times, in microseconds (to split a slow drain into handler time and
    /// queue overhead).
    busy_us: std::sync::atomic::AtomicU64,
}

async fn handle(job: Job, p: Data<Arc<Progress>>) -> Result<(), BoxDynError> {
    if job.sleep_ms > 0 {
        let t = Instant::now();
        tokio::time::sleep(Duration::from_millis(job.sleep_ms)).await;
        p.busy_us
            .fetch_add(t.elapsed().as_micros() as u64, Ordering::Relaxed);
    }
    let d = p.done.fetch_add(1, Ordering::Relaxed) + 1;
    if p.mark_every > 0 && d.is_multiple_of(p.mark_every) {
        p.marks.lock().unwrap().push((d, Instant::now()));
    }
    Ok(())
}

async fn fresh(label: &str, max_conn: u32) -> (insights_testkit::TestDb, Queue) {
    let db = insights_testkit::TestDb::create(label).await.unwrap();
    let opts: PgConnectOptions = db.url.parse().unwrap();
    let pool = PgPoolOptions::new()
        .max_connections(max_conn)
        .test_before_acquire(std::env::var("TEST_BEFORE_ACQUIRE").is_ok())
        .connect_with(opts.extra_float_digits(None))
        .await
        .unwrap();
    insights_queue::migrate(&pool).await.unwrap();
    let cfg = QueueConfig {
        poll_interval: Duration::from_millis(50),
        ..QueueConfig::default()
    };
    (db, Queue::new(pool, cfg))
}

async fn push(queue: &Queue, n: usize, sleep_ms: u64) -> Duration {
    push_with(queue, n, sleep_ms, true).await
}

async fn push_with(queue: &Queue, n: usize, sleep_ms: u64, keys: bool) -> Duration {
    let t = Instant::now();
    let jobs: Vec<_> = (0..n as u64)
        .map(|i| {
            let j = NewJob::new(Job { n: i, sleep_ms });
            if keys {
                j.dedupe_key(format!("k{i}"))
            } else {
                j
            }
        })
        .collect();
    let out = queue.push_bulk("bench", jobs).await.unwrap();
    assert_eq!(out.inserted as usize, n);
    t.elapsed()
}

/// Runs one worker until `n` jobs are done and completed in the database; returns the elapsed
/// time, the progress marks and the peak number of backends on the database.
async fn drain(
    queue: &Queue,
    db_name: &str,
    n: usize,
    concurrency: usize,
    mark_every: usize,
) -> (Duration, Vec<(usize, Instant)>, i64, Instant) {
    let progress = Arc::new(Progress {
        mark_every,
        ..Progress::default()
    });
    let backend =
        queue.worker_backend::<Job>("bench", BackendOptions::with_concurrency(concurrency));
    let worker = WorkerBuilder::new("bench")
        .backend(backend)
        .concurrency(concurrency)
        .data(progress.clone())
        .build(handle);
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let t0 = Instant::now();
    let h = tokio::spawn(worker.run_until(async move {
        let _ = rx.await;
        Ok::<(), std::io::Error>(())
    }));
    let admin = sqlx::PgPool::connect(&insights_testkit::admin_url())
        .await
        .unwrap();
    let mut peak = 0i64;
    let mut tick = 0u64;
    while progress.done.load(Ordering::Relaxed) < n {
        tokio::time::sleep(Duration::from_millis(20)).await;
        tick += 1;
        if tick.is_multiple_of(3) {
            let b: i64 = sqlx::query("SELECT count(*) FROM pg_stat_activity WHERE datname = $1")
                .bind(db_name)
                .fetch_one(&admin)
                .await
                .unwrap()
                .get(0);
            peak = peak.max(b);
        }
    }
    // Completed in the database too (the last flush).
    loop {
        let c = queue.counts("bench").await.unwrap();
        if c.completed as usize >= n {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let took = t0.elapsed();
    let _ = tx.send(());
    h.await.unwrap().unwrap();
    let marks = progress.marks.lock().unwrap().clone();
    let busy = progress.busy_us.load(Ordering::Relaxed);
    if busy > 0 {
        let per_job_slot_us = took.as_micros() as f64 * concurrency as f64 / n as f64;
        println!(
            "  mean handler {:.2} ms, mean slot time per job {:.2} ms",
            busy as f64 / n as f64 / 1000.0,
            per_job_slot_us / 1000.0
        );
    }
    (took, marks, peak, t0)
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let what = std::env::args().nth(1).unwrap_or_else(|| "all".into());
    let all = what == "all";
    if all || what == "enqueue" {
        let (_db, q) = fresh("bench_enqueue", 4).await;
        let took = push(&q, 100_000, 0).await;
        println!(
            "enqueue 100k (dedupe keys): {:.0} jobs/s",
            100_000.0 / took.as_secs_f64()
        );
        let (_db, q) = fresh("bench_enqueue_nokey", 4).await;
        let took = push_with(&q, 100_000, 0, false).await;
        println!(
            "enqueue 100k (no keys): {:.0} jobs/s",
            100_000.0 / took.as_secs_f64()
        );
    }
    if all || what == "noop" {
        let (db, q) = fresh("bench_noop", 4).await;
        push(&q, 20_000, 0).await;
        let (took, _, peak, _) = drain(&q, &db.name, 20_000, 32, 0).await;
        println!(
            "no-op drain 20k @32: {:.0} jobs/s (peak backends {peak})",
            20_000.0 / took.as_secs_f64()
        );
    }
    if all || what == "slow" {
        let (db, q) = fresh("bench_slow", 3).await;
        push(&q, 5_000, 200).await;
        let (took, _, peak, _) = drain(&q, &db.name, 5_000, 50, 0).await;
        println!(
            "200 ms handler 5k @50: {:.1} jobs/s (ideal 250), peak backends {peak}",
            5_000.0 / took.as_secs_f64()
        );
    }
    if all || what == "decay" {
        let (db, q) = fresh("bench_decay", 4).await;
        push(&q, 100_000, 0).await;
        let (took, marks, _, t0) = drain(&q, &db.name, 100_000, 32, 10_000).await;
        let at = |k: usize| marks.iter().find(|m| m.0 == k).map(|m| m.1).unwrap();
        let first = 10_000.0 / (at(10_000) - t0).as_secs_f64();
        let last = 10_000.0 / (at(100_000) - at(90_000)).as_secs_f64();
        println!(
            "decay 100k @32: first 10% {first:.0}/s, last 10% {last:.0}/s, ratio {:.2}; overall {:.0}/s",
            last / first,
            100_000.0 / took.as_secs_f64()
        );
    }
}
