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
use insights_core::{Conversation, Direction, InsightRecord, LeadSnapshot, Message};
use sqlx::postgres::PgRow;
use sqlx::{AssertSqlSafe, Connection, PgConnection, PgPool, Row};

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

/// What the handler needs after loading: the conversation and the stored insight's watermark.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadedConversation {
    pub conversation: Conversation,
    /// `source_last_message_at` of the stored insight; `None` when there is none.
    pub stored_source_last_message_at: Option<DateTime<Utc>>,
}

impl LoadedConversation {
    /// The stored insight already covers the newest message: nothing to do (a re-delivered or
    /// duplicate job must not pay for a second LLM call).
    pub fn is_fresh(&self) -> bool {
        match (
            self.stored_source_last_message_at,
            self.conversation.source_last_message_at(),
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

    /// One keyset page of candidate lead ids, ascending: booked leads with messages whose
    /// insight is missing or stale. Pass the last id of the previous page as `after`.
    pub async fn candidate_ids(
        &self,
        after: Option<i64>,
        limit: i64,
    ) -> Result<Vec<i64>, StoreError> {
        let sql = Arc::clone(&self.inner.options.statements.candidates);
        let persistent = self.persistent();
        let after = after.unwrap_or(i64::MIN);
        let limit = limit.max(0);
        self.call("candidate_ids", &move |conn| {
            let sql = Arc::clone(&sql);
            Box::pin(async move {
                sqlx::query_scalar::<_, i64>(AssertSqlSafe(sql))
                    .bind(after)
                    .bind(limit)
                    .persistent(persistent)
                    .fetch_all(conn)
                    .await
            })
        })
        .await
    }

    /// The lead and its newest `max_messages` messages (oldest first), the total message count
    /// and the stored insight's watermark, read in one statement (one snapshot). `None` when
    /// the lead does not exist.
    pub async fn load_conversation(
        &self,
        lead_id: i64,
        max_messages: u32,
    ) -> Result<Option<LoadedConversation>, StoreError> {
        let mut found = self.load_conversations(&[lead_id], max_messages).await?;
        Ok(found.remove(&lead_id))
    }

    /// [`Self::load_conversation`] for many leads in one statement (one snapshot); leads that
    /// do not exist are absent from the map. Used by [`crate::ConversationLoader`].
    pub async fn load_conversations(
        &self,
        lead_ids: &[i64],
        max_messages: u32,
    ) -> Result<HashMap<i64, LoadedConversation>, StoreError> {
        if lead_ids.is_empty() {
            return Ok(HashMap::new());
        }
        let sql = Arc::clone(&self.inner.options.statements.load);
        let persistent = self.persistent();
        let ids: Arc<[i64]> = Arc::from(lead_ids);
        let rows = self
            .call("load_conversation", &move |conn| {
                let sql = Arc::clone(&sql);
                let ids = ids.to_vec();
                Box::pin(async move {
                    sqlx::query(AssertSqlSafe(sql))
                        .bind(ids)
                        .bind(i64::from(max_messages))
                        .persistent(persistent)
                        .fetch_all(conn)
                        .await
                })
            })
            .await?;
        rows.iter()
            .map(|r| decode_loaded(r).map(|l| (l.conversation.lead.id, l)))
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
            op: "upsert_insight",
            detail: "no result row".to_owned(),
        })
    }

