use std::sync::Arc;
use std::time::{Duration, Instant};

use insights_core::{DatabaseUrl, InsightRecord, LeadKey, LeadKeyKind};
use insights_pg::GATE_JITTER;
use insights_store::{
    Backoff, DomainStatements, ErrorClass, GatePolicy, Jitter, PoolSettings, RetryPolicy, Store,
    StoreError, StoreOptions, UpsertOutcome, connect,
};

use crate::support::{BigintKeys, env};

#[tokio::test]
async fn unreachable_database_is_one_transient_line() {
    let port = insights_testkit::free_port().unwrap();
    let mut settings = PoolSettings::new(DatabaseUrl::new(format!(
        "postgres://app:hunter2@127.0.0.1:{port}/nope"
    )));
    settings.acquire_timeout = Duration::from_secs(2);
    let err = connect(&settings).await.unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.starts_with(&format!(
            "cannot reach database at postgres://app:***@127.0.0.1:{port}/nope: "
        )),
        "{msg}"
    );
    assert!(!msg.contains('\n'));
    assert!(!msg.contains("hunter2"));
    assert!(!format!("{settings:?}").contains("hunter2"));
    assert_eq!(err.class(), ErrorClass::Connection);
    assert!(err.is_transient() && err.is_connection());

    let bad = PoolSettings::new(DatabaseUrl::new("postgres://127.0.0.1:1/x?sslmode=bogus"));
    assert!(matches!(connect(&bad).await, Err(StoreError::Config(_))));
}

/// A call that times out releases its connection and, like any connection-class failure,
/// closes the connection gate: the retries right after it are refused without touching the pool,
/// and once the gate's backoff is over one call probes again.
#[tokio::test]
async fn a_slow_call_times_out_releases_its_connection_and_closes_the_gate() {
    let e = env("store_timeout").await;
    // A custom candidate statement (same parameters) that is too slow for the timeout.
    let statements = DomainStatements {
        candidates: Arc::from(
            "SELECT g::bigint AS lead_key FROM pg_sleep(2), generate_series(1, 3) g WHERE g > coalesce($1, 0) LIMIT $2",
        ),
        ..DomainStatements::default()
    };
    let backoff = Duration::from_millis(300);
    let store = Store::new(
        e.pool.clone(),
        StoreOptions {
            call_timeout: Duration::from_millis(200),
            retry: RetryPolicy {
                backoff: Backoff::new(
                    Duration::from_millis(1),
                    Duration::from_millis(5),
                    Jitter::Full,
                ),
                max_retries: 2,
            },
            gate: GatePolicy {
                backoff: Backoff::new(backoff, backoff, GATE_JITTER),
                probe_patience: Duration::from_secs(5),
            },
            statements,
            ..StoreOptions::default()
        },
    );
    let err = store.candidate_ids(None, 10).await.unwrap_err();
    assert!(
        matches!(err, StoreError::Unavailable { .. }),
        "the retries were refused by the gate: {err}"
    );
    assert!(err.is_transient() && err.is_connection());
    assert_eq!(
        store.stats().transactions,
        1,
        "only the first try reached the pool"
    );
    assert_eq!(store.gate().stats().refused, 2);
    assert!(!store.gate().is_open());
    assert_eq!(store.stats().checked_out_now, 0);

    // After the backoff one call is the probe; it times out again and the gate stays closed.
    tokio::time::sleep(backoff).await;
    let started = Instant::now();
    let err = store.candidate_ids(None, 10).await.unwrap_err();
    assert!(started.elapsed() >= Duration::from_millis(200), "{err}");
    assert_eq!(store.stats().transactions, 2);
    assert_eq!(store.gate().stats().probes, 1);
    assert!(!store.gate().is_open());
    assert_eq!(store.stats().checked_out_now, 0);
    // The default statements on the same pool still work afterwards (another store, its own
    // gate).
    assert!(e.store.candidate_ids(None, 10).await.unwrap().is_empty());
}

