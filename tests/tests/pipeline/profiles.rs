//! A team's own schema, prompt and insight from a profile alone, through a real pgbouncer in
//! transaction mode: the Prisma-on-Supabase example (text cuid keys, with its trigger), and two
//! more schemas keyed by uuid and by bigint. Every candidate gets exactly one insight holding
//! the profile's fields; a second enqueue adds nothing; a new message re-enqueues exactly that
//! lead, and the worker writes its refreshed insight.

use std::path::PathBuf;

use insights_e2e::mock::start_mock;
use insights_e2e::pooler::{pooler_url, start_pgbouncer};
use insights_e2e::{E2eDb, Insights, WorkerEnv};
use insights_llm::mock::MockLlmConfig;
use sqlx::AssertSqlSafe;

use crate::support::{enqueue, field, work_until_idle};

/// One schema under test. Every SQL text here is the test's view of the team's tables, not
/// the profile's: it checks what the profile made the worker do.
struct TeamSchema {
    /// Directory holding schema.sql, seed.sql and profile.toml (from the workspace root).
    dir: &'static str,
    label: &'static str,
    /// Keys (as text, sorted) of the leads that should get an insight now.
    expected: &'static str,
    /// Keys (as text, sorted) of the stored insights whose profile-specific fields are filled
    /// as the profile's schema says.
    written: &'static str,
    /// The stored watermark of lead `$1` (key as text).
    watermark: &'static str,
    /// Adds a message to lead `$1` (key as text), as the app would.
    new_message: &'static str,
    /// Installed before the run: the app enqueues by itself.
    trigger: Option<&'static str>,
}

const SCHEMAS: [TeamSchema; 3] = [
    TeamSchema {
        dir: "examples/prisma-supabase",
        label: "e2e_profile_prisma",
        expected: r#"SELECT l."id" FROM "Lead" l
                      WHERE l."bookedAt" IS NOT NULL
                        AND EXISTS (SELECT 1 FROM "Message" m WHERE m."leadId" = l."id")
                      ORDER BY 1"#,
        written: r#"SELECT i."leadId" FROM "LeadConversationInsight" i
                     WHERE i."stage" IN ('discovery', 'evaluation', 'negotiation', 'committed',
                                         'stalled', 'lost')
                       AND jsonb_typeof(i."buyingSignals") = 'array'
                       AND jsonb_typeof(i."risks") = 'array'
                       AND i."nextAction" LIKE 'Lead ' || i."leadId" || ':%'
                       AND i."confidence" BETWEEN 0 AND 1
                       AND i."promptVersion" = 'deal-review-v1'
                     ORDER BY 1"#,
        watermark: r#"SELECT "sourceLastMessageAt"::text FROM "LeadConversationInsight"
                       WHERE "leadId" = $1"#,
        new_message: r#"INSERT INTO "Message" ("id", "leadId", "direction", "body", "sentAt")
                        VALUES ('clm-new-' || $1, $1, 'INBOUND', 'One more question about the price',
                                now() AT TIME ZONE 'UTC');
                        UPDATE "Lead" SET "lastMessageAt" = now() AT TIME ZONE 'UTC'
                         WHERE "id" = $1"#,
        trigger: Some("examples/prisma-supabase/enqueue_trigger.sql"),
    },
    TeamSchema {
        dir: "tests/fixtures/uuid-keys",
        label: "e2e_profile_uuid",
        expected: "SELECT c.id::text FROM contact c
                    WHERE c.call_at IS NOT NULL
                      AND EXISTS (SELECT 1 FROM contact_message m WHERE m.contact_id = c.id)
                    ORDER BY 1",
        written: "SELECT s.contact_id::text FROM contact_summary s
                   WHERE s.mood IN ('happy', 'neutral', 'frustrated')
                     AND s.headline LIKE 'Lead ' || s.contact_id::text || ':%'
                     AND cardinality(s.topics) <= 5
                     AND s.follow_up IS NOT NULL
                   ORDER BY 1",
        watermark: "SELECT source_last_message_at::text FROM contact_summary
                     WHERE contact_id = $1::uuid",
        new_message: "INSERT INTO contact_message (id, contact_id, sender, body, created_at)
                      VALUES (md5('new-' || $1)::uuid, $1::uuid, 'contact', 'Still broken', now());
                      UPDATE contact SET last_message_at = now() WHERE id = $1::uuid",
        trigger: None,
    },
    TeamSchema {
        dir: "tests/fixtures/bigint-keys",
        label: "e2e_profile_bigint",
        expected: "SELECT c.customer_id::text FROM customers c
                    WHERE c.demo_scheduled_for IS NOT NULL
                      AND EXISTS (SELECT 1 FROM chat_lines l WHERE l.customer_id = c.customer_id)
                    ORDER BY c.customer_id",
        written: "SELECT b.customer_id::text FROM customer_briefs b
                   WHERE b.brief ->> 'intent' IN ('ready_to_buy', 'evaluating', 'price_shopping',
                                                  'unclear')
                     AND (b.brief ->> 'urgency')::int BETWEEN 1 AND 5
                     AND jsonb_typeof(b.brief -> 'demo_focus') = 'array'
                   ORDER BY b.customer_id",
        watermark: "SELECT covers_until::text FROM customer_briefs WHERE customer_id = $1::bigint",
        new_message: "INSERT INTO chat_lines (customer_id, from_customer, content, posted_at)
                      VALUES ($1::bigint, true, 'Can we move the demo?', now());
                      UPDATE customers SET last_activity_at = now() WHERE customer_id = $1::bigint",
        trigger: None,
    },
];