    /// Writes a batch of insights in one statement; outcomes in input order. Several records
    /// for one lead are allowed: the newest source wins, the others are `StaleIgnored`.
    pub async fn upsert_batch(
        &self,
        records: &[InsightRecord],
    ) -> Result<Vec<UpsertOutcome>, StoreError> {
        if records.is_empty() {
            return Ok(Vec::new());
        }
        // One row per lead: ON CONFLICT cannot touch a row twice in one statement.
        let mut winner: HashMap<i64, usize> = HashMap::with_capacity(records.len());
        for (i, r) in records.iter().enumerate() {
            winner
                .entry(r.lead_id)
                .and_modify(|w| {
                    if r.source_last_message_at >= records[*w].source_last_message_at {
                        *w = i;
                    }
                })
                .or_insert(i);
        }
        let mut unique: Vec<usize> = winner.values().copied().collect();
        unique.sort_unstable();
        let cols = Columns::from_records(unique.iter().map(|&i| &records[i]))?;
        let sql = Arc::clone(&self.inner.options.statements.upsert);
        let persistent = self.persistent();
        let rows: Vec<(i64, bool, bool)> = self
            .call("upsert_insights", &move |conn| {
                let sql = Arc::clone(&sql);
                let c = cols.clone();
                Box::pin(async move {
                    sqlx::query_as::<_, (i64, bool, bool)>(AssertSqlSafe(sql))
                        .bind(c.lead_id)
                        .bind(c.summary)
                        .bind(c.sentiment)
                        .bind(c.objections)
                        .bind(c.next_steps)
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
        let by_lead: HashMap<i64, (bool, bool)> =
            rows.into_iter().map(|(id, w, e)| (id, (w, e))).collect();
        records
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let (written, exists) =
                    by_lead
                        .get(&r.lead_id)
                        .copied()
                        .ok_or_else(|| StoreError::Decode {
                            op: "upsert_insights",
                            detail: format!("no result row for lead {}", r.lead_id),
                        })?;
                let is_winner = winner.get(&r.lead_id) == Some(&i);
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

    fn loaded(stored: Option<i64>, newest: Option<i64>) -> LoadedConversation {
        let at = |m: i64| Utc.timestamp_opt(1_700_000_000 + m * 60, 0).unwrap();
        LoadedConversation {
            conversation: Conversation {
                lead: LeadSnapshot {
                    id: 1,
                    name: String::new(),
                    email: String::new(),
                    booked_at: None,
                    last_message_at: newest.map(at),
                },
                messages: newest
                    .map(|m| Message {
                        id: 1,
                        direction: Direction::Inbound,
                        body: "b".into(),
                        sent_at: at(m),
                    })
                    .into_iter()
                    .collect(),
                total_message_count: i64::from(newest.is_some()),
            },
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

/// The upsert's parallel arrays.
#[derive(Clone)]
struct Columns {
    lead_id: Vec<i64>,
    summary: Vec<String>,
    sentiment: Vec<String>,
    objections: Vec<String>,
    next_steps: Vec<String>,
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
        records: impl ExactSizeIterator<Item = &'a InsightRecord>,
    ) -> Result<Self, StoreError> {
        let n = records.len();
        let mut c = Columns {
            lead_id: Vec::with_capacity(n),
            summary: Vec::with_capacity(n),
            sentiment: Vec::with_capacity(n),
            objections: Vec::with_capacity(n),
            next_steps: Vec::with_capacity(n),
            model: Vec::with_capacity(n),
            prompt_version: Vec::with_capacity(n),
            source_last_message_at: Vec::with_capacity(n),
            source_message_count: Vec::with_capacity(n),
            prompt_tokens: Vec::with_capacity(n),
            completion_tokens: Vec::with_capacity(n),
            llm_request_id: Vec::with_capacity(n),
        };
        let json = |v: &Vec<String>| {
            serde_json::to_string(v).map_err(|e| StoreError::Decode {
                op: "upsert_insights",
                detail: e.to_string(),
            })
        };
        for r in records {
            c.lead_id.push(r.lead_id);
            c.summary.push(r.content.summary.clone());
            c.sentiment.push(r.content.sentiment.as_str().to_owned());
            c.objections.push(json(&r.content.objections)?);
            c.next_steps.push(json(&r.content.next_steps)?);
            c.model.push(r.model.clone());
            c.prompt_version.push(r.prompt_version.clone());
            c.source_last_message_at.push(r.source_last_message_at);
            c.source_message_count.push(r.source_message_count);
            c.prompt_tokens.push(r.prompt_tokens);
            c.completion_tokens.push(r.completion_tokens);
            c.llm_request_id.push(r.llm_request_id.clone());
        }
        Ok(c)
    }
}

fn decode_loaded(row: &PgRow) -> Result<LoadedConversation, StoreError> {
    let op = "load_conversation";
    let err = |e: sqlx::Error| StoreError::Decode {
        op,
        detail: e.to_string(),
    };
    let lead = LeadSnapshot {
        id: row.try_get("id").map_err(err)?,
        name: row
            .try_get::<Option<String>, _>("name")
            .map_err(err)?
            .unwrap_or_default(),
        email: row
            .try_get::<Option<String>, _>("email")
            .map_err(err)?
            .unwrap_or_default(),
        booked_at: row.try_get("booked_at").map_err(err)?,
        last_message_at: row.try_get("last_message_at").map_err(err)?,
    };
    let total_message_count: i64 = row.try_get("total_message_count").map_err(err)?;
    let stored: Option<DateTime<Utc>> =
        row.try_get("stored_source_last_message_at").map_err(err)?;
    let ids: Vec<i64> = row.try_get("message_ids").map_err(err)?;
    let directions: Vec<String> = row.try_get("message_directions").map_err(err)?;
    let bodies: Vec<String> = row.try_get("message_bodies").map_err(err)?;
    let sent: Vec<DateTime<Utc>> = row.try_get("message_sent_at").map_err(err)?;
    if ids.len() != directions.len() || ids.len() != bodies.len() || ids.len() != sent.len() {
        return Err(StoreError::Decode {
            op,
            detail: "message arrays differ in length".to_owned(),
        });
    }
    let mut messages = Vec::with_capacity(ids.len());
    for (((id, direction), body), sent_at) in ids.into_iter().zip(directions).zip(bodies).zip(sent)
    {
        let direction = Direction::parse(&direction).ok_or_else(|| StoreError::Decode {
            op,
            detail: format!(
                "message {id} has direction {direction:?}, expected inbound or outbound"
            ),
        })?;
        messages.push(Message {
            id,
            direction,
            body,
            sent_at,
        });
    }
    Ok(LoadedConversation {
        conversation: Conversation {
            lead,
            messages,
            total_message_count,
        },
        stored_source_last_message_at: stored,
    })
}
