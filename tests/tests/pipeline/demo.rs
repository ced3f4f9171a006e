//! `insights demo`: one command creates the database when missing, migrates, seeds, works with
//! the in-process mock LLM until drained, and prints a summary.

use insights_e2e::{E2eDb, Insights, TestDb};
use serde_json::Value;
use sqlx::Connection;

use crate::support::field;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_creates_its_database_and_drains_every_lead() {
    // A name the harness owns (TestDb drops it at the end), removed so the demo must create it.
    let db = TestDb::create("e2e_demo").await.unwrap();
    let mut admin = sqlx::PgConnection::connect(&insights_testkit::admin_url())
        .await
        .unwrap();
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        r#"DROP DATABASE "{}" WITH (FORCE)"#,
        db.name
    )))
    .execute(&mut admin)
    .await
    .unwrap();
    admin.close().await.unwrap();

    let out = Insights::new()
        .env("DATABASE_URL", &db.url)
        .args(["demo", "--leads", "150", "--latency-ms", "20", "--json"])
        .run_within(insights_e2e::defaults::DRAIN_TIMEOUT)
        .await
        .unwrap();
    assert_eq!(out.code(), Some(0), "{}", out.describe());
    let summary: Value = out.json().unwrap();
    println!("demo: {summary}");
    assert_eq!(field(&summary, "leads_seeded"), 150, "{summary}");
    let booked = field(&summary, "booked");
    assert_eq!(field(&summary, "insights_written"), booked, "{summary}");
    assert_eq!(field(&summary, "failed"), 0, "{summary}");
    assert_eq!(field(&summary, "llm_calls"), booked, "{summary}");

    let e2e = E2eDb::attach(&db.url, &db.name).await.unwrap();
    let check = e2e.assert_pipeline_done().await.unwrap();
    assert_eq!(check.fresh, booked);
    e2e.pool.close().await;
}
