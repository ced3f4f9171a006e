//! A worker process killed with SIGKILL mid-run; a second worker finishes everything.
//! The test binary re-executes itself: with `INSIGHTS_QUEUE_CRASH_DB_URL` set, the
//! `crash_child_worker` test runs a worker until it is killed.

use std::collections::BTreeSet;
use std::process::{Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::Duration;

use insights_queue::{NewJob, Queue, QueueConfig};
use insights_testkit::wait_until;
use sqlx::Row;

use crate::common::*;

const CHILD_ENV: &str = "INSIGHTS_QUEUE_CRASH_DB_URL";
const CHILD_APP: &str = "insights-crash-child";

fn crash_config() -> QueueConfig {
    QueueConfig {
        lease_duration: Duration::from_secs(2),
        heartbeat_interval: Duration::from_millis(500),
        rescue_interval: Duration::from_millis(300),
        ..test_config()
    }
}

/// Not a test of its own: the worker side of `worker_killed_with_sigkill_...`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_child_worker() {
    let Ok(url) = std::env::var(CHILD_ENV) else {
        return;
    };
    let opts: sqlx::postgres::PgConnectOptions = url.parse().unwrap();
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(4)
        .connect_with(opts.application_name(CHILD_APP))
        .await
        .unwrap();
    let queue = Queue::new(pool.clone(), crash_config());
    let st = TestState::new(pool);
    let _w = spawn_worker(&queue, WorkerSpec::new("child", 8), st);
    // Killed long before this.
    tokio::time::sleep(Duration::from_secs(120)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_killed_with_sigkill_mid_run_second_worker_finishes_everything() {
    if std::env::var(CHILD_ENV).is_ok() {
        return;
    }
    let e = env("q_crash", crash_config()).await;
    let total = 200i64;
    let jobs: Vec<_> = (0..total)
        .map(|i| NewJob::new(TestJob::with(i, Behave::Sleep { ms: 100 })))
        .collect();
    e.queue.push_bulk(Q, jobs).await.unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut child = Command::new(exe)
        .args([
            "--exact",
            "crash::crash_child_worker",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, &e.db.url)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let progressed = wait_until(secs(60), "child worker made progress", || async {
        effects(&e.pool).await >= 30
    })
    .await;
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    progressed.unwrap();
    // Statements the child sent just before dying may still run server-side; wait until its
    // sessions are gone before looking at the rows.
    wait_until(secs(30), "child sessions gone", || async {
        sqlx::query("SELECT count(*) FROM pg_stat_activity WHERE application_name = $1")
            .bind(CHILD_APP)
            .fetch_one(&e.pool)
            .await
            .map(|r| r.get::<i64, _>(0) == 0)
            .unwrap_or(false)
    })
    .await
    .unwrap();
    let leased_at_kill: BTreeSet<i64> =
        sqlx::query("SELECT id FROM insights_queue.jobs WHERE state = 'running'")
            .fetch_all(&e.pool)
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
    assert!(!leased_at_kill.is_empty(), "the child died holding leases");
    // What the child's killed handlers left in running_now would read as overlaps.
    sqlx::query("DELETE FROM running_now")
        .execute(&e.pool)
        .await
        .unwrap();

    let st = TestState::new(e.pool.clone());
    let w = spawn_worker(&e.queue, WorkerSpec::new("survivor", 8), st.clone());
    wait_until(secs(90), "all jobs completed", || async {
        state_count(&e.pool, "completed").await == total
    })
    .await
    .unwrap();
    w.stop().await.unwrap();

    let per_job: i64 = sqlx::query("SELECT count(DISTINCT job_id) FROM effects")
        .fetch_one(&e.pool)
        .await
        .unwrap()
        .get(0);
    assert_eq!(per_job, total, "every job's effect exists exactly once");
    assert_eq!(st.overlaps.load(Ordering::SeqCst), 0);
    let second: BTreeSet<i64> = sqlx::query("SELECT id FROM insights_queue.jobs WHERE attempt = 2")
        .fetch_all(&e.pool)
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(
        second, leased_at_kill,
        "exactly the rescued jobs show attempt 2"
    );
    let other: i64 =
        sqlx::query("SELECT count(*) FROM insights_queue.jobs WHERE attempt NOT IN (1, 2)")
            .fetch_one(&e.pool)
            .await
            .unwrap()
            .get(0);
    assert_eq!(other, 0);
}
