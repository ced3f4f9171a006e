use std::sync::Arc;
use std::time::Duration;

use insights_core::DatabaseUrl;
use insights_store::{
    Backoff, DomainStatements, ErrorClass, Jitter, PoolSettings, RetryPolicy, Store, StoreOptions,
    connect,
};
use insights_testkit::wait_until;

use crate::support::{BigintKeys, env};

fn store_with_candidates(pool: &sqlx::PgPool, sql: &'static str) -> Store {
    Store::new(
        pool.clone(),
        StoreOptions {
            retry: RetryPolicy::none(),
            statements: DomainStatements {
                candidates: Arc::from(sql),
                ..DomainStatements::default()
            },
            ..StoreOptions::default()
        },
    )
}

/// Real server errors land in the right class: a terminated backend (57P01 FATAL) is a
/// connection error (retried); a missing table (42P01) is permanent and not retried.
#[tokio::test]
async fn real_server_errors_are_classified() {
    let e = env("store_classify").await;
    let slow = store_with_candidates(
        &e.pool,
        "SELECT g::bigint AS lead_key FROM pg_sleep(30), generate_series(1, 2) g WHERE g > coalesce($1, 0) LIMIT $2",
    );
    let call = tokio::spawn({
        let slow = slow.clone();
        async move { slow.candidate_ids(None, 1).await }
    });
    let admin = sqlx::PgPool::connect(&e.db.url).await.unwrap();
    let find = "SELECT pid FROM pg_stat_activity
                 WHERE datname = current_database() AND query LIKE '%pg_sleep(30)%'
                   AND pid <> pg_backend_pid()";
    wait_until(
        Duration::from_secs(20),
        "the slow query to start",
        || async {
            sqlx::query_scalar::<_, i32>(find)
                .fetch_optional(&admin)
                .await
                .unwrap()
                .is_some()
        },
    )
    .await
    .unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT pg_terminate_backend(pid) FROM ({find}) s"
    )))
    .execute(&admin)
    .await
    .unwrap();
    let err = call.await.unwrap().unwrap_err();
    assert_eq!(err.class(), ErrorClass::Connection, "{err}");
    assert!(err.is_transient() && err.is_connection(), "{err}");
    assert_eq!(err.sqlstate().as_deref(), Some("57P01"), "{err}");

    let broken = Store::new(
        e.pool.clone(),
        StoreOptions {
            statements: DomainStatements {
                candidates: Arc::from("SELECT id FROM no_such_table WHERE id > $1 LIMIT $2"),
                ..DomainStatements::default()
            },
            ..StoreOptions::default()
        },
    );
    let err = broken.candidate_ids(None, 1).await.unwrap_err();
    assert_eq!(err.class(), ErrorClass::Permanent);
    assert!(!err.is_connection());
    assert_eq!(err.sqlstate().as_deref(), Some("42P01"));
    assert_eq!(
        broken.stats().transactions,
        1,
        "a permanent error is not retried"
    );
}

/// A statement cancelled by a server-side `statement_timeout` (57014) and a lock not granted
/// within `lock_timeout` (55P03) are transient: the store retries them instead of failing the
/// job whose LLM call was already paid for.
#[tokio::test]
async fn statement_and_lock_timeouts_are_retried() {
    let e = env("store_timeouts").await;
    crate::support::lead(&e.pool, 1, true).await;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        r#"ALTER DATABASE "{}" SET lock_timeout = '20ms'"#,
        e.db.name
    )))
    .execute(&e.pool)
    .await
    .unwrap();
    let mut settings = PoolSettings::new(DatabaseUrl::new(e.db.url.clone()));
    settings.statement_timeout = Duration::from_millis(100);
    let pool = connect(&settings).await.unwrap();
    let store = |sql: &'static str| {
        Store::new(
            pool.clone(),
            StoreOptions {
                call_timeout: Duration::from_secs(10),
                retry: RetryPolicy {
                    backoff: Backoff::new(
                        Duration::from_millis(1),
                        Duration::from_millis(5),
                        Jitter::Full,
                    ),
                    max_retries: 2,
                },
                statements: DomainStatements {
                    candidates: Arc::from(sql),
                    ..DomainStatements::default()
                },
                ..StoreOptions::default()
            },
        )
    };

    let slow = store(
        "SELECT g::bigint AS lead_key FROM pg_sleep(1), generate_series(1, 2) g WHERE g > coalesce($1, 0) LIMIT $2",
    );
    let err = slow.candidate_ids(None, 1).await.unwrap_err();
    assert_eq!(err.sqlstate().as_deref(), Some("57014"), "{err}");
    assert_eq!(err.class(), ErrorClass::Transient, "{err}");
    assert_eq!(slow.stats().transactions, 3, "first try and two retries");

    let mut holder = e.pool.begin().await.unwrap();
    sqlx::query("SELECT id FROM leads WHERE id = 1 FOR UPDATE")
        .execute(&mut *holder)
        .await
        .unwrap();
    let locking = store(
        "SELECT id AS lead_key FROM leads WHERE id > coalesce($1, 0) ORDER BY id LIMIT $2 FOR UPDATE",
    );
    let err = locking.candidate_ids(None, 1).await.unwrap_err();
    assert_eq!(err.sqlstate().as_deref(), Some("55P03"), "{err}");
    assert_eq!(err.class(), ErrorClass::Transient, "{err}");
    assert_eq!(locking.stats().transactions, 3, "first try and two retries");
    holder.rollback().await.unwrap();
    assert_eq!(locking.candidate_ids(None, 1).await.unwrap(), vec![1]);
}
