use std::sync::atomic::Ordering;
use std::time::Duration;

use insights_queue::{NewJob, QueueConfig};
use insights_testkit::wait_until;
use sqlx::Row;

use crate::common::*;

fn short_lease() -> QueueConfig {
    QueueConfig {
        lease_duration: Duration::from_millis(1_000),
        heartbeat_interval: Duration::from_millis(250),
        rescue_interval: Duration::from_millis(200),
        ..test_config()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeat_keeps_a_long_job_leased_past_the_lease_duration() {
    let e = env("q_heartbeat", short_lease()).await;
    e.queue
        .push(
            Q,
            NewJob::new(TestJob::with(1, Behave::Sleep { ms: 3_500 })),
        )
        .await
        .unwrap();
    let st = TestState::new(e.pool.clone());
    // Two workers, both running rescuers: a lapsed lease would be re-run by the idle one.
    let a = spawn_worker(&e.queue, WorkerSpec::new("a", 2), st.clone());
    let b = spawn_worker(&e.queue, WorkerSpec::new("b", 2), st.clone());
    wait_until(secs(30), "long job completed", || async {
        state_count(&e.pool, "completed").await == 1
    })
    .await
    .unwrap();
    a.stop().await.unwrap();
    b.stop().await.unwrap();
    assert_eq!(st.attempts_of(1), vec![1], "ran once, never rescued");
    assert_eq!(st.overlaps.load(Ordering::SeqCst), 0);
    let attempt: i32 = sqlx::query("SELECT attempt FROM insights_queue.jobs")
        .fetch_one(&e.pool)
        .await
        .unwrap()
        .get(0);
    assert_eq!(attempt, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rescuer_returns_an_expired_lease_and_the_job_runs_again() {
    let e = env("q_rescue", short_lease()).await;
    e.queue.push(Q, NewJob::new(TestJob::ok(7))).await.unwrap();
    // A worker that died holding the job: running, attempt counted, lease in the past.
    sqlx::query(
        "UPDATE insights_queue.jobs SET state = 'running', attempt = 1, locked_by = 'ghost', \
         lease_token = 42, lease_until = now() - interval '1 second', attempted_at = now()",
    )
    .execute(&e.pool)
    .await
    .unwrap();
    let st = TestState::new(e.pool.clone());
    let w = spawn_worker(&e.queue, WorkerSpec::new("w", 2), st.clone());
    wait_until(secs(30), "rescued job completed", || async {
        state_count(&e.pool, "completed").await == 1
    })
    .await
    .unwrap();
    w.stop().await.unwrap();
    let id = sqlx::query("SELECT id FROM insights_queue.jobs")
        .fetch_one(&e.pool)
        .await
        .unwrap()
        .get::<i64, _>(0);
    let job = e.queue.show(id).await.unwrap().unwrap();
    assert_eq!(job.attempt, 2, "the lost attempt counts");
    assert_eq!(job.errors.len(), 1);
    assert!(
        job.errors[0].error.contains("lease expired"),
        "{:?}",
        job.errors
    );
    assert_eq!(st.attempts_of(7), vec![2]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn completion_is_fenced_by_the_lease() {
    let e = env("q_fence", test_config()).await;
    e.queue
        .push(
            Q,
            NewJob::new(TestJob::with(1, Behave::Sleep { ms: 1_500 })),
        )
        .await
        .unwrap();
    let st = TestState::new(e.pool.clone());
    let w = spawn_worker(&e.queue, WorkerSpec::new("w", 1), st.clone());
    wait_until(secs(30), "job started", || async {
        st.started.load(Ordering::SeqCst) == 1
    })
    .await
    .unwrap();
    // Someone else now holds the lease (as if rescued and fetched by another worker).
    sqlx::query("UPDATE insights_queue.jobs SET lease_token = 999, locked_by = 'other'")
        .execute(&e.pool)
        .await
        .unwrap();
    wait_until(secs(30), "handler finished", || async {
        st.finished.load(Ordering::SeqCst) == 1
    })
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await; // let a (wrong) completion land
    let row = sqlx::query("SELECT state, lease_token, locked_by FROM insights_queue.jobs")
        .fetch_one(&e.pool)
        .await
        .unwrap();
    assert_eq!(
        row.get::<String, _>(0),
        "running",
        "stale completion must not apply"
    );
    assert_eq!(row.get::<i64, _>(1), 999);
    assert_eq!(row.get::<String, _>(2), "other");
    w.stop().await.unwrap();
}
