use insights_queue::{NewJob, Queue};
use insights_testkit::{Pgbouncer, PgbouncerOptions, wait_until};
use sqlx::Row;
use std::sync::atomic::Ordering;

use crate::common::*;

/// 8 workers, each with its own small pool, through pgbouncer in transaction mode with 2 server
/// connections: every job done exactly once, no prepared-statement (or any) database error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_workers_through_pgbouncer_transaction_mode() {
    init_tracing();
    let e = env("q_pooler", test_config()).await;
    let bouncer = Pgbouncer::start(PgbouncerOptions {
        default_pool_size: 2,
        ..PgbouncerOptions::default()
    })
    .await
    .unwrap();
    let total = 2_000i64;
    let jobs: Vec<_> = (0..total).map(|i| NewJob::new(TestJob::ok(i))).collect();
    let via_bouncer = pool_for(&bouncer.url(&e.db.name), 2).await;
    // Migrations also go through the pooler (transaction-scoped lock, no session state).
    insights_queue::migrate(&via_bouncer).await.unwrap();
    let producer = Queue::new(via_bouncer.clone(), test_config());
    let out = producer.push_bulk(Q, jobs).await.unwrap();
    assert_eq!(out.inserted, total as u64);

    let st = TestState::new(e.pool.clone());
    let mut workers = Vec::new();
    for i in 0..8 {
        let pool = pool_for(&bouncer.url(&e.db.name), 2).await;
        let queue = Queue::new(pool, test_config());
        workers.push(spawn_worker(
            &queue,
            WorkerSpec::new(&format!("w{i}"), 4),
            st.clone(),
        ));
    }
    // The ops API through the pooler while the workers run.
    for _ in 0..5 {
        producer.counts(Q).await.unwrap();
        producer.list(Q, None, 5, 0).await.unwrap();
    }
    wait_until(secs(90), "all jobs completed", || async {
        state_count(&e.pool, "completed").await == total
    })
    .await
    .unwrap();
    let db_errors: u64 = workers.iter().map(|w| w.stats.snapshot().db_errors).sum();
    let fetched: u64 = workers.iter().map(|w| w.stats.snapshot().fetched).sum();
    let busy = workers
        .iter()
        .filter(|w| w.stats.snapshot().fetched > 0)
        .count();
    for w in workers {
        w.stop().await.unwrap();
    }
    assert_eq!(db_errors, 0, "database errors through the pooler");
    assert_eq!(fetched, total as u64);
    assert!(busy >= 2, "work spread over workers ({busy})");
    assert_eq!(effects(&e.pool).await, total);
    assert_eq!(st.duplicate_effects.load(Ordering::SeqCst), 0);
    assert_eq!(st.overlaps.load(Ordering::SeqCst), 0);
    assert_eq!(
        st.started.load(Ordering::SeqCst) as i64,
        total,
        "each job ran once"
    );
    let retried: i64 = sqlx::query(
        "SELECT count(*) FROM insights_queue.jobs WHERE attempt <> 1 OR errors <> '[]'",
    )
    .fetch_one(&e.pool)
    .await
    .unwrap()
    .get(0);
    assert_eq!(retried, 0);
    let log = bouncer.log();
    assert!(!log.contains("prepared statement"), "pgbouncer log:\n{log}");
}
