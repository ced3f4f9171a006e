use chrono::{DateTime, Duration as ChronoDuration, TimeZone, Utc};
use std::future::Future;

use insights_core::{DatabaseUrl, InsightRecord, LeadKey};
use insights_store::{LoadedLead, PoolSettings, Store, StoreError, StoreOptions, connect, migrate};
use insights_testkit::TestDb;
use sqlx::PgPool;

pub struct Env {
    pub store: Store,
    pub pool: PgPool,
    /// Dropped last: the database goes away after the pool.
    #[allow(dead_code)]
    pub db: TestDb,
}

pub async fn env(label: &str) -> Env {
    let db = TestDb::create(label).await.unwrap();
    let settings = PoolSettings::new(DatabaseUrl::new(db.url.clone()));
    let pool = connect(&settings).await.unwrap();
    migrate(&pool).await.unwrap();
    let store = Store::new(pool.clone(), StoreOptions::for_pool(&settings));
    Env { store, pool, db }
}

pub fn t(minutes: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 1, 0, 0, 0).unwrap() + ChronoDuration::minutes(minutes)
}

/// A lead; `booked` decides booked_at. last_message_at is maintained by the trigger.
pub async fn lead(pool: &PgPool, id: i64, booked: bool) {
    sqlx::query("INSERT INTO leads (id, name, email, booked_at) VALUES ($1, $2, $3, $4)")
        .bind(id)
        .bind(format!("Lead {id}"))
        .bind(format!("lead{id}@example.com"))
        .bind(booked.then(|| t(0)))
        .execute(pool)
        .await
        .unwrap();
}

pub async fn message(pool: &PgPool, lead_id: i64, minute: i64, body: &str) {
    sqlx::query("INSERT INTO messages (lead_id, direction, body, sent_at) VALUES ($1, $2, $3, $4)")
        .bind(lead_id)
        .bind(if minute % 2 == 0 {
            "inbound"
        } else {
            "outbound"
        })
        .bind(body)
        .bind(t(minute))
        .execute(pool)
        .await
        .unwrap();
}

pub fn record(lead_id: i64, source_minute: i64, summary: &str) -> InsightRecord {
    InsightRecord {
        lead_key: LeadKey::Int(lead_id),
        document: serde_json::json!({
            "summary": summary,
            "sentiment": "neutral",
            "objections": ["price"],
            "next_steps": ["call back"],
        }),
        model: "test-model".into(),
        prompt_version: "test-v1".into(),
        source_last_message_at: t(source_minute),
        source_message_count: 3,
        prompt_tokens: 100,
        completion_tokens: 20,
        llm_request_id: Some(format!("req-{lead_id}")),
    }
}

pub async fn summary_of(pool: &PgPool, lead_id: i64) -> Option<String> {
    sqlx::query_scalar("SELECT summary FROM lead_conversation_insights WHERE lead_id = $1")
        .bind(lead_id)
        .fetch_optional(pool)
        .await
        .unwrap()
}

/// The store's calls with this project's `bigint` lead ids.
pub trait BigintKeys {
    fn candidate_ids(
        &self,
        after: Option<i64>,
        limit: i64,
    ) -> impl Future<Output = Result<Vec<i64>, StoreError>> + Send;
    fn load_conversation(
        &self,
        lead_id: i64,
        max_messages: u32,
    ) -> impl Future<Output = Result<Option<LoadedLead>, StoreError>> + Send;
}

impl BigintKeys for Store {
    async fn candidate_ids(&self, after: Option<i64>, limit: i64) -> Result<Vec<i64>, StoreError> {
        let after = after.map(LeadKey::Int);
        let keys = self.candidate_keys(after.as_ref(), limit).await?;
        Ok(keys
            .into_iter()
            .map(|k| match k {
                LeadKey::Int(i) => i,
                LeadKey::Text(t) => panic!("text key {t} from the built-in statements"),
            })
            .collect())
    }

    async fn load_conversation(
        &self,
        lead_id: i64,
        max_messages: u32,
    ) -> Result<Option<LoadedLead>, StoreError> {
        self.load_lead(&LeadKey::Int(lead_id), max_messages).await
    }
}

/// The `body` of every loaded message, oldest first.
pub fn bodies(loaded: &LoadedLead) -> Vec<String> {
    loaded
        .input
        .messages
        .iter()
        .map(|m| m["body"].as_str().unwrap_or_default().to_owned())
        .collect()
}

/// All candidate ids, paging through with `page`.
pub async fn all_candidates(store: &Store, page: i64) -> Vec<i64> {
    let mut out = Vec::new();
    let mut after = None;
    loop {
        let ids = store.candidate_ids(after, page).await.unwrap();
        if ids.is_empty() {
            return out;
        }
        after = ids.last().copied();
        out.extend(ids);
    }
}
