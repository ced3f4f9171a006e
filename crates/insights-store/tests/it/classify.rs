use std::sync::Arc;
use std::time::Duration;

use insights_store::{DomainStatements, ErrorClass, RetryPolicy, Store, StoreOptions};
use insights_testkit::wait_until;

use crate::support::env;

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
/// transient connection error; a missing table (42P01) is permanent and not retried.
#[tokio::test]
async fn real_server_errors_are_classified() {
    let e = env("store_classify").await;
    let slow = store_with_candidates(
        &e.pool,
        "SELECT g::bigint FROM pg_sleep(30), generate_series(1, 2) g WHERE g > $1 LIMIT $2",
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
    assert_eq!(err.class(), ErrorClass::Transient, "{err}");
    assert!(err.is_connection(), "{err}");
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
