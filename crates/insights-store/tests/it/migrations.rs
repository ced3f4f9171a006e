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

/// The domain bookkeeping exactly as the previous release's runner left it (same table, same
/// FNV-1a 64 checksums) is accepted as it is: nothing is applied again, the data stays.
#[tokio::test]
async fn a_database_from_the_previous_release_is_already_up_to_date() {
    let db = TestDb::create("store_migrate_upgrade").await.unwrap();
    let pool = connect(&PoolSettings::new(DatabaseUrl::new(db.url.clone())))
        .await
        .unwrap();
    sqlx::raw_sql(
        "CREATE TABLE IF NOT EXISTS insights_domain_migrations (
            version    bigint PRIMARY KEY,
            name       text        NOT NULL,
            checksum   text        NOT NULL,
            applied_at timestamptz NOT NULL DEFAULT now()
        )",
    )
    .execute(&pool)
    .await
    .unwrap();
    let released = [
        (
            1i64,
            "domain",
            include_str!("../../../../migrations/0001_domain.sql"),
            "d7da3991a1ed5252",
        ),
        (
            2,
            "candidates",
            include_str!("../../../../migrations/0002_candidates.sql"),
            "b3d3fe24579ef59b",
        ),
    ];
    for (version, name, sql, checksum) in released {
        sqlx::raw_sql(sql).execute(&pool).await.unwrap();
        sqlx::query(
            "INSERT INTO insights_domain_migrations (version, name, checksum) VALUES ($1, $2, $3)",
        )
        .bind(version)
        .bind(name)
        .bind(checksum)
        .execute(&pool)
        .await
        .unwrap();
    }
    crate::support::lead(&pool, 7, true).await;

    let report = migrate(&pool).await.unwrap();
    assert!(report.applied.is_empty(), "{report:?}");
    let rows: Vec<(i64, String)> =
        sqlx::query_as("SELECT version, checksum FROM insights_domain_migrations ORDER BY 1")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(
        rows,
        vec![
            (1, "d7da3991a1ed5252".to_owned()),
            (2, "b3d3fe24579ef59b".to_owned())
        ]
    );
    let leads: i64 = sqlx::query_scalar("SELECT count(*) FROM leads WHERE id = 7")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(leads, 1, "the data stays");
}
