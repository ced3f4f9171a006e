use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use insights_queue::{NewJob, QueueConfig};
use insights_testkit::wait_until;
use sqlx::Row;

use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_never_run_the_same_job_at_the_same_time() {
    let e = env("q_overlap", test_config()).await;
    let jobs: Vec<_> = (0..300)
        .map(|i| NewJob::new(TestJob::with(i, Behave::Sleep { ms: 5 })))
        .collect();
    e.queue.push_bulk(Q, jobs).await.unwrap();
    let st = TestState::new(e.pool.clone());
    let a = spawn_worker(&e.queue, WorkerSpec::new("a", 8), st.clone());
    let b = spawn_worker(&e.queue, WorkerSpec::new("b", 8), st.clone());
    wait_until(secs(60), "300 completed", || async {
        state_count(&e.pool, "completed").await == 300
    })
    .await
    .unwrap();
    a.stop().await.unwrap();
    b.stop().await.unwrap();
    assert_eq!(
        st.overlaps.load(Ordering::SeqCst),
        0,
        "no job ran twice at once"
    );
    assert_eq!(st.duplicate_effects.load(Ordering::SeqCst), 0);
    assert_eq!(
        st.started.load(Ordering::SeqCst),
        300,
        "each job started once"
    );
    assert_eq!(effects(&e.pool).await, 300);
    let both: i64 = sqlx::query("SELECT count(DISTINCT locked_by) FROM insights_queue.jobs")
        .fetch_one(&e.pool)
        .await
        .unwrap()
        .get(0);
    assert_eq!(both, 0, "no lease left behind");
    assert!(st.errors.lock().unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetch_never_leases_more_than_the_free_slots() {
    let e = env("q_slots", test_config()).await;
    let jobs: Vec<_> = (0..15)
        .map(|i| NewJob::new(TestJob::with(i, Behave::Sleep { ms: 150 })))
        .collect();
    e.queue.push_bulk(Q, jobs).await.unwrap();
    let st = TestState::new(e.pool.clone());
    let w = spawn_worker(&e.queue, WorkerSpec::new("w", 3), st.clone());
    let mut max_running = 0i64;
    let deadline = Instant::now() + secs(60);
    while state_count(&e.pool, "completed").await < 15 {
        assert!(Instant::now() < deadline, "jobs did not finish");
        // Leased and not yet finished by the handler (a finished job's row stays running for
        // the few ms until its completion is flushed, but it no longer holds a slot).
        let held: i64 = sqlx::query(
            "SELECT count(*) FROM insights_queue.jobs j WHERE state = 'running' \
             AND NOT EXISTS (SELECT 1 FROM effects e WHERE e.job_id = j.id)",
        )
        .fetch_one(&e.pool)
        .await
        .unwrap()
        .get(0);
        max_running = max_running.max(held);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    w.stop().await.unwrap();
    assert!(max_running >= 1, "sampling saw work");
    assert!(max_running <= 3, "leased {max_running} > 3 slots");
    assert!(st.max_in_handler.load(Ordering::SeqCst) <= 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_worker_picks_up_a_new_job_within_the_poll_interval() {
    let e = env("q_poll", test_config()).await;
    let st = TestState::new(e.pool.clone());
    let w = spawn_worker(&e.queue, WorkerSpec::new("w", 2), st.clone());
    // Let the worker go idle first.
    wait_until(secs(10), "worker registered", || async {
        sqlx::query("SELECT count(*) FROM insights_queue.workers")
            .fetch_one(&e.pool)
            .await
            .map(|r| r.get::<i64, _>(0) == 1)
            .unwrap_or(false)
    })
    .await
    .unwrap();
    let t0 = Instant::now();
    e.queue.push(Q, NewJob::new(TestJob::ok(1))).await.unwrap();
    wait_until(secs(10), "job completed", || async {
        state_count(&e.pool, "completed").await == 1
    })
    .await
    .unwrap();
    let took = t0.elapsed();
    w.stop().await.unwrap();
    assert!(took < secs(5), "pick-up took {took:?} with a 50 ms poll");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listen_notify_over_a_direct_url_wakes_an_idle_worker() {
    // Poll every 30 s: only the notification can explain a fast pick-up.
    let mut cfg = QueueConfig {
        poll_interval: secs(30),
        ..test_config()
    };
    let e = env("q_listen", cfg.clone()).await;
    cfg.listen_url = Some(e.db.url.clone());
    let queue = insights_queue::Queue::new(e.pool.clone(), cfg);
    let st = TestState::new(e.pool.clone());
    let w = spawn_worker(&queue, WorkerSpec::new("w", 2), st.clone());
    // The first (empty) fetch happens at start; wait until the listener is connected.
    wait_until(secs(10), "listener connected", || async {
        sqlx::query(
            "SELECT count(*) FROM pg_stat_activity \
             WHERE datname = current_database() AND query LIKE 'LISTEN%'",
        )
        .fetch_one(&e.pool)
        .await
        .map(|r| r.get::<i64, _>(0) >= 1)
        .unwrap_or(false)
    })
    .await
    .unwrap();
    let t0 = Instant::now();
    queue.push(Q, NewJob::new(TestJob::ok(1))).await.unwrap();
    wait_until(secs(20), "job completed", || async {
        state_count(&e.pool, "completed").await == 1
    })
    .await
    .unwrap();
    let took = t0.elapsed();
    w.stop().await.unwrap();
    assert!(
        took < secs(10),
        "notification did not wake the worker ({took:?})"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetch_control_pauses_and_resumes_fetching() {
    let e = env("q_pause", test_config()).await;
    let st = TestState::new(e.pool.clone());
    // Paused before it starts: a fetch issued before a pause may still land after it.
    let spec = WorkerSpec {
        paused_for: Some(secs(600)),
        ..WorkerSpec::new("w", 2)
    };
    let w = spawn_worker(&e.queue, spec, st.clone());
    assert!(w.control.is_paused());
    e.queue.push(Q, NewJob::new(TestJob::ok(1))).await.unwrap();
    tokio::time::sleep(Duration::from_millis(600)).await; // a paused worker must stay idle
    assert_eq!(
        state_count(&e.pool, "available").await,
        1,
        "paused: not fetched"
    );
    w.control.resume();
    assert!(!w.control.is_paused());
    wait_until(secs(10), "job completed after resume", || async {
        state_count(&e.pool, "completed").await == 1
    })
    .await
    .unwrap();
    w.stop().await.unwrap();
}

/// Fetches start after a cursor to skip dead index entries; jobs that sort before the cursor
/// (higher priority, back-dated) must still be picked up while a backlog drains.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_sorting_before_the_fetch_cursor_are_not_starved_by_a_backlog() {
    let e = env("q_cursor", test_config()).await;
    let jobs: Vec<_> = (0..3_000)
        .map(|i| NewJob::new(TestJob::with(i, Behave::Sleep { ms: 5 })))
        .collect();
    e.queue.push_bulk(Q, jobs).await.unwrap();
    let st = TestState::new(e.pool.clone());
    let w = spawn_worker(&e.queue, WorkerSpec::new("w", 4), st.clone());
    wait_until(secs(60), "backlog under way", || async {
        st.finished.load(Ordering::SeqCst) >= 200
    })
    .await
    .unwrap();
    e.queue
        .push(Q, NewJob::new(TestJob::ok(100_001)).priority(-10))
        .await
        .unwrap();
    e.queue
        .push(
            Q,
            NewJob::new(TestJob::ok(100_002))
                .run_at(chrono::Utc::now() - chrono::Duration::hours(1)),
        )
        .await
        .unwrap();
    wait_until(secs(30), "early-sorting jobs done", || async {
        sqlx::query("SELECT count(*) FROM effects WHERE n > 100000")
            .fetch_one(&e.pool)
            .await
            .map(|r| r.get::<i64, _>(0) == 2)
            .unwrap_or(false)
    })
    .await
    .unwrap();
    let left = state_count(&e.pool, "available").await;
    w.control.pause_for(secs(60));
    w.stop().await.unwrap();
    assert!(
        left > 0,
        "they ran before the backlog drained (left: {left})"
    );
}

/// Migration 4's contract: a claim commits without waiting for its WAL flush, for its own
/// transaction only, and the fetch functions keep one plan per connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_commits_asynchronously_in_its_own_transaction_only() {
    let db = insights_testkit::TestDb::create("q_async_claim")
        .await
        .unwrap();
    let pool = pool_for(&db.url, 2).await;
    insights_queue::migrate(&pool).await.unwrap();
    let queue = insights_queue::Queue::new(pool.clone(), test_config());
    queue
        .push_bulk(Q, (0..3).map(|i| NewJob::new(TestJob::ok(i))).collect())
        .await
        .unwrap();

    let mut conn = pool.acquire().await.unwrap();
    let mut tx = sqlx::Connection::begin(&mut *conn).await.unwrap();
    let before: String = sqlx::query_scalar("SELECT current_setting('synchronous_commit')")
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    let claimed: i64 =
        sqlx::query_scalar("SELECT count(*) FROM insights_queue.fetch_jobs($1, 2, 'w', 1, 30000)")
            .bind(Q)
            .fetch_one(&mut *tx)
            .await
            .unwrap();
    let during: String = sqlx::query_scalar("SELECT current_setting('synchronous_commit')")
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let after: String = sqlx::query_scalar("SELECT current_setting('synchronous_commit')")
        .fetch_one(&mut *conn)
        .await
        .unwrap();
    assert_eq!(claimed, 2);
    assert_eq!(
        (before.as_str(), during.as_str(), after.as_str()),
        ("on", "off", "on")
    );

    let configs: Vec<Vec<String>> = sqlx::query_scalar(
        "SELECT proconfig FROM pg_proc WHERE pronamespace = 'insights_queue'::regnamespace \
         AND proname IN ('fetch_jobs', 'fetch_jobs_after')",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(configs.len(), 2);
    for c in configs {
        assert!(
            c.contains(&"plan_cache_mode=force_generic_plan".to_owned()),
            "{c:?}"
        );
    }
}
