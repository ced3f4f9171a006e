use std::sync::atomic::Ordering;
use std::time::Duration;

use insights_queue::{NewJob, Queue, QueueConfig};
use insights_testkit::{Cluster, wait_until};

use crate::common::*;

/// The database disappears for 5 s mid-run; the same worker finishes every job.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_survives_a_database_outage_and_finishes_all_jobs() {
    init_tracing();
    let cluster = Cluster::start().await.unwrap();
    let url = cluster.url("postgres");
    let pool = pool_for(&url, 4).await;
    insights_queue::migrate(&pool).await.unwrap();
    sqlx::raw_sql(
        "CREATE TABLE running_now (job_id bigint PRIMARY KEY);
         CREATE TABLE effects (job_id bigint PRIMARY KEY, n bigint NOT NULL, at timestamptz DEFAULT now());",
    )
    .execute(&pool)
    .await
    .unwrap();
    let cfg = QueueConfig {
        // Leases outlive the outage, so nothing is rescued and run twice.
        lease_duration: secs(30),
        heartbeat_interval: secs(2),
        statement_timeout: secs(3),
        db_backoff: insights_queue::Backoff {
            cap: Duration::from_millis(1_000),
            ..insights_queue::defaults::DB_BACKOFF
        },
        // Jobs caught by the outage fail (their effect insert fails) and retry.
        default_max_attempts: 100,
        ..test_config()
    };
    let queue = Queue::new(pool.clone(), cfg);
    let total = 400i64;
    let jobs: Vec<_> = (0..total)
        .map(|i| NewJob::new(TestJob::with(i, Behave::Sleep { ms: 20 })))
        .collect();
    queue.push_bulk(Q, jobs).await.unwrap();
    let st = TestState::new(pool.clone());
    let w = spawn_worker(&queue, WorkerSpec::new("w", 8), st.clone());
    wait_until(secs(60), "some progress before the outage", || async {
        effects(&pool).await >= 40
    })
    .await
    .unwrap();
    cluster.stop().await.unwrap();
    let done_before = st.finished.load(Ordering::SeqCst);
    tokio::time::sleep(secs(5)).await; // the outage itself
    assert!(!w.handle.is_finished(), "worker ended during the outage");
    cluster.start_server().await.unwrap();
    wait_until(secs(90), "all jobs completed after the outage", || async {
        state_count(&pool, "completed").await == total
    })
    .await
    .unwrap_or_else(|e| panic!("{e}; server log:\n{}", cluster.log()));
    assert!(!w.handle.is_finished(), "worker still running");
    let stats = w.stats.snapshot();
    w.stop().await.unwrap();
    assert!(stats.db_errors > 0, "the outage was seen: {stats:?}");
    assert_eq!(effects(&pool).await, total);
    assert!(st.finished.load(Ordering::SeqCst) > done_before);
    pool.close().await;
}
