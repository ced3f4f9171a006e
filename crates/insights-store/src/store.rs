//! The store: candidate query, conversation load and insight upsert on the app database.
//!
//! Every call passes the connection gate (no connection attempt while the database is presumed
//! down), checks out a connection only for its one statement (plus BEGIN/COMMIT in pooler
//! mode), runs under the call timeout, and is retried on transient errors. No call keeps a
//! connection across anything but its own statement, so the LLM is never waited on with a
//! connection held.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use insights_core::profile::PromptInput;
use insights_core::{InsightRecord, LeadKey, LeadKeyKind};
use sqlx::postgres::{PgArguments, PgRow};
use sqlx::query::Query;
use sqlx::types::Uuid;
use sqlx::{AssertSqlSafe, Connection, PgConnection, PgPool, Postgres, Row};

use crate::defaults;
use crate::error::StoreError;
use crate::pool::{PoolSettings, PoolerMode};
use crate::retry::{RetryPolicy, retry_transient};
use crate::statements::DomainStatements;
use crate::stats::{StatsCell, StoreStats};
use insights_pg::{ConnectionGate, GatePolicy};

/// How a [`Store`] behaves. `Default` = direct mode, default timeout and retries, our tables.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    pub pooler: PoolerMode,
    /// Bound on one attempt of a call, connection wait included.
    pub call_timeout: Duration,
    pub retry: RetryPolicy,
    /// Backoff of the store's connection gate.
    pub gate: GatePolicy,
    pub statements: DomainStatements,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            pooler: PoolerMode::Direct,
            call_timeout: defaults::CALL_TIMEOUT,
            retry: RetryPolicy::default(),
            gate: GatePolicy::default(),
            statements: DomainStatements::default(),
        }
    }
}

impl StoreOptions {
    /// Mode and timeout of the pool the store runs on.
    pub fn for_pool(settings: &PoolSettings) -> Self {
        Self {
            pooler: settings.mode(),
            call_timeout: settings.statement_timeout,
            ..Self::default()
        }
    }
}

/// One lead as the load returned it: what the prompt is rendered from, and the watermarks.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadedLead {
    pub key: LeadKey,
    /// False: the lead no longer wants an insight (for example it was unbooked).
    pub eligible: bool,
    /// The template's `lead`, `messages` and totals.
    pub input: PromptInput,
    /// The watermark of what was loaded (newest message, or the lead's last-message time if
    /// newer); `None` when the lead has no messages.
    pub source_last_message_at: Option<DateTime<Utc>>,
    /// `source_last_message_at` of the stored insight; `None` when there is none.
    pub stored_source_last_message_at: Option<DateTime<Utc>>,
}

impl LoadedLead {
    /// The stored insight already covers the newest message: nothing to do (a re-delivered or
    /// duplicate job must not pay for a second LLM call).
    pub fn is_fresh(&self) -> bool {
        match (
            self.stored_source_last_message_at,
            self.source_last_message_at,
        ) {
            (Some(stored), Some(current)) => stored >= current,
            (Some(_), None) => true,
            (None, _) => false,
        }
    }
}

/// Result of writing one insight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpsertOutcome {
    /// Inserted, or replaced an insight written from older source data.
    Written,
    /// The stored insight was written from the same or newer source data; nothing changed.
    StaleIgnored,
    /// The lead was deleted meanwhile; nothing written.
    LeadGone,
}

#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    pool: PgPool,
    options: StoreOptions,
    stats: Arc<StatsCell>,
    /// Every call passes it before touching the pool.
    gate: ConnectionGate,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("pooler", &self.inner.options.pooler)
            .field("call_timeout", &self.inner.options.call_timeout)
            .finish_non_exhaustive()
    }
}

type Statement<T> =
    dyn for<'c> Fn(&'c mut PgConnection) -> BoxFuture<'c, Result<T, sqlx::Error>> + Send + Sync;

impl Store {
    pub fn new(pool: PgPool, options: StoreOptions) -> Self {
        Self {
            inner: Arc::new(Inner {
                pool,
                gate: ConnectionGate::new("app database", options.gate),
                options,
                stats: Arc::new(StatsCell::default()),
            }),
        }
    }

