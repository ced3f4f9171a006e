//! The queue schema under the workspace's migrator: a database the previous release left
//! behind (bookkeeping without checksums) is adopted without re-running anything, and from
//! then on an applied migration whose text changed is refused.

use insights_queue::{MigrateError, NewJob, Queue, QueueConfig, QueueError};
use sqlx::{PgPool, Row};

use crate::common::*;

/// The migration texts, in order, as the release applied them.
const RELEASED: [(i32, &str, &str); 4] = [
    (1, "jobs", include_str!("../../migrations/0001_jobs.sql")),
    (
        2,
        "fetch_functions",
        include_str!("../../migrations/0002_fetch_functions.sql"),
    ),
    (
        3,
        "notify_from_push",
        include_str!("../../migrations/0003_notify_from_push.sql"),
    ),
    (
        4,
        "fetch_generic_plan_async_claim",
        include_str!("../../migrations/0004_fetch_generic_plan_async_claim.sql"),
    ),
];

/// The schema and bookkeeping exactly as the release's runner left them: an `integer` version,
/// no checksum column, one `(version, name)` row per migration.
async fn build_as_released(pool: &PgPool) {
    sqlx::raw_sql(
        "CREATE SCHEMA IF NOT EXISTS insights_queue;
         CREATE TABLE IF NOT EXISTS insights_queue.schema_migrations (
             version integer PRIMARY KEY,
             name text NOT NULL,
             applied_at timestamptz NOT NULL DEFAULT now());",
    )
    .execute(pool)
    .await
    .unwrap();
    for (version, name, sql) in RELEASED {
        sqlx::raw_sql(sql).execute(pool).await.unwrap();
        sqlx::query("INSERT INTO insights_queue.schema_migrations (version, name) VALUES ($1, $2)")
            .bind(version)
            .bind(name)
            .execute(pool)
            .await
            .unwrap();
    }
}

async fn bookkeeping(pool: &PgPool) -> Vec<(i64, Option<String>)> {
    sqlx::query(
        "SELECT version::bigint, checksum FROM insights_queue.schema_migrations ORDER BY version",
    )
    .fetch_all(pool)
    .await
    .unwrap()
    .iter()
    .map(|r| (r.get(0), r.get(1)))
    .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_from_the_previous_release_is_adopted_without_reapplying() {
    let db = insights_testkit::TestDb::create("q_migrate_upgrade")
        .await
        .unwrap();
    let pool = pool_for(&db.url, 4).await;
    build_as_released(&pool).await;
    let queue = Queue::new(pool.clone(), QueueConfig::default());
    queue
        .push(Q, NewJob::new(TestJob::ok(1)))
        .await
        .expect("the released schema takes jobs");

    let report = insights_queue::migrate(&pool).await.unwrap();
    assert_eq!(report.applied, vec![5], "only what came after the release");
    let expected: Vec<(i64, Option<String>)> = RELEASED
        .iter()
        .map(|(v, _, sql)| (i64::from(*v), Some(insights_pg::migrate::checksum(sql))))
        .chain([(
            5,
            Some(insights_pg::migrate::checksum(include_str!(
                "../../migrations/0005_add_job.sql"
            ))),
        )])
        .collect();
    assert_eq!(bookkeeping(&pool).await, expected, "checksums recorded");
    let version_type: String = sqlx::query_scalar(
        "SELECT data_type::text FROM information_schema.columns
          WHERE table_schema = 'insights_queue' AND table_name = 'schema_migrations'
            AND column_name = 'version'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(
        version_type, "integer",
        "a process of the previous release still reads the version as it wrote it"
    );

    let again = insights_queue::migrate(&pool).await.unwrap();
    assert!(again.applied.is_empty(), "{again:?}");
    assert_eq!(bookkeeping(&pool).await, expected);
    let counts = queue.counts(Q).await.unwrap();
    assert_eq!(counts.available, 1, "the job survived: {counts:?}");

    sqlx::query(
        "UPDATE insights_queue.schema_migrations SET checksum = '0000000000000000' WHERE version = 2",
    )
    .execute(&pool)
    .await
    .unwrap();
    let err = insights_queue::migrate(&pool).await.unwrap_err();
    match &err {
        QueueError::Migrate(MigrateError::Changed {
            version,
            name,
            applied,
            embedded,
        }) => {
            assert_eq!((*version, name.as_str()), (2, "fetch_functions"));
            assert_eq!(applied, "0000000000000000");
            assert_eq!(Some(embedded.clone()), expected[1].1);
        }
        other => panic!("expected a changed migration, got {other}"),
    }
    assert!(!err.is_transient(), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fresh_database_records_a_checksum_per_migration() {
    let db = insights_testkit::TestDb::create("q_migrate_fresh")
        .await
        .unwrap();
    let pool = pool_for(&db.url, 4).await;
    let report = insights_queue::migrate(&pool).await.unwrap();
    assert_eq!(report.applied, vec![1, 2, 3, 4, 5]);
    let rows = bookkeeping(&pool).await;
    assert_eq!(rows.len(), 5);
    assert!(
        rows.iter()
            .all(|(_, c)| c.as_deref().is_some_and(|c| c.len() == 16)),
        "{rows:?}"
    );
}
