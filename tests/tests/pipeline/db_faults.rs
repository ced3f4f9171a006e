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

/// Runs the pipeline as a role of its own (directly or through pgbouncer, which then logs in
/// to Postgres as that role), and while it runs sets the role's connection limit to 0 and ends
/// its sessions: every new login fails with 53300 "too many connections for role" until the
/// limit is lifted again.
async fn too_many_connections_is_waited_out(label: &str, through_pgbouncer: bool) {
    let db = E2eDb::create(label).await.unwrap();
    db.seed(LEADS, 43).await.unwrap();
    db.book_all().await.unwrap();
    let role = format!("{}_r", db.name.to_lowercase());
    for sql in [
        format!("CREATE ROLE \"{role}\" LOGIN"),
        format!("GRANT ALL ON SCHEMA public, insights_queue TO \"{role}\""),
        format!("GRANT ALL ON ALL TABLES IN SCHEMA public, insights_queue TO \"{role}\""),
        format!("GRANT ALL ON ALL SEQUENCES IN SCHEMA public, insights_queue TO \"{role}\""),
        format!("GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA public, insights_queue TO \"{role}\""),
    ] {
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
            .execute(&db.pool)
            .await
            .unwrap();
    }
    let role_sql = |sql: String| {
        let pool = db.pool.clone();
        async move {
            sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
                .execute(&pool)
                .await
                .unwrap();
        }
    };
    let pgbouncer = if through_pgbouncer {
        // pgbouncer logs in to this database as the role; clients still log in as the owner.
        Some(
            insights_testkit::Pgbouncer::start(insights_testkit::PgbouncerOptions {
                default_pool_size: 4,
                extra: vec![
                    "[databases]".to_owned(),
                    format!("{} = host=127.0.0.1 port=5432 user={role}", db.name),
                ],
                ..insights_testkit::PgbouncerOptions::default()
            })
            .await
            .unwrap(),
        )
    } else {
        None
    };
    let url = match &pgbouncer {
        Some(p) => pooler_url(p, &db.name),
        None => format!("postgres://{role}@127.0.0.1:5432/{}", db.name),
    };
    let mock = start_mock(MockLlmConfig::with_latency(Duration::from_millis(200)))
        .await
        .unwrap();
    let env = WorkerEnv::new(&url, &mock.base_url())
        .concurrency(4)
        .set("INSIGHTS_MAX_ATTEMPTS", 1);
    let report = enqueue(&env, &[]).await;
    assert_eq!(report.enqueued, LEADS as u64, "{report:?}");

    let mut worker = Insights::with_env(&env)
        .args(["work", "--exit-when-idle", "--json"])
        .spawn(label)
        .unwrap();
    wait_until(CONDITION_TIMEOUT, "a first insight written", || async {
        db.insight_count().await.unwrap_or(0) >= 1
    })
    .await
    .unwrap_or_else(|e| panic!("{e}: {}", worker.describe()));

    role_sql(format!("ALTER ROLE \"{role}\" CONNECTION LIMIT 0")).await;
    role_sql(format!(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = '{role}'"
    ))
    .await;
    // The fault is the one meant: a login as the role is refused with 53300.
    let refused =
        sqlx::PgConnection::connect(&format!("postgres://{role}@127.0.0.1:5432/{}", db.name))
            .await
            .err()
            .and_then(|e| {
                e.as_database_error()
                    .and_then(|d| d.code())
                    .map(|c| c.into_owned())
            });
    assert_eq!(refused.as_deref(), Some("53300"));
    // Logins refused: connection errors, not job failures; the breaker holds fetching.
    wait_until(
        CONDITION_TIMEOUT,
        "the breaker open on refused logins",
        || async {
            worker
                .stderr()
                .lines()
                .any(|l| l.contains("circuit breaker open") && l.contains("database"))
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}: {}", worker.describe()));
    let discarded_while_refused = db.job_counts().await.unwrap().get("discarded").copied();
    role_sql(format!("ALTER ROLE \"{role}\" CONNECTION LIMIT -1")).await;

    let status = worker.wait(DRAIN_TIMEOUT).await.unwrap();
    drop(pgbouncer);
    role_sql(format!(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = '{role}'"
    ))
    .await;
    role_sql(format!("DROP OWNED BY \"{role}\"")).await;
    role_sql(format!("DROP ROLE \"{role}\"")).await;

    assert!(status.success(), "{}", worker.describe());
    assert_eq!(discarded_while_refused, None);
    let counts = db.job_counts().await.unwrap();
    assert_eq!(counts.get("discarded"), None, "{counts:?}");
    assert_eq!(counts.get("completed"), Some(&(LEADS as u64)), "{counts:?}");
    db.assert_pipeline_done().await.unwrap();
    let jobs = db.jobs(None).await.unwrap();
    assert!(
        jobs.iter().all(|j| j.attempt == 1),
        "attempts spent on refused logins: {:?}",
        jobs.iter().filter(|j| j.attempt != 1).collect::<Vec<_>>()
    );
    let stats = mock.stats();
    assert_eq!(
        stats.ok, LEADS as u64,
        "every insight paid for once and written: {stats:?}"
    );
    let snoozed = jobs.iter().filter(|j| !j.errors.is_empty()).count();
    println!(
        "53300 ({}): {snoozed} of {LEADS} jobs snoozed, none discarded, LLM paid {} times",
        if through_pgbouncer {
            "pgbouncer"
        } else {
            "direct"
        },
        stats.ok
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_many_connections_is_waited_out_through_pgbouncer() {
    too_many_connections_is_waited_out("e2e_db_53300_pgb", true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_many_connections_is_waited_out_on_postgres() {
    too_many_connections_is_waited_out("e2e_db_53300_pg", false).await;
}
