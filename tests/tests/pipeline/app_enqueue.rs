//! The app enqueues by itself: the example's trigger on "Message" and direct calls of
//! `insights_queue.add_job`, on the Prisma example schema with the queue in the same database,
//! directly and through a transaction-mode pgbouncer. One pending job per booked lead, whatever
//! the burst; none for an unbooked lead.

use std::str::FromStr;

use insights_e2e::E2eDb;
use insights_e2e::pooler::start_pgbouncer;
use insights_testkit::Pgbouncer;
use serde_json::json;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{PgPool, Row};

use crate::support::{apply_sql_file, example_file};

/// The example schema, the queue and the trigger on a fresh database, with a booked lead
/// `clbooked0001` and an unbooked one `clunbooked01`.
async fn example_with_trigger(label: &str) -> E2eDb {
    let db = E2eDb::create_empty(label).await.unwrap();
    apply_sql_file(&db.pool, &example_file("schema.sql"))
        .await
        .unwrap();
    insights_queue::migrate(&db.pool).await.unwrap();
    apply_sql_file(&db.pool, &example_file("enqueue_trigger.sql"))
        .await
        .unwrap();
    sqlx::raw_sql(
        r#"INSERT INTO "Lead" ("id", "name", "email", "bookedAt", "updatedAt") VALUES
             ('clbooked0001', 'Ada', 'ada@example.com', now(), now()),
             ('clunbooked01', 'Bob', 'bob@example.com', NULL, now())"#,
    )
    .execute(&db.pool)
    .await
    .unwrap();
    db
}

/// Adds one message to `lead` in its own transaction, as the app would.
async fn add_message(pool: &PgPool, lead: &str, n: usize) -> Result<(), sqlx::Error> {
    let mut tx = pool.begin().await?;
    sqlx::query(
        r#"INSERT INTO "Message" ("id", "leadId", "direction", "body", "sentAt")
           VALUES ($1, $2, 'INBOUND', $3, now())"#,
    )
    .bind(format!("clmsg{lead}{n:04}"))
    .bind(lead)
    .bind(format!("message {n}"))
    .persistent(false)
    .execute(&mut *tx)
    .await?;
    tx.commit().await
}

/// Messages `range` for `lead`, each in its own transaction, all at once.
async fn burst(pool: &PgPool, lead: &str, range: std::ops::RangeInclusive<usize>) {
    let mut tasks = tokio::task::JoinSet::new();
    for n in range {
        let (pool, lead) = (pool.clone(), lead.to_owned());
        tasks.spawn(async move { add_message(&pool, &lead, n).await });
    }
    while let Some(done) = tasks.join_next().await {
        done.unwrap().unwrap();
    }
}

/// `insights_queue.add_job` as the app calls it for `lead`: the new job's id, or None.
async fn add_job(pool: &PgPool, lead: &str) -> Result<Option<i64>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let id: Option<i64> = sqlx::query_scalar(
        "SELECT insights_queue.add_job('lead-insights', jsonb_build_object('lead_id', $1::text), $2)",
    )
    .bind(lead)
    .bind(format!("lead:{lead}"))
    .persistent(false)
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(id)
}

/// (payload, dedupe key, state) of every job, by id.
async fn jobs(db: &E2eDb) -> Vec<(serde_json::Value, Option<String>, String)> {
    sqlx::query("SELECT payload, dedupe_key, state FROM insights_queue.jobs ORDER BY id")
        .fetch_all(&db.pool)
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect()
}

/// A pool of `max` connections to `url`, through a pooler when `pooled`.
fn app_pool(url: &str, max: u32, pooled: bool) -> PgPool {
    let mut opts = PgConnectOptions::from_str(url).unwrap();
    if pooled {
        // pgbouncer refuses this start-up parameter; no statement outlives its transaction.
        opts = opts.extra_float_digits(None).statement_cache_capacity(0);
    }
    PgPoolOptions::new()
        .max_connections(max)
        .connect_lazy_with(opts)
}

fn booked_job() -> (serde_json::Value, Option<String>, String) {
    (
        json!({"lead_id": "clbooked0001"}),
        Some("lead:clbooked0001".to_owned()),
        "available".to_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_enqueues_its_booked_lead_once_and_an_unbooked_lead_never() {
    let db = example_with_trigger("e2e_trigger_direct").await;
    let app = app_pool(&db.url, 5, false);

    add_message(&app, "clunbooked01", 0).await.unwrap();
    assert_eq!(jobs(&db).await, vec![], "an unbooked lead gets no job");

    add_message(&app, "clbooked0001", 0).await.unwrap();
    assert_eq!(jobs(&db).await, vec![booked_job()]);

    // A burst from concurrent app connections, then one statement of many rows.
    burst(&app, "clbooked0001", 1..=50).await;
    sqlx::query(
        r#"INSERT INTO "Message" ("id", "leadId", "direction", "body", "sentAt")
           SELECT 'clbulk' || i, 'clbooked0001', 'OUTBOUND', 'reply ' || i, now()
             FROM generate_series(1, 20) i"#,
    )
    .execute(&app)
    .await
    .unwrap();
    assert_eq!(
        jobs(&db).await,
        vec![booked_job()],
        "one pending job per lead"
    );

    // The app calling add_job itself while the job is pending.
    assert_eq!(add_job(&app, "clbooked0001").await.unwrap(), None);
    assert_eq!(add_job(&app, "clbooked0001").await.unwrap(), None);
    assert_eq!(jobs(&db).await, vec![booked_job()]);

    // Once that job finished, the next message enqueues again.
    sqlx::query("UPDATE insights_queue.jobs SET state = 'completed'")
        .execute(&db.pool)
        .await
        .unwrap();
    add_message(&app, "clbooked0001", 51).await.unwrap();
    let after = jobs(&db).await;
    assert_eq!(after.len(), 2, "{after:?}");
    assert_eq!(after[1], booked_job());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn add_job_twice_for_a_pending_lead_leaves_one_job() {
    let db = E2eDb::create_empty("e2e_add_job_twice").await.unwrap();
    insights_queue::migrate(&db.pool).await.unwrap();
    let first = add_job(&db.pool, "clx1").await.unwrap();
    let second = add_job(&db.pool, "clx1").await.unwrap();
    assert!(first.is_some());
    assert_eq!(second, None, "the second call finds the pending job");
    let all = jobs(&db).await;
    assert_eq!(
        all,
        vec![(
            json!({"lead_id": "clx1"}),
            Some("lead:clx1".to_owned()),
            "available".to_owned()
        )]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_trigger_and_add_job_behave_the_same_through_a_transaction_pooler() {
    let db = example_with_trigger("e2e_trigger_pooler").await;
    let pgbouncer: Pgbouncer = start_pgbouncer(2).await.unwrap();
    let app = app_pool(&pgbouncer.url(&db.name), 5, true);

    add_message(&app, "clunbooked01", 0).await.unwrap();
    burst(&app, "clbooked0001", 1..=50).await;
    assert_eq!(jobs(&db).await, vec![booked_job()]);
    assert_eq!(add_job(&app, "clbooked0001").await.unwrap(), None);
    assert_eq!(add_job(&app, "clbooked0001").await.unwrap(), None);
    assert_eq!(jobs(&db).await, vec![booked_job()]);
    let log = pgbouncer.log();
    assert!(
        insights_e2e::prepared_statement_errors(&log).is_empty(),
        "pooler errors: {log}"
    );
    app.close().await;
}
