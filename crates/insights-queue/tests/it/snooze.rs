//! Snoozes give the attempt back, and the maximum job age ends a job that keeps being snoozed.

use insights_queue::{JobState, NewJob};
use insights_testkit::wait_until;
use sqlx::Row;

use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snooze_past_the_maximum_age_discards_and_within_it_reschedules() {
    let cfg = test_config();
    assert_eq!(cfg.max_job_age, secs(24 * 3600));
    let e = env("q_snooze_age", cfg).await;
    let snooze = Behave::SnoozeOnce { ms: 60_000 };
    e.queue
        .push(Q, NewJob::new(TestJob::with(1, snooze.clone())))
        .await
        .unwrap();
    e.queue
        .push(Q, NewJob::new(TestJob::with(2, snooze)))
        .await
        .unwrap();
    // Job 1 was enqueued a day and an hour ago.
    let old_id: i64 = sqlx::query(
        "UPDATE insights_queue.jobs SET created_at = now() - interval '25 hours' \
         WHERE payload->>'n' = '1' RETURNING id",
    )
    .fetch_one(&e.pool)
    .await
    .unwrap()
    .get(0);
    let young_id: i64 = sqlx::query("SELECT id FROM insights_queue.jobs WHERE payload->>'n' = '2'")
        .fetch_one(&e.pool)
        .await
        .unwrap()
        .get(0);

    let st = TestState::new(e.pool.clone());
    let w = spawn_worker(&e.queue, WorkerSpec::new("w", 2), st.clone());
    let settled = wait_until(secs(30), "one job discarded, one scheduled", || async {
        state_count(&e.pool, "discarded").await == 1 && state_count(&e.pool, "scheduled").await == 1
    })
    .await;
    w.stop().await.unwrap();
    settled.unwrap();

    let old = e.queue.show(old_id).await.unwrap().unwrap();
    assert_eq!(old.state, JobState::Discarded);
    let last = &old.errors.last().unwrap().error;
    assert!(last.starts_with("gave up after 25h 0m "), "{last}");
    assert!(last.ends_with("app db down"), "{last}");
    assert!(old.finalized_at.is_some());

    let young = e.queue.show(young_id).await.unwrap().unwrap();
    assert_eq!(young.state, JobState::Scheduled);
    assert_eq!(young.attempt, 0, "the snooze gave the attempt back");
    assert!(
        young.run_at > young.errors[0].at,
        "scheduled after the delay"
    );
    assert!(young.errors[0].error.contains("app db down"));
    assert_eq!(st.attempts_of(2), vec![1]);
}
