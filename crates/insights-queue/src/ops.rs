//! Operations API used by the CLI and the dashboard: counts, listings, one job, retry, cancel,
//! retention.

use std::time::Duration;

use sqlx::Row;
use sqlx::postgres::PgRow;

use crate::db::op_err;
use crate::error::QueueError;
use crate::job::{JobDetail, JobError, JobState, JobSummary, StateCounts};
use crate::queue::Queue;

const SUMMARY_COLUMNS: &str = "id, queue, state, attempt, max_attempts, priority, dedupe_key, \
     run_at, created_at, finalized_at, errors -> -1 ->> 'error' AS last_error";

fn parse_state(row: &PgRow) -> Result<JobState, sqlx::Error> {
    let s: String = row.try_get("state")?;
    s.parse().map_err(|e: String| sqlx::Error::Decode(e.into()))
}

pub(crate) fn summary_from_row(row: &PgRow) -> Result<JobSummary, sqlx::Error> {
    Ok(JobSummary {
        id: row.try_get("id")?,
        queue: row.try_get("queue")?,
        state: parse_state(row)?,
        attempt: row.try_get("attempt")?,
        max_attempts: row.try_get("max_attempts")?,
        priority: row.try_get("priority")?,
        dedupe_key: row.try_get("dedupe_key")?,
        run_at: row.try_get("run_at")?,
        created_at: row.try_get("created_at")?,
        finalized_at: row.try_get("finalized_at")?,
        last_error: row.try_get("last_error")?,
    })
}

fn duration_ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

impl Queue {
    /// Number of jobs per state in `queue`.
    pub async fn counts(&self, queue: &str) -> Result<StateCounts, QueueError> {
        const OP: &str = "counts";
        let pool = &self.inner.db;
        let sql = "SELECT state, count(*) AS n FROM insights_queue.jobs WHERE queue = $1 \
                   GROUP BY state";
        let rows = pool
            .fetch_all_tx(
                OP,
                self.inner.config.statement_timeout,
                sqlx::query(sql).bind(queue),
            )
            .await?;
        let mut counts = StateCounts::default();
        for row in rows {
            let state = parse_state(&row).map_err(op_err(OP))?;
            let n: i64 = row.try_get("n").map_err(op_err(OP))?;
            counts.set(state, u64::try_from(n).unwrap_or(0));
        }
        Ok(counts)
    }

    /// Jobs of `queue` (optionally in one state), newest first.
    pub async fn list(
        &self,
        queue: &str,
        state: Option<JobState>,
        limit: u32,
        offset: u32,
    ) -> Result<Vec<JobSummary>, QueueError> {
        const OP: &str = "list";
        let pool = &self.inner.db;
        let sql = format!(
            "SELECT {SUMMARY_COLUMNS} FROM insights_queue.jobs \
             WHERE queue = $1 AND ($2::text IS NULL OR state = $2) \
             ORDER BY id DESC LIMIT $3 OFFSET $4"
        );
        let rows = pool
            .fetch_all_tx(
                OP,
                self.inner.config.statement_timeout,
                sqlx::query(sqlx::AssertSqlSafe(sql))
                    .bind(queue)
                    .bind(state.map(JobState::as_str))
                    .bind(i64::from(limit))
                    .bind(i64::from(offset)),
            )
            .await?;
        rows.iter()
            .map(summary_from_row)
            .collect::<Result<_, _>>()
            .map_err(op_err(OP))
    }