fn workspace_path(relative: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(relative)
}

async fn run_sql_file(db: &E2eDb, relative: &str) {
    let sql = std::fs::read_to_string(workspace_path(relative)).unwrap();
    sqlx::raw_sql(AssertSqlSafe(sql))
        .execute(&db.pool)
        .await
        .unwrap_or_else(|e| panic!("{relative}: {e}"));
}

async fn keys(db: &E2eDb, sql: &str) -> Vec<String> {
    sqlx::query_scalar(AssertSqlSafe(sql.to_owned()))
        .fetch_all(&db.pool)
        .await
        .unwrap()
}

async fn watermark(db: &E2eDb, schema: &TeamSchema, key: &str) -> Option<String> {
    sqlx::query_scalar(AssertSqlSafe(schema.watermark.to_owned()))
        .bind(key)
        .fetch_optional(&db.pool)
        .await
        .unwrap()
}

async fn team_schema_end_to_end(schema: &TeamSchema) {
    let db = E2eDb::create_empty(schema.label).await.unwrap();
    run_sql_file(&db, &format!("{}/schema.sql", schema.dir)).await;
    run_sql_file(&db, &format!("{}/seed.sql", schema.dir)).await;
    let pgbouncer = start_pgbouncer(4).await.unwrap();
    let mock = start_mock(MockLlmConfig::default()).await.unwrap();
    let profile = workspace_path(&format!("{}/profile.toml", schema.dir));
    let env = WorkerEnv::new(&pooler_url(&pgbouncer, &db.name), &mock.base_url())
        .set("DIRECT_DATABASE_URL", &db.url)
        .set("INSIGHTS_PROFILE", profile.display())
        .concurrency(8);
    Insights::with_env(&env)
        .arg("migrate")
        .run()
        .await
        .unwrap()
        .ok()
        .unwrap();
    let own_tables: Option<String> = sqlx::query_scalar("SELECT to_regclass('public.leads')::text")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(
        own_tables, None,
        "a profile's migrate creates only the queue"
    );
    if let Some(trigger) = schema.trigger {
        run_sql_file(&db, trigger).await;
    }

    let expected = keys(&db, schema.expected).await;
    assert!(expected.len() >= 10, "the seed gave too few candidates");
    let first = enqueue(&env, &[]).await;
    assert_eq!(first.candidates, expected.len() as u64, "{first:?}");
    assert_eq!(first.enqueued, expected.len() as u64, "{first:?}");
    let (summary, _) = work_until_idle(&env).await;
    assert_eq!(
        field(&summary, "written"),
        expected.len() as u64,
        "{summary}"
    );
    assert_eq!(
        keys(&db, schema.written).await,
        expected,
        "exactly one insight per candidate, holding the profile's fields"
    );

    let again = enqueue(&env, &[]).await;
    assert_eq!((again.candidates, again.enqueued), (0, 0), "{again:?}");

    // A new message on one lead: exactly that lead comes back, and its insight is refreshed.
    let lead = &expected[expected.len() / 2];
    let before = watermark(&db, schema, lead).await.unwrap();
    sqlx::raw_sql(AssertSqlSafe(
        schema.new_message.replace("$1", &format!("'{lead}'")),
    ))
    .execute(&db.pool)
    .await
    .unwrap();
    let pending = db.jobs(Some("available")).await.unwrap();
    let refreshed = enqueue(&env, &[]).await;
    assert_eq!(refreshed.candidates, 1, "{refreshed:?}");
    if schema.trigger.is_some() {
        // The app's trigger already enqueued it: the producer finds it queued.
        assert_eq!(pending.len(), 1, "{pending:?}");
        assert_eq!(refreshed.duplicates, 1, "{refreshed:?}");
    } else {
        assert!(pending.is_empty(), "{pending:?}");
        assert_eq!(refreshed.enqueued, 1, "{refreshed:?}");
    }
    let queued = db.jobs(Some("available")).await.unwrap();
    assert_eq!(queued.len(), 1, "{queued:?}");
    assert_eq!(
        queued[0].dedupe_key.as_deref(),
        Some(format!("lead:{lead}").as_str())
    );
    let (summary, _) = work_until_idle(&env).await;
    assert_eq!(field(&summary, "written"), 1, "{summary}");
    let after = watermark(&db, schema, lead).await.unwrap();
    assert_ne!(after, before, "the insight now covers the new message");
    assert_eq!(keys(&db, schema.written).await, expected);
    mock.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_prisma_example_runs_from_its_profile_alone() {
    team_schema_end_to_end(&SCHEMAS[0]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_uuid_keyed_schema_runs_from_its_profile_alone() {
    team_schema_end_to_end(&SCHEMAS[1]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bigint_keyed_schema_runs_from_its_profile_alone() {
    team_schema_end_to_end(&SCHEMAS[2]).await;
}
