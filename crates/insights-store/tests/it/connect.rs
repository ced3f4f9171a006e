use std::sync::Arc;
use std::time::{Duration, Instant};

use insights_core::DatabaseUrl;
use insights_pg::GATE_JITTER;
use insights_store::{
    Backoff, DomainStatements, ErrorClass, GatePolicy, Jitter, PoolSettings, RetryPolicy, Store,
    StoreError, StoreOptions, connect,
};

use crate::support::env;

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
            "SELECT g::bigint AS id FROM pg_sleep(2), generate_series(1, 3) g WHERE g > $1 LIMIT $2",
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

#[tokio::test]
async fn own_tables_via_custom_statements() {
    let e = env("store_prisma").await;
    sqlx::raw_sql(
        r#"CREATE TABLE "Lead" ("id" bigint PRIMARY KEY, "fullName" text, "email" text,
                                "bookedAt" timestamptz, "lastMessageAt" timestamptz);
           CREATE TYPE "Dir" AS ENUM ('inbound', 'outbound');
           CREATE TABLE "Message" ("id" bigint PRIMARY KEY, "leadId" bigint REFERENCES "Lead",
                                   "direction" "Dir", "text" text, "createdAt" timestamptz);
           INSERT INTO "Lead" VALUES (1, 'Ada', 'a@x', now(), now()), (2, 'Bo', 'b@x', NULL, now());
           INSERT INTO "Message" VALUES (1, 1, 'inbound', 'hello', now() - interval '1 hour'),
                                        (2, 1, 'outbound', 'hi Ada', now());
           INSERT INTO leads (id, name, email) VALUES (1, 'Ada', 'a@x');"#,
    )
    .execute(&e.pool)
    .await
    .unwrap();
    let statements = DomainStatements {
        candidates: Arc::from(
            r#"SELECT l."id" AS id FROM "Lead" l
                WHERE l."bookedAt" IS NOT NULL AND l."lastMessageAt" IS NOT NULL AND l."id" > $1
                  AND NOT EXISTS (SELECT 1 FROM lead_conversation_insights i
                                   WHERE i.lead_id = l."id"
                                     AND i.source_last_message_at >= l."lastMessageAt")
                ORDER BY l."id" LIMIT $2"#,
        ),
        load: Arc::from(
            r#"SELECT l."id" AS id, l."fullName" AS name, l."email" AS email,
                      l."bookedAt" AS booked_at, l."lastMessageAt" AS last_message_at,
                      (SELECT count(*) FROM "Message" c WHERE c."leadId" = l."id") AS total_message_count,
                      (SELECT i.source_last_message_at FROM lead_conversation_insights i
                        WHERE i.lead_id = l."id") AS stored_source_last_message_at,
                      coalesce(w.ids, '{}') AS message_ids,
                      coalesce(w.dirs, '{}') AS message_directions,
                      coalesce(w.bodies, '{}') AS message_bodies,
                      coalesce(w.sent, '{}') AS message_sent_at
                 FROM "Lead" l
                 LEFT JOIN LATERAL (
                      SELECT array_agg(r."id" ORDER BY r."createdAt", r."id") AS ids,
                             array_agg(r."direction"::text ORDER BY r."createdAt", r."id") AS dirs,
                             array_agg(r."text" ORDER BY r."createdAt", r."id") AS bodies,
                             array_agg(r."createdAt" ORDER BY r."createdAt", r."id") AS sent
                        FROM (SELECT * FROM "Message" m WHERE m."leadId" = l."id"
                               ORDER BY m."createdAt" DESC, m."id" DESC LIMIT $2) r) w ON true
                WHERE l."id" = ANY($1::bigint[])"#,
        ),
        ..DomainStatements::default()
    };
    let store = Store::new(
        e.pool.clone(),
        StoreOptions {
            statements,
            ..StoreOptions::default()
        },
    );
    assert_eq!(store.candidate_ids(None, 10).await.unwrap(), vec![1]);
    let loaded = store.load_conversation(1, 10).await.unwrap().unwrap();
    assert_eq!(loaded.conversation.lead.name, "Ada");
    let bodies: Vec<_> = loaded
        .conversation
        .messages
        .iter()
        .map(|m| m.body.as_str())
        .collect();
    assert_eq!(bodies, vec!["hello", "hi Ada"]);
    assert_eq!(loaded.conversation.total_message_count, 2);
}