    pub fn pool(&self) -> &PgPool {
        &self.inner.pool
    }

    pub fn options(&self) -> &StoreOptions {
        &self.inner.options
    }

    pub fn stats(&self) -> StoreStats {
        self.inner.stats.snapshot()
    }

    /// The gate in front of the pool: closed while the database is presumed down (readiness,
    /// and callers that want to wait for it to reopen).
    pub fn gate(&self) -> &ConnectionGate {
        &self.inner.gate
    }

    /// Named statements are fine on a direct connection and wrong behind a transaction pooler.
    fn persistent(&self) -> bool {
        self.inner.options.pooler == PoolerMode::Direct
    }

    /// One attempt: past the connection gate, check out, run (inside BEGIN/COMMIT in pooler
    /// mode), release; bounded by the call timeout. A closed gate refuses without touching the
    /// pool.
    async fn attempt<T>(
        &self,
        op: &'static str,
        statement: &Statement<T>,
    ) -> Result<T, StoreError> {
        let ticket = self
            .inner
            .gate
            .enter()
            .map_err(|retry_in| StoreError::Unavailable { op, retry_in })?;
        let res = self.attempt_ungated(op, statement).await;
        ticket.record(matches!(&res, Err(e) if e.is_connection()));
        res
    }

    async fn attempt_ungated<T>(
        &self,
        op: &'static str,
        statement: &Statement<T>,
    ) -> Result<T, StoreError> {
        let inner = &*self.inner;
        let work = async {
            // A call still waiting for a connection when another call finds the database gone
            // gives up rather than add a connection attempt of its own.
            let mut conn = tokio::select! {
                conn = inner.pool.acquire() => conn.map_err(|e| StoreError::sqlx(op, e))?,
                retry_in = inner.gate.closes() => {
                    return Err(StoreError::Unavailable { op, retry_in });
                }
            };
            let _hold = inner.stats.checkout();
            match inner.options.pooler {
                PoolerMode::Transaction => {
                    let mut tx = Connection::begin(&mut *conn)
                        .await
                        .map_err(|e| StoreError::sqlx(op, e))?;
                    let out = statement(&mut tx)
                        .await
                        .map_err(|e| StoreError::sqlx(op, e))?;
                    tx.commit().await.map_err(|e| StoreError::sqlx(op, e))?;
                    Ok(out)
                }
                PoolerMode::Direct => statement(&mut conn)
                    .await
                    .map_err(|e| StoreError::sqlx(op, e)),
            }
        };
        let after = inner.options.call_timeout;
        tokio::time::timeout(after, work)
            .await
            .map_err(|_| StoreError::Timeout { op, after })?
    }

    async fn call<T>(&self, op: &'static str, statement: &Statement<T>) -> Result<T, StoreError> {
        retry_transient(&self.inner.options.retry, || self.attempt(op, statement)).await
    }

    /// One keyset page of candidate lead keys, ascending: booked leads with messages whose
    /// insight is missing or stale. Pass the last key of the previous page as `after`.
    pub async fn candidate_keys(
        &self,
        after: Option<&LeadKey>,
        limit: i64,
    ) -> Result<Vec<LeadKey>, StoreError> {
        let op = "candidates";
        let statements = &self.inner.options.statements;
        let kind = statements.lead_key;
        let sql = Arc::clone(&statements.candidates);
        let persistent = self.persistent();
        let after = after
            .map(|k| KeyArg::new(kind, std::slice::from_ref(k)))
            .transpose()?;
        let limit = limit.max(0);
        let rows = self
            .call(op, &move |conn| {
                let sql = Arc::clone(&sql);
                let after = after.clone();
                Box::pin(async move {
                    let query = sqlx::query(AssertSqlSafe(sql));
                    let query = match after {
                        Some(after) => after.bind_one(query),
                        None => KeyArg::bind_null(kind, query),
                    };
                    query
                        .bind(limit)
                        .persistent(persistent)
                        .fetch_all(conn)
                        .await
                })
            })
            .await?;
        rows.iter().map(|r| decode_key(op, kind, r)).collect()
    }