    /// One job with its payload and recorded errors.
    pub async fn show(&self, id: i64) -> Result<Option<JobDetail>, QueueError> {
        const OP: &str = "show";
        let pool = &self.inner.db;
        let sql = "SELECT id, queue, state, payload, attempt, max_attempts, priority, dedupe_key, \
                   run_at, created_at, attempted_at, finalized_at, locked_by, lease_until, errors \
                   FROM insights_queue.jobs WHERE id = $1";
        let row = pool
            .fetch_optional_tx(
                OP,
                self.inner.config.statement_timeout,
                sqlx::query(sql).bind(id),
            )
            .await?;
        let Some(row) = row else { return Ok(None) };
        let detail = (|| -> Result<JobDetail, sqlx::Error> {
            let errors: serde_json::Value = row.try_get("errors")?;
            let errors: Vec<JobError> =
                serde_json::from_value(errors).map_err(|e| sqlx::Error::Decode(e.into()))?;
            Ok(JobDetail {
                id: row.try_get("id")?,
                queue: row.try_get("queue")?,
                state: parse_state(&row)?,
                payload: row.try_get("payload")?,
                attempt: row.try_get("attempt")?,
                max_attempts: row.try_get("max_attempts")?,
                priority: row.try_get("priority")?,
                dedupe_key: row.try_get("dedupe_key")?,
                run_at: row.try_get("run_at")?,
                created_at: row.try_get("created_at")?,
                attempted_at: row.try_get("attempted_at")?,
                finalized_at: row.try_get("finalized_at")?,
                locked_by: row.try_get("locked_by")?,
                lease_until: row.try_get("lease_until")?,
                errors,
            })
        })()
        .map_err(op_err(OP))?;
        Ok(Some(detail))
    }

    /// Makes a discarded (or cancelled) job available again with a fresh attempt budget.
    /// Returns false when the job is not in such a state, or when a live job now holds its
    /// dedupe key.
    pub async fn retry(&self, id: i64) -> Result<bool, QueueError> {
        const OP: &str = "retry";
        let pool = &self.inner.db;
        let res = pool
            .run(OP, self.inner.config.statement_timeout, async {
                let mut tx = pool.begin().await.map_err(op_err(OP))?;
                let res = sqlx::query(
                "UPDATE insights_queue.jobs SET state = 'available', attempt = 0, run_at = now(), \
                 finalized_at = NULL WHERE id = $1 AND state IN ('discarded', 'cancelled')",
            )
            .persistent(false)
            .bind(id)
            .execute(&mut *tx)
            .await;
                match res {
                    Ok(done) => {
                        tx.commit().await.map_err(op_err(OP))?;
                        Ok(done.rows_affected() == 1)
                    }
                    Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("23505") => {
                        tx.rollback().await.map_err(op_err(OP))?;
                        Ok(false)
                    }
                    Err(e) => Err(op_err(OP)(e)),
                }
            })
            .await?;
        Ok(res)
    }

    /// Cancels a job that has not started (available, scheduled or retryable).
    pub async fn cancel(&self, id: i64) -> Result<bool, QueueError> {
        const OP: &str = "cancel";
        let pool = &self.inner.db;
        pool.execute_tx(
            OP,
            self.inner.config.statement_timeout,
            sqlx::query(
                "UPDATE insights_queue.jobs SET state = 'cancelled', finalized_at = now() \
                 WHERE id = $1 AND state IN ('available', 'scheduled', 'retryable')",
            )
            .bind(id),
        )
        .await
        .map(|n| n == 1)
    }

    /// Deletes completed jobs finished more than `completed_older_than` ago, and discarded or
    /// cancelled ones finished more than `discarded_older_than` ago. Returns rows deleted.
    pub async fn prune(
        &self,
        completed_older_than: Duration,
        discarded_older_than: Duration,
    ) -> Result<u64, QueueError> {
        const OP: &str = "prune";
        let pool = &self.inner.db;
        pool.execute_tx(
            OP,
            self.inner.config.statement_timeout,
            sqlx::query(
                "DELETE FROM insights_queue.jobs WHERE \
                 (state = 'completed' AND finalized_at < now() - $1 * interval '1 millisecond') OR \
                 (state IN ('discarded', 'cancelled') \
                  AND finalized_at < now() - $2 * interval '1 millisecond')",
            )
            .bind(duration_ms(completed_older_than))
            .bind(duration_ms(discarded_older_than)),
        )
        .await
    }
}
