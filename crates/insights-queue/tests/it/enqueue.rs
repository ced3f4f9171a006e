use std::time::Duration;

use insights_queue::{JobState, NewJob, PushOutcome};
use insights_testkit::wait_until;
use sqlx::Row;

use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_duplicate_in_a_bulk_of_1000_inserts_999() {
    let e = env("q_bulk", test_config()).await;
    let mut jobs: Vec<NewJob<TestJob>> = (0..999)
        .map(|i| NewJob::new(TestJob::ok(i)).dedupe_key(format!("k{i}")))
        .collect();
    jobs.push(NewJob::new(TestJob::ok(5)).dedupe_key("k5"));
    let out = e.queue.push_bulk(Q, jobs).await.unwrap();
    assert_eq!(
        out,
        PushOutcome {
            inserted: 999,
            duplicates: 1
        }
    );
    // Pushing the same keys again: all duplicates, no error.
    let again: Vec<_> = (0..10)
        .map(|i| NewJob::new(TestJob::ok(i)).dedupe_key(format!("k{i}")))
        .collect();
    let out = e.queue.push_bulk(Q, again).await.unwrap();
    assert_eq!((out.inserted, out.duplicates), (0, 10));
    // No key: never deduplicated.
    let out = e
        .queue
        .push_bulk(
            Q,
            vec![NewJob::new(TestJob::ok(1)), NewJob::new(TestJob::ok(1))],
        )
        .await
        .unwrap();
    assert_eq!((out.inserted, out.duplicates), (2, 0));
    // Same key on another queue is independent.
    let out = e
        .queue
        .push("other", NewJob::new(TestJob::ok(1)).dedupe_key("k1"))
        .await
        .unwrap();
    assert_eq!(out.inserted, 1);
    assert_eq!(e.queue.counts(Q).await.unwrap().available, 1001);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dedupe_key_is_reusable_once_the_job_completed() {
    let e = env("q_dedupe", test_config()).await;
    let st = TestState::new(e.pool.clone());
    let out = e
        .queue
        .push(Q, NewJob::new(TestJob::ok(1)).dedupe_key("lead-1"))
        .await
        .unwrap();
    assert_eq!(out.inserted, 1);
    let out = e
        .queue
        .push(Q, NewJob::new(TestJob::ok(1)).dedupe_key("lead-1"))
        .await
        .unwrap();
    assert_eq!(
        (out.inserted, out.duplicates),
        (0, 1),
        "live job holds the key"
    );
    let w = spawn_worker(&e.queue, WorkerSpec::new("w", 2), st.clone());
    wait_until(secs(30), "job completed", || async {
        state_count(&e.pool, "completed").await == 1
    })
    .await
    .unwrap();
    let out = e
        .queue
        .push(Q, NewJob::new(TestJob::ok(1)).dedupe_key("lead-1"))
        .await
        .unwrap();
    assert_eq!(out.inserted, 1, "key is free after completion");
    wait_until(secs(30), "second job completed", || async {
        state_count(&e.pool, "completed").await == 2
    })
    .await
    .unwrap();
    w.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_at_priority_and_max_attempts_are_stored_and_honoured() {
    let e = env("q_sched", test_config()).await;
    let later = chrono::Utc::now() + chrono::Duration::hours(1);
    e.queue
        .push(Q, NewJob::new(TestJob::ok(1)).run_at(later).max_attempts(3))
        .await
        .unwrap();
    let jobs = e
        .queue
        .list(Q, Some(JobState::Scheduled), 10, 0)
        .await
        .unwrap();
    assert_eq!(jobs.len(), 1);
    assert_eq!(jobs[0].max_attempts, 3);
    assert!((jobs[0].run_at - later).num_milliseconds().abs() < 5);

    // Priority: lower value first. One slot, so order of effects is order of fetch.
    e.queue
        .push(Q, NewJob::new(TestJob::ok(10)).priority(5))
        .await
        .unwrap();
    e.queue
        .push(Q, NewJob::new(TestJob::ok(20)).priority(-5))
        .await
        .unwrap();
    let st = TestState::new(e.pool.clone());
    let w = spawn_worker(&e.queue, WorkerSpec::new("w", 1), st.clone());
    wait_until(secs(30), "two completed", || async {
        state_count(&e.pool, "completed").await == 2
    })
    .await
    .unwrap();
    let order: Vec<i64> = sqlx::query("SELECT n FROM effects ORDER BY at, job_id")
        .fetch_all(&e.pool)
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(order, vec![20, 10]);
    tokio::time::sleep(Duration::from_millis(300)).await; // scheduled job must stay put
    assert_eq!(
        state_count(&e.pool, "scheduled").await,
        1,
        "future job not run"
    );
    w.stop().await.unwrap();
}

/// `insights_queue.add_job` called from SQL (an application's own code or a trigger).
async fn add_job_from_sql(pool: &sqlx::PgPool, n: i64, key: &str) -> Option<i64> {
    sqlx::query_scalar("SELECT insights_queue.add_job($1, $2, $3)")
        .bind(Q)
        .bind(serde_json::to_value(TestJob::ok(n)).unwrap())
        .bind(key)
        .fetch_one(pool)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn add_job_from_sql_dedupes_like_a_push_and_its_job_runs() {
    let e = env("q_add_job", test_config()).await;
    let st = TestState::new(e.pool.clone());
    let first = add_job_from_sql(&e.pool, 7, "lead-7").await;
    assert!(first.is_some(), "a new key enqueues");
    assert_eq!(
        add_job_from_sql(&e.pool, 7, "lead-7").await,
        None,
        "the same key while its job is pending enqueues nothing"
    );
    let out = e
        .queue
        .push(Q, NewJob::new(TestJob::ok(7)).dedupe_key("lead-7"))
        .await
        .unwrap();
    assert_eq!(
        (out.inserted, out.duplicates),
        (0, 1),
        "push sees the same key"
    );
    assert_eq!(state_count(&e.pool, "available").await, 1);

    let w = spawn_worker(&e.queue, WorkerSpec::new("w", 2), st.clone());
    wait_until(secs(30), "the SQL-enqueued job completed", || async {
        state_count(&e.pool, "completed").await == 1
    })
    .await
    .unwrap();
    let again = add_job_from_sql(&e.pool, 7, "lead-7").await;
    assert!(
        again.is_some() && again != first,
        "the key is free again once its job finished"
    );
    wait_until(secs(30), "the second job completed", || async {
        state_count(&e.pool, "completed").await == 2
    })
    .await
    .unwrap();
    w.stop().await.unwrap();
    assert_eq!(st.attempts_of(7).len(), 2, "each enqueued job ran once");
}