    /// The lead and its newest `max_messages` messages (oldest first), the total message count
    /// and the stored insight's watermark, read in one statement (one snapshot). `None` when
    /// the lead does not exist.
    pub async fn load_lead(
        &self,
        key: &LeadKey,
        max_messages: u32,
    ) -> Result<Option<LoadedLead>, StoreError> {
        let mut found = self
            .load_leads(std::slice::from_ref(key), max_messages)
            .await?;
        Ok(found.remove(key))
    }

    /// [`Self::load_lead`] for many leads in one statement (one snapshot); leads that do not
    /// exist are absent from the map. Used by [`crate::ConversationLoader`].
    pub async fn load_leads(
        &self,
        keys: &[LeadKey],
        max_messages: u32,
    ) -> Result<HashMap<LeadKey, LoadedLead>, StoreError> {
        let op = "load";
        if keys.is_empty() {
            return Ok(HashMap::new());
        }
        let statements = &self.inner.options.statements;
        let kind = statements.lead_key;
        let sql = Arc::clone(&statements.load);
        let persistent = self.persistent();
        let keys = KeyArg::new(kind, keys)?;
        let rows = self
            .call(op, &move |conn| {
                let sql = Arc::clone(&sql);
                let keys = keys.clone();
                Box::pin(async move {
                    keys.bind_array(sqlx::query(AssertSqlSafe(sql)))
                        .bind(i64::from(max_messages))
                        .persistent(persistent)
                        .fetch_all(conn)
                        .await
                })
            })
            .await?;
        rows.iter()
            .map(|r| decode_loaded(kind, r).map(|l| (l.key.clone(), l)))
            .collect()
    }

    /// Writes one insight unless the stored one has the same or newer source.
    ///
    /// Retried on transient errors. If a connection dies during COMMIT the write may have landed;
    /// the retry then reports `StaleIgnored` for our own row, which is harmless (the insight is
    /// stored) and only mislabels the outcome.
    pub async fn upsert_insight(
        &self,
        record: &InsightRecord,
    ) -> Result<UpsertOutcome, StoreError> {
        let mut out = self.upsert_batch(std::slice::from_ref(record)).await?;
        out.pop().ok_or_else(|| StoreError::Decode {
            op: "upsert",
            detail: "no result row".to_owned(),
        })
    }

