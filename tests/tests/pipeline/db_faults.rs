//! Database trouble that is not the job's fault, through pgbouncer in transaction mode: a
//! statement cancelled by a `statement_timeout` or a `lock_timeout` set on the database (as
//! hosted Postgres does on its roles) makes the job wait and retry without spending its
//! attempt, never discards it, and an insight already paid for is written (the LLM is not paid
//! again) once the database takes it.

use std::time::Duration;

use insights_e2e::defaults::{CONDITION_TIMEOUT, DRAIN_TIMEOUT};
use insights_e2e::mock::start_mock;
use insights_e2e::pooler::{pooler_url, start_pgbouncer};
use insights_e2e::{E2eDb, Insights, WorkerEnv, wait_until};
use insights_llm::mock::MockLlmConfig;
use sqlx::Connection;

use crate::support::enqueue;

const LEADS: usize = 40;

/// Runs the pipeline over pgbouncer while the test holds `lead_conversation_insights` locked
/// against writes, with `setting` (e.g. `statement_timeout = '300ms'`) on the database, until
/// the worker logged a paid-for write cancelled with `symptom`; then lets go and checks that
/// nothing was lost.
async fn locked_insights_table_is_waited_out(label: &str, setting: &str, symptom: &str) {
    let db = E2eDb::create(label).await.unwrap();
    db.seed(LEADS, 41).await.unwrap();
    db.book_all().await.unwrap();
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "ALTER DATABASE \"{}\" SET {setting}",
        db.name
    )))
    .execute(&db.pool)
    .await
    .unwrap();
    let pgbouncer = start_pgbouncer(4).await.unwrap();
    let mock = start_mock(MockLlmConfig::with_latency(Duration::from_millis(50)))
        .await
        .unwrap();
    let env = WorkerEnv::new(&pooler_url(&pgbouncer, &db.name), &mock.base_url())
        .concurrency(8)
        .set("INSIGHTS_MAX_ATTEMPTS", 1)
        .set("RUST_LOG", "info,insights_worker::handler=debug");
    let report = enqueue(&env, &[]).await;
    assert_eq!(report.enqueued, LEADS as u64, "{report:?}");

    // The lock holder: loads (which read the stored insight) go through, so the LLM is paid;
    // the writes wait on it until the database cancels them.
    let mut holder = sqlx::PgConnection::connect(&db.url).await.unwrap();
    let mut tx = holder.begin().await.unwrap();
    sqlx::query("SET LOCAL statement_timeout = 0")
        .execute(&mut *tx)
        .await
        .unwrap();
    sqlx::query("LOCK TABLE lead_conversation_insights IN EXCLUSIVE MODE")
        .execute(&mut *tx)
        .await
        .unwrap();

    let mut worker = Insights::with_env(&env)
        .args(["work", "--exit-when-idle", "--json"])
        .spawn(label)
        .unwrap();
    wait_until(
        CONDITION_TIMEOUT,
        &format!("a paid-for write cancelled by {symptom}"),
        || async {
            worker
                .stderr()
                .lines()
                .any(|l| l.contains("insight write failed") && l.contains(symptom))
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}: {}", worker.describe()));
    assert_eq!(
        db.insight_count().await.unwrap(),
        0,
        "written through the lock"
    );
    let discarded_while_locked = db.job_counts().await.unwrap().get("discarded").copied();
    tx.rollback().await.unwrap();

    let status = worker.wait(DRAIN_TIMEOUT).await.unwrap();
    assert!(status.success(), "{}", worker.describe());
    assert_eq!(discarded_while_locked, None);
    let counts = db.job_counts().await.unwrap();
    assert_eq!(counts.get("discarded"), None, "{counts:?}");
    assert_eq!(counts.get("completed"), Some(&(LEADS as u64)), "{counts:?}");
    db.assert_pipeline_done().await.unwrap();
    let jobs = db.jobs(None).await.unwrap();
    assert!(
        jobs.iter().all(|j| j.attempt == 1),
        "attempts spent on database trouble: {:?}",
        jobs.iter().filter(|j| j.attempt != 1).collect::<Vec<_>>()
    );
    let stats = mock.stats();
    assert_eq!(
        stats.ok, LEADS as u64,
        "every insight paid for once and written: {stats:?}"
    );
    let cancelled = worker
        .stderr()
        .lines()
        .filter(|l| l.contains("insight write failed") && l.contains(symptom))
        .count();
    println!(
        "{setting}: {cancelled} paid-for writes cancelled and retried, none discarded, LLM paid {} times",
        stats.ok
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statement_timeout_on_the_database_is_waited_out_through_pgbouncer() {
    locked_insights_table_is_waited_out(
        "e2e_db_57014",
        "statement_timeout = '300ms'",
        "statement timeout",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lock_timeout_on_the_database_is_waited_out_through_pgbouncer() {
    locked_insights_table_is_waited_out("e2e_db_55P03", "lock_timeout = '300ms'", "lock timeout")
        .await;
}
