use std::sync::atomic::Ordering;
use std::time::Duration;

use apalis::prelude::WorkerBuilderExt;
use apalis_core::monitor::Monitor;
use apalis_core::worker::builder::WorkerBuilder;
use insights_queue::{BackendOptions, NewJob};
use insights_testkit::wait_until;
use sqlx::Row;

use crate::common::*;

/// The backend leases 4 but apalis runs 1 at a time, so 3 leases sit unstarted; on shutdown
/// they go back at once while the running job finishes, under a `Monitor`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_hands_back_unstarted_leases_and_finishes_in_flight() {
    let e = env("q_shutdown", test_config()).await;
    let jobs: Vec<_> = (0..6)
        .map(|i| NewJob::new(TestJob::with(i, Behave::Sleep { ms: 2_500 })))
        .collect();
    e.queue.push_bulk(Q, jobs).await.unwrap();
    let st = TestState::new(e.pool.clone());
    let queue = e.queue.clone();
    let st2 = st.clone();
    let monitor = Monitor::new()
        .register(move |_| {
            WorkerBuilder::new("shutdown-worker")
                .backend(queue.worker_backend::<TestJob>(Q, BackendOptions::with_concurrency(4)))
                .concurrency(1)
                .catch_panic()
                .data(st2.clone())
                .build(handler)
        })
        .shutdown_timeout(Duration::from_secs(30));
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let run = tokio::spawn(monitor.run_with_signal(async move {
        let _ = rx.await;
        Ok(())
    }));
    wait_until(secs(30), "first job started and 4 leased", || async {
        st.started.load(Ordering::SeqCst) == 1 && state_count(&e.pool, "running").await == 4
    })
    .await
    .unwrap();
    tx.send(()).unwrap();
    // Unstarted leases come back well before the 2.5 s job ends.
    wait_until(secs(2), "3 unstarted leases handed back", || async {
        state_count(&e.pool, "running").await == 1
    })
    .await
    .unwrap();
    assert_eq!(
        st.finished.load(Ordering::SeqCst),
        0,
        "in-flight job still running"
    );
    let refunded: i64 = sqlx::query(
        "SELECT count(*) FROM insights_queue.jobs WHERE state = 'available' AND attempt = 0",
    )
    .fetch_one(&e.pool)
    .await
    .unwrap()
    .get(0);
    assert_eq!(refunded, 5, "handed-back jobs keep their attempt budget");
    tokio::time::timeout(secs(30), run)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(
        st.finished.load(Ordering::SeqCst),
        1,
        "in-flight job finished"
    );
    assert_eq!(state_count(&e.pool, "completed").await, 1);
    assert_eq!(state_count(&e.pool, "running").await, 0);
    let workers: i64 = sqlx::query("SELECT count(*) FROM insights_queue.workers")
        .fetch_one(&e.pool)
        .await
        .unwrap()
        .get(0);
    assert_eq!(workers, 0, "worker deregistered");
}