    /// Writes a batch of insights in one statement; outcomes in input order. Several records
    /// for one lead are allowed: the newest source wins, the others are `StaleIgnored`.
    pub async fn upsert_batch(
        &self,
        records: &[InsightRecord],
    ) -> Result<Vec<UpsertOutcome>, StoreError> {
        let op = "upsert";
        if records.is_empty() {
            return Ok(Vec::new());
        }
        // One row per lead: ON CONFLICT cannot touch a row twice in one statement.
        let mut winner: HashMap<&LeadKey, usize> = HashMap::with_capacity(records.len());
        for (i, r) in records.iter().enumerate() {
            winner
                .entry(&r.lead_key)
                .and_modify(|w| {
                    if r.source_last_message_at >= records[*w].source_last_message_at {
                        *w = i;
                    }
                })
                .or_insert(i);
        }
        let mut unique: Vec<usize> = winner.values().copied().collect();
        unique.sort_unstable();
        let kind = self.inner.options.statements.lead_key;
        let cols = Columns::from_records(kind, unique.iter().map(|&i| &records[i]))?;
        let sql = Arc::clone(&self.inner.options.statements.upsert);
        let persistent = self.persistent();
        let rows = self
            .call(op, &move |conn| {
                let sql = Arc::clone(&sql);
                let c = cols.clone();
                Box::pin(async move {
                    c.lead_key
                        .bind_array(sqlx::query(AssertSqlSafe(sql)))
                        .bind(c.document)
                        .bind(c.model)
                        .bind(c.prompt_version)
                        .bind(c.source_last_message_at)
                        .bind(c.source_message_count)
                        .bind(c.prompt_tokens)
                        .bind(c.completion_tokens)
                        .bind(c.llm_request_id)
                        .persistent(persistent)
                        .fetch_all(conn)
                        .await
                })
            })
            .await?;
        let mut by_lead: HashMap<LeadKey, (bool, bool)> = HashMap::with_capacity(rows.len());
        for row in &rows {
            let err = |e: sqlx::Error| StoreError::Decode {
                op,
                detail: e.to_string(),
            };
            let key = decode_key(op, kind, row)?;
            let written: bool = row.try_get("written").map_err(err)?;
            let exists: bool = row.try_get("lead_exists").map_err(err)?;
            by_lead.insert(key, (written, exists));
        }
        records
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let (written, exists) =
                    by_lead
                        .get(&r.lead_key)
                        .copied()
                        .ok_or_else(|| StoreError::Decode {
                            op,
                            detail: format!("no result row for lead {}", r.lead_key),
                        })?;
                let is_winner = winner.get(&r.lead_key) == Some(&i);
                Ok(if !exists {
                    UpsertOutcome::LeadGone
                } else if written && is_winner {
                    UpsertOutcome::Written
                } else {
                    UpsertOutcome::StaleIgnored
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn loaded(stored: Option<i64>, newest: Option<i64>) -> LoadedLead {
        let at = |m: i64| Utc.timestamp_opt(1_700_000_000 + m * 60, 0).unwrap();
        LoadedLead {
            key: LeadKey::Int(1),
            eligible: true,
            input: PromptInput {
                lead: serde_json::json!({}),
                messages: Vec::new(),
                total_message_count: 0,
            },
            source_last_message_at: newest.map(at),
            stored_source_last_message_at: stored.map(at),
        }
    }

    #[test]
    fn freshness() {
        assert!(!loaded(None, Some(5)).is_fresh());
        assert!(!loaded(Some(4), Some(5)).is_fresh());
        assert!(loaded(Some(5), Some(5)).is_fresh());
        assert!(loaded(Some(6), Some(5)).is_fresh());
        assert!(loaded(Some(6), None).is_fresh());
        assert!(!loaded(None, None).is_fresh());
    }
}

/// Lead keys bound as the statements' key type: `bigint`, `uuid` or `text` (one or an array).
#[derive(Debug, Clone)]
enum KeyArg {
    Int(Vec<i64>),
    Uuid(Vec<Uuid>),
    Text(Vec<String>),
}

impl KeyArg {
    fn new(kind: LeadKeyKind, keys: &[LeadKey]) -> Result<Self, StoreError> {
        let wrong = |key: &LeadKey| StoreError::Decode {
            op: "bind lead key",
            detail: format!("lead key {key} is not a {} key", kind.sql_type()),
        };
        Ok(match kind {
            LeadKeyKind::Bigint => KeyArg::Int(
                keys.iter()
                    .map(|k| match k {
                        LeadKey::Int(i) => Ok(*i),
                        LeadKey::Text(_) => Err(wrong(k)),
                    })
                    .collect::<Result<_, _>>()?,
            ),
            LeadKeyKind::Uuid => KeyArg::Uuid(
                keys.iter()
                    .map(|k| match k {
                        LeadKey::Text(s) => Uuid::parse_str(s).map_err(|_| wrong(k)),
                        LeadKey::Int(_) => Err(wrong(k)),
                    })
                    .collect::<Result<_, _>>()?,
            ),
            LeadKeyKind::Text => KeyArg::Text(
                keys.iter()
                    .map(|k| match k {
                        LeadKey::Text(s) => Ok(s.clone()),
                        LeadKey::Int(_) => Err(wrong(k)),
                    })
                    .collect::<Result<_, _>>()?,
            ),
        })
    }

    fn bind_array<'q>(
        self,
        query: Query<'q, Postgres, PgArguments>,
    ) -> Query<'q, Postgres, PgArguments> {
        match self {
            KeyArg::Int(v) => query.bind(v),
            KeyArg::Uuid(v) => query.bind(v),
            KeyArg::Text(v) => query.bind(v),
        }
    }

    /// Binds the first key alone (a scalar parameter).
    fn bind_one<'q>(
        self,
        query: Query<'q, Postgres, PgArguments>,
    ) -> Query<'q, Postgres, PgArguments> {
        match self {
            KeyArg::Int(v) => query.bind(v.first().copied()),
            KeyArg::Uuid(v) => query.bind(v.first().copied()),
            KeyArg::Text(v) => query.bind(v.into_iter().next()),
        }
    }

    /// A NULL of the key type (the candidate query's first page).
    fn bind_null(
        kind: LeadKeyKind,
        query: Query<'_, Postgres, PgArguments>,
    ) -> Query<'_, Postgres, PgArguments> {
        match kind {
            LeadKeyKind::Bigint => query.bind(None::<i64>),
            LeadKeyKind::Uuid => query.bind(None::<Uuid>),
            LeadKeyKind::Text => query.bind(None::<String>),
        }
    }
}

