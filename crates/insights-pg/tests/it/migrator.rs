//! The migrator on a fresh database each: concurrent runs, idempotence, a changed migration,
//! and bookkeeping left by a runner that kept no checksums.

use std::time::Duration;

use insights_pg::migrate::checksum;
use insights_pg::{ErrorClass, MigrateError, Migration, Migrator};
use insights_testkit::TestDb;
use sqlx::PgPool;

const V1: Migration = Migration {
    version: 1,
    name: "things",
    sql: "CREATE TABLE m.things (id bigint PRIMARY KEY, label text NOT NULL);",
};
// Slow enough that concurrent runs overlap on the lock.
const V2: Migration = Migration {
    version: 2,
    name: "things_label_idx",
    sql: "SELECT pg_sleep(0.2); CREATE INDEX things_label_idx ON m.things (label);",
};
const V3: Migration = Migration {
    version: 3,
    name: "others",
    sql: "CREATE TABLE m.others (id bigint PRIMARY KEY);",
};

const ALL: &[Migration] = &[V1, V2, V3];

fn migrator(migrations: &'static [Migration]) -> Migrator {
    Migrator {
        schema: Some("m"),
        table: "m.bookkeeping",
        lock_key: 42,
        timeout: Duration::from_secs(30),
        migrations,
    }
}

async fn pool(db: &TestDb) -> PgPool {
    sqlx::postgres::PgPoolOptions::new()
        .max_connections(2)
        .acquire_timeout(Duration::from_secs(5))
        .connect(&db.url)
        .await
        .unwrap()
}

async fn recorded(pool: &PgPool) -> Vec<(i64, Option<String>)> {
    sqlx::query_as("SELECT version::bigint, checksum FROM m.bookkeeping ORDER BY 1")
        .fetch_all(pool)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_runs_apply_each_migration_once() {
    let db = TestDb::create("pg_migrate_race").await.unwrap();
    // Separate pools: separate sessions racing for the same schema.
    let mut pools = Vec::new();
    for _ in 0..4 {
        pools.push(pool(&db).await);
    }
    let m = migrator(ALL);
    let runs = futures::future::join_all(pools.iter().map(|p| m.run(p))).await;
    let mut applied: Vec<i64> = Vec::new();
    for r in runs {
        applied.extend(r.unwrap().applied);
    }
    applied.sort_unstable();
    assert_eq!(
        applied,
        vec![1, 2, 3],
        "each migration applied exactly once"
    );

    let again = m.run(&pools[0]).await.unwrap();
    assert!(again.applied.is_empty(), "idempotent: {again:?}");
    let expected: Vec<_> = ALL
        .iter()
        .map(|m| (m.version, Some(checksum(m.sql))))
        .collect();
    assert_eq!(recorded(&pools[0]).await, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_migration_is_refused_and_nothing_after_it_runs() {
    let db = TestDb::create("pg_migrate_changed").await.unwrap();
    let pool = pool(&db).await;
    migrator(&[V1, V2]).run(&pool).await.unwrap();

    const EDITED: &[Migration] = &[
        V1,
        Migration {
            sql: "CREATE INDEX things_label_idx ON m.things (label, id);",
            ..V2
        },
        V3,
    ];
    let err = migrator(EDITED).run(&pool).await.unwrap_err();
    match &err {
        MigrateError::Changed {
            version,
            name,
            applied,
            embedded,
        } => {
            assert_eq!((*version, name.as_str()), (2, "things_label_idx"));
            assert_eq!(*applied, checksum(V2.sql));
            assert_eq!(*embedded, checksum(EDITED[1].sql));
        }
        other => panic!("expected a changed migration, got {other}"),
    }
    assert_eq!(err.class(), ErrorClass::Permanent);
    let msg = err.to_string();
    assert!(
        msg.contains(&checksum(V2.sql)) && msg.contains(&checksum(EDITED[1].sql)),
        "{msg}"
    );
    let others: Option<String> = sqlx::query_scalar("SELECT to_regclass('m.others')::text")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(others, None, "the run stopped before version 3");
    assert_eq!(recorded(&pool).await.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bookkeeping_without_checksums_is_adopted_in_place() {
    let db = TestDb::create("pg_migrate_adopt").await.unwrap();
    let pool = pool(&db).await;
    sqlx::raw_sql(
        "CREATE SCHEMA m;
         CREATE TABLE m.bookkeeping (
             version integer PRIMARY KEY,
             name text NOT NULL,
             applied_at timestamptz NOT NULL DEFAULT now());",
    )
    .execute(&pool)
    .await
    .unwrap();
    for m in [V1, V2] {
        sqlx::raw_sql(m.sql).execute(&pool).await.unwrap();
        sqlx::query("INSERT INTO m.bookkeeping (version, name) VALUES ($1, $2)")
            .bind(i32::try_from(m.version).unwrap())
            .bind(m.name)
            .execute(&pool)
            .await
            .unwrap();
    }
    // A version this binary does not know (a newer release ran here) is left alone.
    sqlx::query("INSERT INTO m.bookkeeping (version, name) VALUES (9, 'future')")
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query("INSERT INTO m.things VALUES (1, 'kept')")
        .execute(&pool)
        .await
        .unwrap();

    let report = migrator(ALL).run(&pool).await.unwrap();
    assert_eq!(report.applied, vec![3], "only the missing migration runs");
    assert_eq!(
        recorded(&pool).await,
        vec![
            (1, Some(checksum(V1.sql))),
            (2, Some(checksum(V2.sql))),
            (3, Some(checksum(V3.sql))),
            (9, None),
        ]
    );
    let again = migrator(ALL).run(&pool).await.unwrap();
    assert!(again.applied.is_empty(), "{again:?}");
    let kept: String = sqlx::query_scalar("SELECT label FROM m.things WHERE id = 1")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(kept, "kept");
}
