use std::sync::atomic::Ordering;
use std::time::Duration;

use insights_queue::{Backoff, Jitter, JobDetail, NewJob, QueueConfig};
use insights_testkit::wait_until;
use sqlx::Row;

use crate::common::*;

async fn only_job(e: &Env) -> JobDetail {
    let id: i64 = sqlx::query("SELECT id FROM insights_queue.jobs ORDER BY id LIMIT 1")
        .fetch_one(&e.pool)
        .await
        .unwrap()
        .get(0);
    e.queue.show(id).await.unwrap().unwrap()
}

async fn run_until_state(e: &Env, spec: WorkerSpec, state: &str) -> std::sync::Arc<TestState> {
    let st = TestState::new(e.pool.clone());
    let w = spawn_worker(&e.queue, spec, st.clone());
    let res = wait_until(secs(60), state, || async {
        state_count(&e.pool, state).await == 1
    })
    .await;
    w.stop().await.unwrap();
    res.unwrap();
    st
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_job_is_retried_later_not_left_running() {
    let e = env("q_panic", test_config()).await;
    e.queue
        .push(Q, NewJob::new(TestJob::with(1, Behave::PanicOnce)))
        .await
        .unwrap();
    let st = run_until_state(&e, WorkerSpec::new("w", 2), "completed").await;
    let job = only_job(&e).await;
    assert_eq!(job.attempt, 2);
    assert_eq!(st.attempts_of(1), vec![1, 2]);
    assert_eq!(job.errors.len(), 1);
    assert!(job.errors[0].error.contains("panic"), "{:?}", job.errors);
    assert!(job.run_at > job.created_at, "retry was scheduled later");
    assert!(job.run_at >= job.errors[0].at);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timed_out_job_is_retried_later() {
    let e = env("q_timeout", test_config()).await;
    e.queue
        .push(
            Q,
            NewJob::new(TestJob::with(1, Behave::SleepOnce { ms: 10_000 })),
        )
        .await
        .unwrap();
    let mut spec = WorkerSpec::new("w", 2);
    spec.timeout = Some(Duration::from_millis(300));
    let st = run_until_state(&e, spec, "completed").await;
    let job = only_job(&e).await;
    assert_eq!(job.attempt, 2);
    assert_eq!(st.attempts_of(1), vec![1, 2]);
    assert!(
        job.errors[0].error.contains("timed out"),
        "{:?}",
        job.errors
    );
    assert!(job.run_at > job.created_at);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_hint_is_honoured_within_the_cap() {
    let cfg = QueueConfig {
        retry_backoff: insights_queue::Backoff {
            cap: Duration::from_secs(2),
            ..test_config().retry_backoff
        },
        ..test_config()
    };
    let e = env("q_retry_after", cfg).await;
    e.queue
        .push(
            Q,
            NewJob::new(TestJob::with(1, Behave::RetryAfter { ms: 1_200 })),
        )
        .await
        .unwrap();
    e.queue
        .push(
            Q,
            NewJob::new(TestJob::with(2, Behave::RetryAfter { ms: 3_600_000 })),
        )
        .await
        .unwrap();
    let st = TestState::new(e.pool.clone());
    let w = spawn_worker(&e.queue, WorkerSpec::new("w", 2), st.clone());
    wait_until(secs(60), "both completed", || async {
        state_count(&e.pool, "completed").await == 2
    })
    .await
    .unwrap();
    w.stop().await.unwrap();
    for (n, lo, hi) in [(1i64, 1_200i64, 8_000i64), (2, 2_000, 9_000)] {
        let row = sqlx::query(
            "SELECT attempt, (extract(epoch FROM (attempted_at - (errors->0->>'at')::timestamptz)) * 1000)::bigint \
             FROM insights_queue.jobs WHERE payload->>'n' = $1",
        )
        .bind(n.to_string())
        .fetch_one(&e.pool)
        .await
        .unwrap();
        let attempt: i32 = row.get(0);
        let waited: i64 = row.get(1);
        assert_eq!(attempt, 2, "job {n}: the hint counts an attempt");
        assert!(waited >= lo, "job {n}: retried after {waited} ms < {lo} ms");
        assert!(waited < hi, "job {n}: retried after {waited} ms (cap 2 s)");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abort_and_permanent_errors_discard_with_the_error_kept() {
    let e = env("q_abort", test_config()).await;
    e.queue
        .push(Q, NewJob::new(TestJob::with(1, Behave::Abort)))
        .await
        .unwrap();
    e.queue
        .push(Q, NewJob::new(TestJob::with(2, Behave::Permanent)))
        .await
        .unwrap();
    let st = TestState::new(e.pool.clone());
    let w = spawn_worker(&e.queue, WorkerSpec::new("w", 2), st.clone());
    wait_until(secs(30), "both discarded", || async {
        state_count(&e.pool, "discarded").await == 2
    })
    .await
    .unwrap();
    w.stop().await.unwrap();
    let jobs = e
        .queue
        .list(Q, Some(insights_queue::JobState::Discarded), 10, 0)
        .await
        .unwrap();
    for j in &jobs {
        assert_eq!(j.attempt, 1, "not retried");
        let d = e.queue.show(j.id).await.unwrap().unwrap();
        assert_eq!(d.errors.len(), 1);
        assert!(d.finalized_at.is_some());
    }
    let texts: Vec<String> = jobs.iter().filter_map(|j| j.last_error.clone()).collect();
    assert!(
        texts.iter().any(|t| t.contains("aborted by handler")),
        "{texts:?}"
    );
    assert!(texts.iter().any(|t| t.contains("bad input")), "{texts:?}");
    assert_eq!(st.attempts_of(1), vec![1]);
    assert_eq!(st.attempts_of(2), vec![1]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snooze_reschedules_without_consuming_an_attempt() {
    let e = env("q_snooze", test_config()).await;
    // One attempt only: if the snooze consumed it, the job could not run again.
    e.queue
        .push(
            Q,
            NewJob::new(TestJob::with(1, Behave::SnoozeOnce { ms: 400 })).max_attempts(1),
        )
        .await
        .unwrap();
    let st = run_until_state(&e, WorkerSpec::new("w", 2), "completed").await;
    let job = only_job(&e).await;
    assert_eq!(job.attempt, 1, "snooze gave its attempt back");
    assert_eq!(st.attempts_of(1), vec![1, 1]);
    assert_eq!(job.errors.len(), 1);
    assert!(job.errors[0].error.contains("app db down"));
    let waited = job.attempted_at.unwrap() - job.errors[0].at;
    assert!(waited.num_milliseconds() >= 400, "snoozed only {waited:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exhausted_attempts_discard_the_job() {
    let e = env("q_exhaust", test_config()).await;
    e.queue
        .push(
            Q,
            NewJob::new(TestJob::with(1, Behave::Fail)).max_attempts(3),
        )
        .await
        .unwrap();
    let st = run_until_state(&e, WorkerSpec::new("w", 2), "discarded").await;
    let job = only_job(&e).await;
    assert_eq!(job.attempt, 3);
    assert_eq!(st.attempts_of(1), vec![1, 2, 3]);
    assert_eq!(job.errors.len(), 3);
    assert_eq!(
        job.errors.iter().map(|e| e.attempt).collect::<Vec<_>>(),
        vec![1, 2, 3]
    );
    assert!(job.errors[2].error.contains("attempts exhausted"));
}

/// Retry `n` waits `uniform(0, min(cap, base·2^(n-1)))`. Each delay (from one recorded error to
/// the next) must stay under its own ceiling plus the time to fetch and fail again; over many
/// jobs the mean delay after each attempt must grow with the ceiling and stay well above zero
/// (with full jitter the mean is half the ceiling, so a tight loop or a flat delay shows).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_delays_grow_within_their_jitter_bounds() {
    const JOBS: i64 = 30;
    const ATTEMPTS: i32 = 4;
    // Poll interval, completion flush and a loaded machine's scheduling, on top of the delay.
    const SLACK_MS: i64 = 300;
    let cfg = QueueConfig {
        retry_backoff: Backoff::new(
            Duration::from_millis(300),
            Duration::from_secs(10),
            Jitter::Full,
        ),
        ..test_config()
    };
    let base_ms = i64::try_from(cfg.retry_backoff.base.as_millis()).unwrap();
    let cap_ms = i64::try_from(cfg.retry_backoff.cap.as_millis()).unwrap();
    let e = env("q_backoff", cfg).await;
    let jobs = (0..JOBS)
        .map(|n| NewJob::new(TestJob::with(n, Behave::Fail)).max_attempts(ATTEMPTS))
        .collect();
    e.queue.push_bulk(Q, jobs).await.unwrap();
    // A slot per job: no delay comes from waiting behind another job.
    let st = TestState::new(e.pool.clone());
    let w = spawn_worker(&e.queue, WorkerSpec::new("w", JOBS as usize), st.clone());
    wait_until(secs(60), "every job discarded", || async {
        state_count(&e.pool, "discarded").await == JOBS
    })
    .await
    .unwrap();
    w.stop().await.unwrap();

    let gaps = ATTEMPTS as usize - 1;
    let mut delays_ms: Vec<Vec<i64>> = vec![Vec::new(); gaps];
    for j in e.queue.list(Q, None, JOBS as u32, 0).await.unwrap() {
        let errors = e.queue.show(j.id).await.unwrap().unwrap().errors;
        assert_eq!(errors.len(), ATTEMPTS as usize, "job {}: {errors:?}", j.id);
        for (i, pair) in errors.windows(2).enumerate() {
            let delay = (pair[1].at - pair[0].at).num_milliseconds();
            let ceiling = (base_ms << i).min(cap_ms);
            assert!(
                (0..=ceiling + SLACK_MS).contains(&delay),
                "job {}: retry after attempt {} waited {delay} ms; its ceiling is {ceiling} ms",
                j.id,
                i + 1
            );
            delays_ms[i].push(delay);
        }
    }
    let means: Vec<i64> = delays_ms
        .iter()
        .map(|d| d.iter().sum::<i64>() / d.len() as i64)
        .collect();
    assert!(
        means[0] >= base_ms / 4,
        "mean first retry delay {} ms: no backoff (expected about {} ms)",
        means[0],
        base_ms / 2
    );
    assert!(
        means.windows(2).all(|m| m[1] > m[0]),
        "mean delays per attempt do not grow: {means:?} ms"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payload_that_does_not_decode_is_discarded_with_the_reason() {
    let e = env("q_malformed", test_config()).await;
    e.queue
        .push(Q, NewJob::new(serde_json::json!({"unexpected": true})))
        .await
        .unwrap();
    let st = run_until_state(&e, WorkerSpec::new("w", 2), "discarded").await;
    assert_eq!(st.started.load(Ordering::SeqCst), 0, "handler never saw it");
    let job = only_job(&e).await;
    assert_eq!(job.errors.len(), 1);
    assert!(
        job.errors[0].error.contains("does not decode"),
        "{:?}",
        job.errors
    );
    assert_eq!(job.attempt, 1);
}
