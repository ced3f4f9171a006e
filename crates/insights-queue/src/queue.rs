//! [`Queue`]: the handle producers, workers and operators share; enqueue lives here.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{PgPool, Row};

use crate::config::QueueConfig;
use crate::db::{Db, op_err};
use crate::defaults;
use crate::error::QueueError;
use crate::job::{NewJob, PushOutcome};

/// The queue: a pool (built by the caller, possibly pointing at a transaction pooler) and its
/// settings. Cheap to clone.
#[derive(Clone)]
pub struct Queue {
    pub(crate) inner: Arc<QueueInner>,
}

pub(crate) struct QueueInner {
    pub(crate) db: Db,
    pub(crate) config: QueueConfig,
}

impl std::fmt::Debug for Queue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Queue")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

// The only statement that inserts jobs. Every row carries its `max_attempts` (the job's own,
// else `QueueConfig::default_max_attempts`, which the worker sets from `INSIGHTS_MAX_ATTEMPTS`),
// so the column's `DEFAULT 8` in the first migration never decides a queued job's attempts; it
// stays because applied migrations are checksummed.
const PUSH_SQL: &str = r#"
WITH input AS (
    SELECT * FROM unnest($2::text[], $3::text[], $4::int2[], $5::timestamptz[], $6::int4[])
        WITH ORDINALITY AS t(payload, dedupe_key, priority, run_at, max_attempts, ord)
), ins AS (
    INSERT INTO insights_queue.jobs (queue, state, payload, dedupe_key, priority, run_at, max_attempts)
    SELECT $1,
           CASE WHEN run_at > now() THEN 'scheduled' ELSE 'available' END,
           payload::jsonb, dedupe_key, priority, coalesce(run_at, now()), max_attempts
    FROM input ORDER BY ord
    ON CONFLICT DO NOTHING
    RETURNING 1
), n AS (
    SELECT count(*) AS n FROM ins
)
-- Wakes workers that LISTEN over a direct URL (channel: defaults::NOTIFY_CHANNEL);
-- delivered at commit.
SELECT n.n FROM n LEFT JOIN LATERAL (
    SELECT pg_notify('insights_queue_jobs', $1) WHERE n.n > 0
) notified ON true
"#;

impl Queue {
    pub fn new(pool: PgPool, config: QueueConfig) -> Self {
        Self {
            inner: Arc::new(QueueInner {
                db: Db::new(pool),
                config,
            }),
        }
    }

    pub fn pool(&self) -> &PgPool {
        self.inner.db.pool()
    }

    /// False from a connection failure until a queue call reaches the database again (the
    /// connection gate is closed: calls fail at once without trying). Answered from memory, so
    /// a readiness probe can use it without opening a connection.
    pub fn is_reachable(&self) -> bool {
        self.inner.db.gate().is_open()
    }

    pub fn config(&self) -> &QueueConfig {
        &self.inner.config
    }

    /// Creates or upgrades the queue schema; see [`crate::migrate`].
    pub async fn migrate(&self) -> Result<insights_pg::MigrateReport, QueueError> {
        crate::migrate::migrate(self.inner.db.pool()).await
    }

    /// Enqueues one job.
    pub async fn push<T: Serialize>(
        &self,
        queue: &str,
        job: NewJob<T>,
    ) -> Result<PushOutcome, QueueError> {
        self.push_bulk(queue, vec![job]).await
    }

    /// Enqueues many jobs, one statement per chunk of [`defaults::PUSH_CHUNK`] (up to
    /// [`defaults::PUSH_PARALLEL`] chunks in flight, so encoding and the network overlap the
    /// server's work). A job whose dedupe key is held by a non-terminal job (or by another job
    /// of the same call) is counted as a duplicate, never an error. Chunks are separate
    /// transactions: on error, earlier chunks may have been inserted (pushing again is safe
    /// with dedupe keys).
    pub async fn push_bulk<T: Serialize>(
        &self,
        queue: &str,
        jobs: Vec<NewJob<T>>,
    ) -> Result<PushOutcome, QueueError> {
        use futures::StreamExt;

        let default_max = self.inner.config.default_max_attempts;
        let mut chunks = Vec::with_capacity(jobs.len() / defaults::PUSH_CHUNK + 1);
        let mut jobs = jobs.into_iter().peekable();
        while jobs.peek().is_some() {
            chunks.push(Chunk::encode(
                jobs.by_ref().take(defaults::PUSH_CHUNK),
                default_max,
            )?);
        }
        let mut results = futures::stream::iter(chunks)
            .map(|chunk| self.push_chunk(queue, chunk))
            .buffer_unordered(defaults::PUSH_PARALLEL);
        let mut outcome = PushOutcome::default();
        while let Some(res) = results.next().await {
            let (n, inserted) = res?;
            outcome.inserted += inserted;
            outcome.duplicates += n.saturating_sub(inserted);
        }
        Ok(outcome)
    }

    /// Returns (jobs in the chunk, rows inserted).
    async fn push_chunk(&self, queue: &str, c: Chunk) -> Result<(u64, u64), QueueError> {
        const OP: &str = "push";
        let pool = &self.inner.db;
        let inserted: i64 = pool
            .run(OP, self.inner.config.statement_timeout, async {
                let mut tx = pool.begin().await.map_err(op_err(OP))?;
                let row = sqlx::query(PUSH_SQL)
                    .persistent(false)
                    .bind(queue)
                    .bind(&c.payloads)
                    .bind(&c.keys)
                    .bind(&c.priorities)
                    .bind(&c.run_ats)
                    .bind(&c.max_attempts)
                    .fetch_one(&mut *tx)
                    .await
                    .map_err(op_err(OP))?;
                tx.commit().await.map_err(op_err(OP))?;
                row.try_get::<i64, _>(0).map_err(op_err(OP))
            })
            .await?;
        Ok((
            c.payloads.len() as u64,
            u64::try_from(inserted).unwrap_or(0),
        ))
    }
}

/// One statement's worth of jobs, as column arrays for `unnest`.
struct Chunk {
    payloads: Vec<String>,
    keys: Vec<Option<String>>,
    priorities: Vec<i16>,
    run_ats: Vec<Option<DateTime<Utc>>>,
    max_attempts: Vec<i32>,
}

impl Chunk {
    fn encode<T: Serialize>(
        jobs: impl Iterator<Item = NewJob<T>>,
        default_max: i32,
    ) -> Result<Self, QueueError> {
        let cap = defaults::PUSH_CHUNK;
        let mut c = Chunk {
            payloads: Vec::with_capacity(cap),
            keys: Vec::with_capacity(cap),
            priorities: Vec::with_capacity(cap),
            run_ats: Vec::with_capacity(cap),
            max_attempts: Vec::with_capacity(cap),
        };
        for job in jobs {
            let m = job.max_attempts.unwrap_or(default_max);
            if m < 1 {
                return Err(QueueError::Invalid(format!(
                    "max_attempts must be >= 1, got {m}"
                )));
            }
            c.payloads.push(
                serde_json::to_string(&job.payload)
                    .map_err(|source| QueueError::Encode { op: "push", source })?,
            );
            c.keys.push(job.dedupe_key);
            c.priorities.push(job.priority);
            c.run_ats.push(job.run_at);
            c.max_attempts.push(m);
        }
        Ok(c)
    }
}