/// The `lead_key` column of a result row.
fn decode_key(op: &'static str, kind: LeadKeyKind, row: &PgRow) -> Result<LeadKey, StoreError> {
    let err = |e: sqlx::Error| StoreError::Decode {
        op,
        detail: e.to_string(),
    };
    Ok(match kind {
        LeadKeyKind::Bigint => LeadKey::Int(row.try_get("lead_key").map_err(err)?),
        LeadKeyKind::Uuid => {
            LeadKey::Text(row.try_get::<Uuid, _>("lead_key").map_err(err)?.to_string())
        }
        LeadKeyKind::Text => LeadKey::Text(row.try_get("lead_key").map_err(err)?),
    })
}

/// The upsert's parallel arrays.
#[derive(Clone)]
struct Columns {
    lead_key: KeyArg,
    document: Vec<serde_json::Value>,
    model: Vec<String>,
    prompt_version: Vec<String>,
    source_last_message_at: Vec<DateTime<Utc>>,
    source_message_count: Vec<i64>,
    prompt_tokens: Vec<i64>,
    completion_tokens: Vec<i64>,
    llm_request_id: Vec<Option<String>>,
}

impl Columns {
    fn from_records<'a>(
        kind: LeadKeyKind,
        records: impl ExactSizeIterator<Item = &'a InsightRecord> + Clone,
    ) -> Result<Self, StoreError> {
        let keys: Vec<LeadKey> = records.clone().map(|r| r.lead_key.clone()).collect();
        Ok(Columns {
            lead_key: KeyArg::new(kind, &keys)?,
            document: records.clone().map(|r| r.document.clone()).collect(),
            model: records.clone().map(|r| r.model.clone()).collect(),
            prompt_version: records.clone().map(|r| r.prompt_version.clone()).collect(),
            source_last_message_at: records.clone().map(|r| r.source_last_message_at).collect(),
            source_message_count: records.clone().map(|r| r.source_message_count).collect(),
            prompt_tokens: records.clone().map(|r| r.prompt_tokens).collect(),
            completion_tokens: records.clone().map(|r| r.completion_tokens).collect(),
            llm_request_id: records.map(|r| r.llm_request_id.clone()).collect(),
        })
    }
}

fn decode_loaded(kind: LeadKeyKind, row: &PgRow) -> Result<LoadedLead, StoreError> {
    let op = "load";
    let err = |e: sqlx::Error| StoreError::Decode {
        op,
        detail: e.to_string(),
    };
    let key = decode_key(op, kind, row)?;
    let lead: serde_json::Value = row.try_get("lead").map_err(err)?;
    if !lead.is_object() {
        return Err(StoreError::Decode {
            op,
            detail: format!("lead {key}: column \"lead\" must be a JSON object, got {lead}"),
        });
    }
    let messages = match row
        .try_get::<serde_json::Value, _>("messages")
        .map_err(err)?
    {
        serde_json::Value::Array(m) => m,
        serde_json::Value::Null => Vec::new(),
        other => {
            return Err(StoreError::Decode {
                op,
                detail: format!(
                    "lead {key}: column \"messages\" must be a JSON array, got {}",
                    json_kind(&other)
                ),
            });
        }
    };
    Ok(LoadedLead {
        eligible: row.try_get("eligible").map_err(err)?,
        input: PromptInput {
            lead,
            messages,
            total_message_count: row.try_get("total_message_count").map_err(err)?,
        },
        source_last_message_at: row.try_get("source_last_message_at").map_err(err)?,
        stored_source_last_message_at: row.try_get("stored_source_last_message_at").map_err(err)?,
        key,
    })
}

fn json_kind(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}
