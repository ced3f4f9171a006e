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
