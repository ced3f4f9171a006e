//! [`Queue`]: the handle producers, workers and operators share; enqueue lives here.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{PgPool, Row};

use crate::config::QueueConfig;
use crate::db::{self, op_err};
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
    pub(crate) pool: PgPool,
    pub(crate) config: QueueConfig,
}

impl std::fmt::Debug for Queue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Queue")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

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
)
SELECT count(*) FROM ins
"#;

impl Queue {
    pub fn new(pool: PgPool, config: QueueConfig) -> Self {
        Self {
            inner: Arc::new(QueueInner { pool, config }),
        }
    }

    pub fn pool(&self) -> &PgPool {
        &self.inner.pool
    }

    pub fn config(&self) -> &QueueConfig {
        &self.inner.config
    }

    /// Creates or upgrades the queue schema; see [`crate::migrate`].
    pub async fn migrate(&self) -> Result<(), QueueError> {
        crate::migrate::migrate(&self.inner.pool).await
    }

    /// Enqueues one job.
    pub async fn push<T: Serialize>(
        &self,
        queue: &str,
        job: NewJob<T>,
    ) -> Result<PushOutcome, QueueError> {
        self.push_bulk(queue, vec![job]).await
    }

    /// Enqueues many jobs, one statement per chunk of [`defaults::PUSH_CHUNK`]. A job whose
    /// dedupe key is held by a non-terminal job (or by an earlier job of the same batch) is
    /// counted as a duplicate, never an error.
    pub async fn push_bulk<T: Serialize>(
        &self,
        queue: &str,
        jobs: Vec<NewJob<T>>,
    ) -> Result<PushOutcome, QueueError> {
        const OP: &str = "push";
        let mut outcome = PushOutcome::default();
        let default_max = self.inner.config.default_max_attempts;
        let mut jobs = jobs.into_iter().peekable();
        while jobs.peek().is_some() {
            let mut payloads = Vec::with_capacity(defaults::PUSH_CHUNK);
            let mut keys: Vec<Option<String>> = Vec::with_capacity(defaults::PUSH_CHUNK);
            let mut priorities: Vec<i16> = Vec::with_capacity(defaults::PUSH_CHUNK);
            let mut run_ats: Vec<Option<DateTime<Utc>>> = Vec::with_capacity(defaults::PUSH_CHUNK);
            let mut max_attempts: Vec<i32> = Vec::with_capacity(defaults::PUSH_CHUNK);
            for job in jobs.by_ref().take(defaults::PUSH_CHUNK) {
                let m = job.max_attempts.unwrap_or(default_max);
                if m < 1 {
                    return Err(QueueError::Invalid(format!(
                        "max_attempts must be >= 1, got {m}"
                    )));
                }
                payloads.push(
                    serde_json::to_string(&job.payload)
                        .map_err(|source| QueueError::Encode { op: OP, source })?,
                );
                keys.push(job.dedupe_key);
                priorities.push(job.priority);
                run_ats.push(job.run_at);
                max_attempts.push(m);
            }
            let n = payloads.len() as u64;
            let pool = &self.inner.pool;
            let inserted: i64 = db::with_timeout(OP, self.inner.config.statement_timeout, async {
                let mut tx = pool.begin().await.map_err(op_err(OP))?;
                let row = sqlx::query(PUSH_SQL)
                    .persistent(false)
                    .bind(queue)
                    .bind(&payloads)
                    .bind(&keys)
                    .bind(&priorities)
                    .bind(&run_ats)
                    .bind(&max_attempts)
                    .fetch_one(&mut *tx)
                    .await
                    .map_err(op_err(OP))?;
                tx.commit().await.map_err(op_err(OP))?;
                row.try_get::<i64, _>(0).map_err(op_err(OP))
            })
            .await?;
            let inserted = u64::try_from(inserted).unwrap_or(0);
            outcome.inserted += inserted;
            outcome.duplicates += n.saturating_sub(inserted);
        }
        Ok(outcome)
    }
}
