use std::collections::BTreeSet;
use std::sync::Arc;

use insights_core::{DatabaseUrl, InsightRecord, LeadKey};
use insights_store::{
    ConversationLoader, InsightWriter, LoaderConfig, PoolSettings, PoolerMode, Store, StoreOptions,
    UpsertOutcome, WriterConfig, connect, migrate, seed,
};
use insights_testkit::{Pgbouncer, PgbouncerOptions, TestDb};
use tokio::sync::Mutex;

use crate::support::BigintKeys;

/// The whole store path through a real pgbouncer in transaction mode with 2 server
/// connections: migrations, candidates, loads and batched upserts from 16 concurrent tasks.
#[tokio::test]
async fn everything_works_through_a_transaction_pooler() {
    let db = TestDb::create("store_pooler").await.unwrap();
    let bouncer = Pgbouncer::start(PgbouncerOptions::default()).await.unwrap();
    let url = format!("{}?pgbouncer=true", bouncer.url(&db.name));
    let mut settings = PoolSettings::new(DatabaseUrl::new(url));
    settings.max_connections = 8;
    assert_eq!(settings.mode(), PoolerMode::Transaction);
    let pool = connect(&settings).await.unwrap();
    // Migrations and seeding through the pooler too.
    assert_eq!(migrate(&pool).await.unwrap().applied, vec![1, 2]);
    assert!(migrate(&pool).await.unwrap().applied.is_empty());
    seed(&pool, 300, 9).await.unwrap();

    let store = Store::new(pool.clone(), StoreOptions::for_pool(&settings));
    assert_eq!(store.options().pooler, PoolerMode::Transaction);
    let writer = InsightWriter::spawn(store.clone(), WriterConfig::default());
    let loader = ConversationLoader::spawn(store.clone(), LoaderConfig::new(50));
    let mut ids = Vec::new();
    let mut after = None;
    loop {
        let page = store.candidate_ids(after, 50).await.unwrap();
        if page.is_empty() {
            break;
        }
        after = page.last().copied();
        ids.extend(page);
    }
    assert!(ids.len() > 200, "most of 300 seeded leads are booked");
    let queue = Arc::new(Mutex::new(ids.clone()));
    let mut tasks = Vec::new();
    for task in 0..16 {
        let (queue, store, writer, loader) =
            (queue.clone(), store.clone(), writer.clone(), loader.clone());
        tasks.push(tokio::spawn(async move {
            let mut errors = Vec::new();
            loop {
                let Some(id) = queue.lock().await.pop() else {
                    return errors;
                };
                // Half load through the batched loader, half one by one.
                let loaded = if task % 4 < 2 {
                    loader.load(LeadKey::Int(id)).await
                } else {
                    store.load_conversation(id, 50).await
                };
                let loaded = match loaded {
                    Ok(Some(l)) => l,
                    Ok(None) => {
                        errors.push(format!("lead {id} vanished"));
                        continue;
                    }
                    Err(e) => {
                        errors.push(e.to_string());
                        continue;
                    }
                };
                let c = &loaded.input;
                let record = InsightRecord {
                    lead_key: LeadKey::Int(id),
                    document: serde_json::json!({
                        "summary": format!("{} messages", c.messages.len()),
                        "sentiment": "mixed",
                        "objections": [],
                        "next_steps": [],
                    }),
                    model: "m".into(),
                    prompt_version: "p".into(),
                    source_last_message_at: loaded.source_last_message_at.unwrap(),
                    source_message_count: c.total_message_count,
                    prompt_tokens: 1,
                    completion_tokens: 1,
                    llm_request_id: None,
                };
                // Half through the batched writer, half one by one.
                let outcome = if task % 2 == 0 {
                    writer.write(record).await
                } else {
                    store.upsert_insight(&record).await
                };
                match outcome {
                    Ok(UpsertOutcome::Written) => {}
                    other => errors.push(format!("lead {id}: {other:?}")),
                }
            }
        }));
    }
    let mut errors = Vec::new();
    for t in tasks {
        errors.extend(t.await.unwrap());
    }
    assert!(errors.is_empty(), "errors through the pooler: {errors:?}");
    let written: Vec<i64> =
        sqlx::query_scalar("SELECT lead_id FROM lead_conversation_insights ORDER BY lead_id")
            .persistent(false)
            .fetch_all(&mut *pool.begin().await.unwrap())
            .await
            .unwrap();
    assert_eq!(
        written.into_iter().collect::<BTreeSet<_>>(),
        ids.into_iter().collect::<BTreeSet<_>>()
    );
    assert!(store.candidate_ids(None, 100).await.unwrap().is_empty());
    assert_eq!(store.stats().checked_out_now, 0);
    let log = bouncer.log();
    assert!(
        !log.contains("prepared statement"),
        "pgbouncer reported statement trouble:\n{log}"
    );
}

/// A pooler accepts logins while Postgres behind it is down; `connect` must still say the
/// database is unreachable (in one line, as a transient error).
#[tokio::test]
async fn connect_through_a_pooler_with_postgres_down_fails_clearly() {
    let dead = insights_testkit::free_port().unwrap();
    let bouncer = Pgbouncer::start(PgbouncerOptions {
        upstream_port: dead,
        ..PgbouncerOptions::default()
    })
    .await
    .unwrap();
    let mut settings = PoolSettings::new(DatabaseUrl::new(format!(
        "{}?pgbouncer=true",
        bouncer.url("postgres")
    )));
    // pgbouncer keeps the query waiting for a server login, so this is the bound that answers.
    settings.acquire_timeout = std::time::Duration::from_secs(3);
    let err = connect(&settings).await.unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.starts_with(&format!(
            "cannot reach database at postgres://postgres@127.0.0.1:{}/postgres?pgbouncer=true: ",
            bouncer.port
        )),
        "{msg}"
    );
    assert!(!msg.contains('\n'));
    assert!(err.is_transient(), "{msg}");
    assert!(err.is_connection(), "{msg}");
}
