use sqlx::Row;

use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_is_idempotent_and_safe_concurrently() {
    let db = insights_testkit::TestDb::create("q_migrate").await.unwrap();
    let pool = pool_for(&db.url, 8).await;
    let runs = (0..4).map(|_| insights_queue::migrate(&pool));
    for r in futures::future::join_all(runs).await {
        r.unwrap();
    }
    insights_queue::migrate(&pool).await.unwrap();
    let n: i64 = sqlx::query("SELECT count(*) FROM insights_queue.schema_migrations")
        .fetch_one(&pool)
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 5, "each migration recorded once");
    let ext: i64 = sqlx::query("SELECT count(*) FROM pg_extension WHERE extname <> 'plpgsql'")
        .fetch_one(&pool)
        .await
        .unwrap()
        .get(0);
    assert_eq!(ext, 0, "no extensions created");
    let tables: Vec<String> = sqlx::query(
        "SELECT table_name::text FROM information_schema.tables WHERE table_schema = 'insights_queue' ORDER BY 1",
    )
    .fetch_all(&pool)
    .await
    .unwrap()
    .iter()
    .map(|r| r.get(0))
    .collect();
    assert_eq!(tables, vec!["jobs", "schema_migrations", "workers"]);
}
