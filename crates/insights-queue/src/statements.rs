//! The worker-side statements: fetch, batched completion, heartbeat, rescue. Each runs as one
//! statement in its own short transaction (see [`crate::db`]).

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::Row;

use crate::db::{Db, op_err};
use crate::defaults;
use crate::error::QueueError;

/// A claimed job, as fetched.
#[derive(Debug, Clone)]
pub(crate) struct FetchedJob {
    pub id: i64,
    pub token: i64,
    pub payload: String,
    pub attempt: i32,
    pub max_attempts: i32,
    pub priority: i16,
    pub dedupe_key: Option<String>,
    pub run_at: DateTime<Utc>,
}

/// How a job leaves the running state. `state` is one of available (handed back unstarted),
/// scheduled (snoozed), retryable, completed, discarded.
#[derive(Debug, Clone)]
pub(crate) struct Completion {
    pub id: i64,
    pub token: i64,
    pub state: &'static str,
    pub delay: Duration,
    pub error: Option<String>,
    /// Give the attempt counted at fetch back (unstarted hand-back, snooze).
    pub refund: bool,
}

pub(crate) fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// Where a worker's last full fetch ended in the fetch index (see migration 2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FetchCursor {
    pub priority: i16,
    pub run_at: DateTime<Utc>,
    pub id: i64,
}

impl FetchCursor {
    pub(crate) fn key(&self) -> (i16, DateTime<Utc>, i64) {
        (self.priority, self.run_at, self.id)
    }

    pub(crate) fn of(job: &FetchedJob) -> Self {
        Self {
            priority: job.priority,
            run_at: job.run_at,
            id: job.id,
        }
    }
}

/// See migration 2 for why the fetch lives in functions.
const FETCH_SQL: &str = "SELECT id, payload, attempt, max_attempts, priority, dedupe_key, run_at \
     FROM insights_queue.fetch_jobs($1, $2, $3, $4, $5)";

const FETCH_AFTER_SQL: &str = "SELECT id, payload, attempt, max_attempts, priority, dedupe_key, run_at \
     FROM insights_queue.fetch_jobs_after($1, $2, $3, $4, $5, $6, $7, $8)";

/// Leases up to `limit` jobs, in (priority, run_at, id) order, starting after `after` when
/// given.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn fetch(
    pool: &Db,
    timeout: Duration,
    queue: &str,
    limit: usize,
    worker_id: &str,
    token: i64,
    lease: Duration,
    after: Option<FetchCursor>,
) -> Result<Vec<FetchedJob>, QueueError> {
    const OP: &str = "fetch";
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let rows = pool
        .run(OP, timeout, async {
            let mut tx = pool.begin().await.map_err(op_err(OP))?;
            let q = match after {
                None => sqlx::query(FETCH_SQL),
                Some(_) => sqlx::query(FETCH_AFTER_SQL),
            }
            .persistent(false)
            .bind(queue)
            .bind(limit)
            .bind(worker_id)
            .bind(token)
            .bind(ms(lease));
            let q = match after {
                None => q,
                Some(c) => q.bind(c.priority).bind(c.run_at).bind(c.id),
            };
            let rows = q.fetch_all(&mut *tx).await.map_err(op_err(OP))?;
            tx.commit().await.map_err(op_err(OP))?;
            Ok(rows)
        })
        .await?;
    let mut jobs = rows
        .iter()
        .map(|r| {
            Ok(FetchedJob {
                id: r.try_get("id")?,
                token,
                payload: r.try_get("payload")?,
                attempt: r.try_get("attempt")?,
                max_attempts: r.try_get("max_attempts")?,
                priority: r.try_get("priority")?,
                dedupe_key: r.try_get("dedupe_key")?,
                run_at: r.try_get("run_at")?,
            })
        })
        .collect::<Result<Vec<_>, sqlx::Error>>()
        .map_err(op_err(OP))?;
    // UPDATE .. RETURNING does not keep the CTE's order.
    jobs.sort_by_key(|j| (j.priority, j.run_at, j.id));
    Ok(jobs)
}

const COMPLETE_SQL: &str = r#"
UPDATE insights_queue.jobs j
SET state = c.state,
    attempt = CASE WHEN c.refund THEN greatest(j.attempt - 1, 0) ELSE j.attempt END,
    run_at = CASE WHEN c.state IN ('retryable', 'scheduled')
                  THEN now() + c.delay_ms * interval '1 millisecond' ELSE j.run_at END,
    finalized_at = CASE WHEN c.state IN ('completed', 'discarded') THEN now() ELSE NULL END,
    errors = CASE WHEN c.error IS NULL THEN j.errors
                  ELSE jsonb_path_query_array(
                           j.errors || jsonb_build_array(jsonb_build_object(
                               'attempt', j.attempt, 'at', now(), 'error', c.error)),
                           ('$[last - ' || ($7::int - 1) || ' to last]')::jsonpath)
             END,
    locked_by = NULL, lease_token = NULL, lease_until = NULL
FROM unnest($1::bigint[], $2::bigint[], $3::text[], $4::bigint[], $5::text[], $6::bool[])
     AS c(id, token, state, delay_ms, error, refund)
WHERE j.id = c.id AND j.lease_token = c.token AND j.state = 'running'
"#;