/// A team's own tables (quoted names, camelCase columns, an enum, its own insight columns)
/// keyed by `kind`, through statements written to the profile contract.
async fn own_tables(kind: LeadKeyKind, keys: [&str; 3]) {
    let e = env(&format!("store_own_{}", kind.sql_type())).await;
    let k = kind.sql_type();
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        r#"CREATE TABLE "Lead" ("id" {k} PRIMARY KEY, "fullName" text,
                                "bookedAt" timestamptz, "lastMessageAt" timestamptz);
           CREATE TYPE "Dir" AS ENUM ('IN', 'OUT');
           CREATE TABLE "Message" ("id" bigint PRIMARY KEY, "leadId" {k} REFERENCES "Lead",
                                   "direction" "Dir", "text" text, "createdAt" timestamptz);
           CREATE TABLE "Insight" ("leadId" {k} PRIMARY KEY REFERENCES "Lead" ON DELETE CASCADE,
                                   "stage" text NOT NULL, "score" double precision,
                                   "sourceAt" timestamptz NOT NULL, "model" text);
           INSERT INTO "Lead" VALUES ('{a}', 'Ada', now(), now()), ('{b}', 'Bo', NULL, now()),
                                     ('{c}', 'Cy', now(), now());
           INSERT INTO "Message" VALUES (1, '{a}', 'IN', 'hello', now() - interval '1 hour'),
                                        (2, '{a}', 'OUT', 'hi Ada', now()),
                                        (3, '{c}', 'IN', 'hey', now());"#,
        a = keys[0],
        b = keys[1],
        c = keys[2],
    )))
    .execute(&e.pool)
    .await
    .unwrap();
    let statements = DomainStatements {
        lead_key: kind,
        candidates: Arc::from(format!(
            r#"SELECT l."id" AS lead_key FROM "Lead" l
                WHERE l."bookedAt" IS NOT NULL AND ($1::{k} IS NULL OR l."id" > $1)
                  AND NOT EXISTS (SELECT 1 FROM "Insight" i
                                   WHERE i."leadId" = l."id" AND i."sourceAt" >= l."lastMessageAt")
                ORDER BY l."id" LIMIT $2"#
        )),
        load: Arc::from(format!(
            r#"SELECT l."id" AS lead_key, l."bookedAt" IS NOT NULL AS eligible,
                      jsonb_build_object('name', l."fullName") AS lead,
                      coalesce(w.messages, '[]') AS messages,
                      (SELECT count(*) FROM "Message" c WHERE c."leadId" = l."id") AS total_message_count,
                      greatest(w.newest, l."lastMessageAt") AS source_last_message_at,
                      (SELECT i."sourceAt" FROM "Insight" i WHERE i."leadId" = l."id")
                          AS stored_source_last_message_at
                 FROM "Lead" l
                 LEFT JOIN LATERAL (
                      SELECT jsonb_agg(jsonb_build_object('dir', r."direction", 'text', r."text")
                                       ORDER BY r."createdAt", r."id") AS messages,
                             max(r."createdAt") AS newest
                        FROM (SELECT * FROM "Message" m WHERE m."leadId" = l."id"
                               ORDER BY m."createdAt" DESC, m."id" DESC LIMIT $2) r) w ON true
                WHERE l."id" = ANY($1::{k}[])"#
        )),
        upsert: Arc::from(format!(
            r#"WITH input AS (
                 SELECT * FROM unnest($1::{k}[], $2::jsonb[], $3::text[], $4::text[],
                                      $5::timestamptz[], $6::bigint[], $7::bigint[], $8::bigint[],
                                      $9::text[])
                   AS r(lead_key, insight, model, prompt_version, source_at, n, pt, ct, req)
               ), written AS (
                 INSERT INTO "Insight" AS i ("leadId", "stage", "score", "sourceAt", "model")
                 SELECT r.lead_key, r.insight ->> 'stage', (r.insight ->> 'score')::float8,
                        r.source_at, r.model
                   FROM input r WHERE EXISTS (SELECT 1 FROM "Lead" l WHERE l."id" = r.lead_key)
                  ORDER BY r.lead_key
                 ON CONFLICT ("leadId") DO UPDATE
                    SET "stage" = excluded."stage", "score" = excluded."score",
                        "sourceAt" = excluded."sourceAt", "model" = excluded."model"
                  WHERE excluded."sourceAt" > i."sourceAt"
                 RETURNING i."leadId"
               )
               SELECT r.lead_key, w."leadId" IS NOT NULL AS written,
                      EXISTS (SELECT 1 FROM "Lead" l WHERE l."id" = r.lead_key) AS lead_exists
                 FROM input r LEFT JOIN written w ON w."leadId" = r.lead_key"#
        )),
    };
    let store = Store::new(
        e.pool.clone(),
        StoreOptions {
            statements,
            ..StoreOptions::default()
        },
    );
    let key = |s: &str| kind.parse(s).unwrap();
    // Keyset paging in the key type's order.
    let first = store.candidate_keys(None, 1).await.unwrap();
    assert_eq!(first, vec![key(keys[0])]);
    let rest = store.candidate_keys(first.last(), 10).await.unwrap();
    assert_eq!(rest, vec![key(keys[2])]);

    let loaded = store.load_lead(&key(keys[0]), 10).await.unwrap().unwrap();
    assert_eq!(loaded.key, key(keys[0]));
    assert!(loaded.eligible);
    assert_eq!(loaded.input.lead, serde_json::json!({"name": "Ada"}));
    assert_eq!(
        loaded.input.messages,
        vec![
            serde_json::json!({"dir": "IN", "text": "hello"}),
            serde_json::json!({"dir": "OUT", "text": "hi Ada"})
        ]
    );
    assert_eq!(loaded.input.total_message_count, 2);
    let unbooked = store.load_lead(&key(keys[1]), 10).await.unwrap().unwrap();
    assert!(!unbooked.eligible);

    let source = loaded.source_last_message_at.unwrap();
    let record = |lead: &str, stage: &str, at| InsightRecord {
        lead_key: key(lead),
        document: serde_json::json!({"stage": stage, "score": 0.5}),
        model: "m".into(),
        prompt_version: "v".into(),
        source_last_message_at: at,
        source_message_count: 2,
        prompt_tokens: 1,
        completion_tokens: 1,
        llm_request_id: None,
    };
    let outcomes = store
        .upsert_batch(&[
            record(keys[0], "evaluation", source),
            record(keys[2], "discovery", source),
        ])
        .await
        .unwrap();
    assert_eq!(
        outcomes,
        vec![UpsertOutcome::Written, UpsertOutcome::Written]
    );
    let older = record(keys[0], "lost", source - chrono::Duration::seconds(1));
    assert_eq!(
        store.upsert_insight(&older).await.unwrap(),
        UpsertOutcome::StaleIgnored
    );
    let stage: String = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        r#"SELECT "stage" FROM "Insight" WHERE "leadId" = '{}'"#,
        keys[0]
    )))
    .fetch_one(&e.pool)
    .await
    .unwrap();
    assert_eq!(stage, "evaluation", "only newer source data overwrites");
    assert!(store.candidate_keys(None, 10).await.unwrap().is_empty());
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        r#"DELETE FROM "Message" WHERE "leadId" = '{c}'; DELETE FROM "Lead" WHERE "id" = '{c}'"#,
        c = keys[2]
    )))
    .execute(&e.pool)
    .await
    .unwrap();
    assert_eq!(
        store
            .upsert_insight(&record(keys[2], "x", source + chrono::Duration::seconds(1)))
            .await
            .unwrap(),
        UpsertOutcome::LeadGone
    );
    // A key of another type is refused before any SQL runs.
    let wrong = match kind {
        LeadKeyKind::Bigint => LeadKey::Text("x".into()),
        _ => LeadKey::Int(1),
    };
    assert!(store.load_lead(&wrong, 1).await.is_err());
}

#[tokio::test]
async fn own_tables_with_text_keys() {
    own_tables(LeadKeyKind::Text, ["clx0a1", "clx0b2", "clx0c3"]).await;
}

#[tokio::test]
async fn own_tables_with_uuid_keys() {
    own_tables(
        LeadKeyKind::Uuid,
        [
            "0b6f2c3e-1a2b-4c3d-8e9f-000000000001",
            "0b6f2c3e-1a2b-4c3d-8e9f-000000000002",
            "0B6F2C3E-1A2B-4C3D-8E9F-000000000003",
        ],
    )
    .await;
}

#[tokio::test]
async fn own_tables_with_bigint_keys() {
    own_tables(LeadKeyKind::Bigint, ["7", "8", "9"]).await;
}
