//! The worker-side statements: fetch, batched completion, heartbeat, rescue. Each runs as one
//! statement in its own short transaction (see [`crate::db`]).

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::pool::PoolConnection;
use sqlx::{Postgres, Row};

use crate::db::{Db, give_back, op_err};
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
    /// When the job was enqueued (`None` when the fetch could not see it).
    pub created_at: Option<DateTime<Utc>>,
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

/// A text literal that means exactly `s` whatever `standard_conforming_strings` is: an
/// escape string (`E'..'`) with backslashes and quotes doubled. Postgres text cannot hold NUL,
/// so such a value is refused rather than quoted.
pub(crate) fn quote_text(s: &str) -> Result<String, QueueError> {
    if s.contains('\0') {
        return Err(QueueError::Invalid(format!(
            "a NUL character cannot be sent to Postgres: {s:?}"
        )));
    }
    let mut out = String::with_capacity(s.len() + 4);
    out.push_str("E'");
    for ch in s.chars() {
        match ch {
            '\'' => out.push_str("''"),
            '\\' => out.push_str("\\\\"),
            c => out.push(c),
        }
    }
    out.push('\'');
    Ok(out)
}

/// The fetch statement with every value inlined as a literal (see [`crate::db`] for why the
/// fetch is a simple-protocol statement). Numbers are formatted by Rust and quoted, so a
/// negative value is one literal; the cursor's timestamp is RFC 3339 with microseconds, the
/// precision Postgres stores, so the cursor round-trips exactly. See migration 2 for why the
/// fetch lives in functions.
#[allow(clippy::too_many_arguments)]
pub(crate) fn fetch_sql(
    queue: &str,
    limit: i64,
    worker_id: &str,
    token: i64,
    lease: Duration,
    after: Option<FetchCursor>,
) -> Result<String, QueueError> {
    // The fetch functions do not return the job's age; a scalar subquery per claimed row reads
    // it by primary key (a join would be planned against the functions' default estimate of
    // 1,000 rows and scan the whole table). It sees the statement's snapshot, so a job enqueued
    // while the statement ran has no age and is not aged.
    let head = format!(
        "SELECT f.id, f.payload, f.attempt, f.max_attempts, f.priority, f.dedupe_key, f.run_at, \
         (SELECT j.created_at FROM insights_queue.jobs j WHERE j.id = f.id) AS created_at \
         FROM insights_queue.{}({}::text, '{limit}'::bigint, {}::text, '{token}'::bigint, \
         '{}'::bigint",
        if after.is_some() {
            "fetch_jobs_after"
        } else {
            "fetch_jobs"
        },
        quote_text(queue)?,
        quote_text(worker_id)?,
        ms(lease),
    );
    let alias = "f";
    Ok(match after {
        None => format!("{head}) {alias}"),
        Some(c) => format!(
            "{head}, '{}'::smallint, '{}'::timestamptz, '{}'::bigint) {alias}",
            c.priority,
            c.run_at
                .to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
            c.id
        ),
    })
}

/// Leases up to `limit` jobs, in (priority, run_at, id) order, starting after `after` when
/// given. The connection comes back with the jobs, still checked out: the caller hands the jobs
/// to the worker first and gives the connection back after ([`give_back_within`]), so the
/// release check's round trips do not delay the jobs.
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
) -> Result<(Vec<FetchedJob>, PoolConnection<Postgres>), QueueError> {
    const OP: &str = "fetch";
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let sql = fetch_sql(queue, limit, worker_id, token, lease, after)?;
    let (rows, conn) = pool
        .run(OP, timeout, async {
            let mut conn = pool.acquire().await.map_err(op_err(OP))?;
            let rows = sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
                .fetch_all(&mut *conn)
                .await
                .map_err(op_err(OP))?;
            Ok((rows, conn))
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
                created_at: r.try_get("created_at")?,
            })
        })
        .collect::<Result<Vec<_>, sqlx::Error>>()
        .map_err(op_err(OP))?;
    // UPDATE .. RETURNING does not keep the CTE's order.
    jobs.sort_by_key(|j| (j.priority, j.run_at, j.id));
    Ok((jobs, conn))
}

/// [`give_back`] bounded by `within`: on a connection that stopped answering, the release
/// check would otherwise never end. Giving up drops the connection (it leaves the pool).
pub(crate) async fn give_back_within(conn: PoolConnection<Postgres>, within: Duration) {
    let _ = tokio::time::timeout(within, give_back(conn)).await;
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
        let mut conn = pool.acquire().await.map_err(op_err(OP))?;
        let mut tx = sqlx::Connection::begin(&mut *conn)
            .await
            .map_err(op_err(OP))?;
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
        give_back(conn).await;
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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn quote_text_escapes_quotes_and_backslashes_and_refuses_nul() {
        assert_eq!(quote_text("plain").unwrap(), "E'plain'");
        assert_eq!(quote_text(r"it's a \ path").unwrap(), r"E'it''s a \\ path'");
        assert!(quote_text("a\0b").is_err());
    }

    #[test]
    fn fetch_sql_quotes_every_value() {
        let run_at = DateTime::parse_from_rfc3339("2026-01-02T03:04:05.123456Z")
            .unwrap()
            .with_timezone(&Utc);
        let sql = fetch_sql(
            "q'x",
            50,
            "w",
            i64::MIN,
            Duration::from_secs(30),
            Some(FetchCursor {
                priority: -3,
                run_at,
                id: 7,
            }),
        )
        .unwrap();
        assert!(sql.contains("fetch_jobs_after(E'q''x'::text, '50'::bigint, E'w'::text"));
        assert!(sql.contains("'-9223372036854775808'::bigint, '30000'::bigint"));
        assert!(sql.contains("'-3'::smallint, '2026-01-02T03:04:05.123456Z'::timestamptz"));
        assert!(
            !fetch_sql("q", 1, "w", 1, Duration::ZERO, None)
                .unwrap()
                .contains("fetch_jobs_after")
        );
    }
}