/// Writes a batch of completions in one statement; rows whose lease was lost are left alone.
/// Returns rows updated.
pub(crate) async fn complete(
    pool: &Db,
    timeout: Duration,
    batch: &[Completion],
) -> Result<u64, QueueError> {
    const OP: &str = "complete";
    let ids: Vec<i64> = batch.iter().map(|c| c.id).collect();
    let tokens: Vec<i64> = batch.iter().map(|c| c.token).collect();
    let states: Vec<&str> = batch.iter().map(|c| c.state).collect();
    let delays: Vec<i64> = batch.iter().map(|c| ms(c.delay)).collect();
    let errors: Vec<Option<&str>> = batch.iter().map(|c| c.error.as_deref()).collect();
    let refunds: Vec<bool> = batch.iter().map(|c| c.refund).collect();
    pool.run(OP, timeout, async {
        let mut tx = pool.begin().await.map_err(op_err(OP))?;
        let done = sqlx::query(COMPLETE_SQL)
            .persistent(false)
            .bind(&ids)
            .bind(&tokens)
            .bind(&states)
            .bind(&delays)
            .bind(&errors)
            .bind(&refunds)
            .bind(defaults::ERRORS_KEPT)
            .execute(&mut *tx)
            .await
            .map_err(op_err(OP))?;
        tx.commit().await.map_err(op_err(OP))?;
        Ok(done.rows_affected())
    })
    .await
}

/// Extends the leases this worker still holds and records that the worker is alive.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn heartbeat(
    pool: &Db,
    timeout: Duration,
    worker_id: &str,
    queue: &str,
    name: &str,
    leases: &[(i64, i64)],
    lease: Duration,
) -> Result<u64, QueueError> {
    const OP: &str = "heartbeat";
    let ids: Vec<i64> = leases.iter().map(|l| l.0).collect();
    let tokens: Vec<i64> = leases.iter().map(|l| l.1).collect();
    pool.run(OP, timeout, async {
        let mut tx = pool.begin().await.map_err(op_err(OP))?;
        sqlx::query(
            "INSERT INTO insights_queue.workers (id, queue, name) VALUES ($1, $2, $3) \
             ON CONFLICT (id) DO UPDATE SET last_heartbeat = now()",
        )
        .persistent(false)
        .bind(worker_id)
        .bind(queue)
        .bind(name)
        .execute(&mut *tx)
        .await
        .map_err(op_err(OP))?;
        let mut extended = 0;
        if !ids.is_empty() {
            extended = sqlx::query(
                "UPDATE insights_queue.jobs j \
                 SET lease_until = now() + $3 * interval '1 millisecond' \
                 FROM unnest($1::bigint[], $2::bigint[]) AS l(id, token) \
                 WHERE j.id = l.id AND j.lease_token = l.token AND j.state = 'running'",
            )
            .persistent(false)
            .bind(&ids)
            .bind(&tokens)
            .bind(ms(lease))
            .execute(&mut *tx)
            .await
            .map_err(op_err(OP))?
            .rows_affected();
        }
        tx.commit().await.map_err(op_err(OP))?;
        Ok(extended)
    })
    .await
}

const RESCUE_SQL: &str = r#"
WITH expired AS (
    SELECT id FROM insights_queue.jobs
    WHERE state = 'running' AND lease_until < now()
    ORDER BY lease_until
    LIMIT $1
    FOR UPDATE SKIP LOCKED
)
UPDATE insights_queue.jobs j
SET state = CASE WHEN j.attempt >= j.max_attempts THEN 'discarded' ELSE 'retryable' END,
    run_at = now(),
    finalized_at = CASE WHEN j.attempt >= j.max_attempts THEN now() ELSE NULL END,
    errors = jsonb_path_query_array(
                 j.errors || jsonb_build_array(jsonb_build_object(
                     'attempt', j.attempt, 'at', now(),
                     'error', 'lease expired: worker ' || coalesce(j.locked_by, '?') || ' lost')),
                 ('$[last - ' || ($2::int - 1) || ' to last]')::jsonpath),
    locked_by = NULL, lease_token = NULL, lease_until = NULL
FROM expired WHERE j.id = expired.id
"#;

/// Returns expired leases (any queue) to retryable, or discards them when out of attempts.
pub(crate) async fn rescue(pool: &Db, timeout: Duration) -> Result<u64, QueueError> {
    const OP: &str = "rescue";
    pool.run(OP, timeout, async {
        let mut tx = pool.begin().await.map_err(op_err(OP))?;
        let done = sqlx::query(RESCUE_SQL)
            .persistent(false)
            .bind(defaults::RESCUE_BATCH)
            .bind(defaults::ERRORS_KEPT)
            .execute(&mut *tx)
            .await
            .map_err(op_err(OP))?;
        // Workers that stopped heartbeating long ago are only clutter for the dashboard.
        sqlx::query(
            "DELETE FROM insights_queue.workers WHERE last_heartbeat < now() - interval '1 day'",
        )
        .persistent(false)
        .execute(&mut *tx)
        .await
        .map_err(op_err(OP))?;
        tx.commit().await.map_err(op_err(OP))?;
        Ok(done.rows_affected())
    })
    .await
}

pub(crate) async fn deregister(
    pool: &Db,
    timeout: Duration,
    worker_id: &str,
) -> Result<(), QueueError> {
    const OP: &str = "deregister";
    pool.run(OP, timeout, async {
        let mut tx = pool.begin().await.map_err(op_err(OP))?;
        sqlx::query("DELETE FROM insights_queue.workers WHERE id = $1")
            .persistent(false)
            .bind(worker_id)
            .execute(&mut *tx)
            .await
            .map_err(op_err(OP))?;
        tx.commit().await.map_err(op_err(OP))?;
        Ok(())
    })
    .await
}
