//! `CheckSession` on the example's Prisma schema: statement types as the server infers them,
//! the server's message for a statement it refuses (the session goes on), plans that tell
//! sequential scans and writes, a key read from a statement's source column, a database left
//! as it was; and the sample pool, which cannot write on a direct connection.

use std::path::Path;

use insights_core::DatabaseUrl;
use insights_store::PoolSettings;
use insights_store::check::{CheckSession, PlanArg};
use insights_testkit::TestDb;
use sqlx::PgPool;

fn example(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples/prisma-supabase")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

async fn example_db(label: &str) -> (TestDb, PgPool, PoolSettings) {
    let db = TestDb::create(label).await.unwrap();
    let settings = PoolSettings::new(DatabaseUrl::new(db.url.clone()));
    let pool = insights_store::connect(&settings).await.unwrap();
    sqlx::raw_sql(sqlx::AssertSqlSafe(example("schema.sql")))
        .execute(&pool)
        .await
        .unwrap();
    sqlx::raw_sql(
        r#"INSERT INTO "Lead" ("id", "name", "email", "updatedAt") VALUES
             ('clb', 'B', 'b@example.com', now()), ('cla', 'A', 'a@example.com', now())"#,
    )
    .execute(&pool)
    .await
    .unwrap();
    (db, pool, settings)
}

/// The example's candidate query, from its profile.
fn candidates() -> String {
    let profile = example("profile.toml");
    let start = profile.find("candidates = '''").unwrap() + "candidates = '''".len();
    let end = start + profile[start..].find("'''").unwrap();
    profile[start..end].to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn describe_plan_and_read_without_changing_anything() {
    let (_db, pool, settings) = example_db("store_check").await;
    let mut session = CheckSession::open(&settings).await.unwrap();

    let load = session
        .describe(&example("load.sql"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(load.params, ["text[]", "bigint"]);
    let columns: Vec<(&str, &str)> = load
        .columns
        .iter()
        .map(|c| (c.name.as_str(), c.type_name.as_str()))
        .collect();
    assert_eq!(
        columns,
        [
            ("lead_key", "text"),
            ("eligible", "boolean"),
            ("lead", "jsonb"),
            ("messages", "jsonb"),
            ("total_message_count", "bigint"),
            ("source_last_message_at", "timestamp with time zone"),
            ("stored_source_last_message_at", "timestamp with time zone"),
        ]
    );
    let upsert = session
        .describe(&example("upsert.sql"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(upsert.params.len(), 9);
    assert_eq!(upsert.params[4], "timestamp with time zone[]");

    // Refused with the server's message; the session goes on.
    let refused = session
        .describe("SELEC 1")
        .await
        .unwrap()
        .expect_err("does not parse");
    assert_eq!(refused.message, r#"syntax error at or near "SELEC""#);
    assert_eq!(refused.sqlstate.as_deref(), Some("42601"));
    assert!(!refused.transient);

    let types = ["text".to_owned(), "bigint".to_owned()];
    let first_page = [PlanArg::Null, PlanArg::Int(5000)];
    let plan = session
        .plan(&candidates(), &types, &first_page, true)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(plan.seq_scans, Vec::<String>::new(), "{}", plan.text);
    assert!(!plan.modifies);
    assert!(plan.text.contains("Index"), "{}", plan.text);
    // Each plan deallocates its statement: the next one prepares the same name again.
    // Without the index the planner must scan; with sequential scans allowed, small tables
    // are scanned anyway.
    let plain = session
        .plan(
            "SELECT \"id\" FROM \"Lead\" WHERE \"name\" = 'A'",
            &[],
            &[],
            true,
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(plain.seq_scans, ["Lead"]);
    let writes = session
        .plan(
            "WITH d AS (DELETE FROM \"Lead\" RETURNING 1) SELECT count(*) FROM d",
            &[],
            &[],
            false,
        )
        .await
        .unwrap()
        .unwrap();
    assert!(writes.modifies, "{}", writes.text);

    let origin = load.columns[0].origin.expect("lead_key is \"Lead\".\"id\"");
    let key = session.any_value(origin).await.unwrap().unwrap();
    assert!(matches!(key.as_deref(), Some("cla" | "clb")), "{key:?}");
    session.close().await.unwrap();

    let leads: i64 = sqlx::query_scalar(r#"SELECT count(*) FROM "Lead""#)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(leads, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sample_pool_refuses_writes_on_a_direct_connection() {
    let (_db, pool, settings) = example_db("store_check_ro").await;
    let read_only = insights_store::check::read_only_pool(&settings).unwrap();
    let err = sqlx::query(r#"DELETE FROM "Lead""#)
        .execute(&read_only)
        .await
        .unwrap_err();
    assert_eq!(
        insights_pg::sqlstate(&err).as_deref(),
        Some("25006"),
        "{err}"
    );
    let names: Vec<String> = sqlx::query_scalar(r#"SELECT "name" FROM "Lead" ORDER BY 1"#)
        .fetch_all(&read_only)
        .await
        .unwrap();
    assert_eq!(names, ["A", "B"], "reading works");
    read_only.close().await;
    let leads: i64 = sqlx::query_scalar(r#"SELECT count(*) FROM "Lead""#)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(leads, 2);
}
