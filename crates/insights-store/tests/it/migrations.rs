use insights_core::DatabaseUrl;
use insights_store::{PoolSettings, connect, migrate};
use insights_testkit::TestDb;

#[tokio::test]
async fn migrations_are_idempotent_and_concurrent_safe() {
    let db = TestDb::create("store_migrate").await.unwrap();
    let settings = PoolSettings::new(DatabaseUrl::new(db.url.clone()));
    // Separate pools: separate sessions racing for the same schema.
    let mut pools = Vec::new();
    for _ in 0..4 {
        pools.push(connect(&settings).await.unwrap());
    }
    let runs = futures::future::join_all(pools.iter().map(migrate)).await;
    let mut applied: Vec<i64> = Vec::new();
    for r in runs {
        applied.extend(r.unwrap().applied);
    }
    applied.sort_unstable();
    assert_eq!(applied, vec![1, 2], "each migration applied exactly once");
    let again = migrate(&pools[0]).await.unwrap();
    assert!(again.applied.is_empty());
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM insights_domain_migrations")
        .fetch_one(&pools[0])
        .await
        .unwrap();
    assert_eq!(n, 2);
    let tables: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_tables WHERE tablename IN ('leads','messages','lead_conversation_insights')",
    )
    .fetch_one(&pools[0])
    .await
    .unwrap();
    assert_eq!(tables, 3);
    // A changed migration text is refused, not silently skipped.
    sqlx::query("UPDATE insights_domain_migrations SET checksum = 'x' WHERE version = 1")
        .execute(&pools[0])
        .await
        .unwrap();
    let err = migrate(&pools[0]).await.unwrap_err();
    assert!(err.to_string().contains("was changed"), "{err}");
}
