//! A test database with the schema, seeding, the pipeline assertions every suite makes, raw
//! queue access (jobs inserted or inspected straight in SQL) and backend sampling
//! (`pg_stat_activity`), all through the harness's own small pool, whose connections are
//! labelled [`HARNESS_APPLICATION_NAME`] and left out of every sample.

use std::collections::BTreeMap;
use std::str::FromStr;

use anyhow::{Context, bail};
use chrono::{DateTime, Utc};
use insights_core::INSIGHTS_QUEUE;
use insights_store::SeedReport;
use insights_testkit::TestDb;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{PgPool, Row};

use crate::defaults::{
    HARNESS_ACQUIRE_TIMEOUT, HARNESS_APPLICATION_NAME, HARNESS_POOL_MAX, HARNESS_STATEMENT_TIMEOUT,
};
use crate::env::WorkerEnv;

/// A database the pipeline runs on.
#[derive(Debug)]
pub struct E2eDb {
    /// Present when this value created the database (it is dropped with it).
    owned: Option<TestDb>,
    /// Name of the database.
    pub name: String,
    /// Direct URL (not through any pooler).
    pub url: String,
    /// The harness's pool (direct, [`HARNESS_POOL_MAX`] connections).
    pub pool: PgPool,
}

/// Backends of the test database at one instant (harness connections excluded).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BackendSample {
    pub total: u64,
    pub active: u64,
    /// `idle in transaction` and `idle in transaction (aborted)`.
    pub idle_in_transaction: u64,
    /// Backends inside a transaction in any state (`xact_start` set).
    pub in_transaction: u64,
}

/// One job row, read straight from `insights_queue.jobs`.
#[derive(Debug, Clone)]
pub struct JobRow {
    pub id: i64,
    pub state: String,
    pub attempt: i32,
    pub max_attempts: i32,
    pub payload: serde_json::Value,
    pub dedupe_key: Option<String>,
    pub run_at: DateTime<Utc>,
    /// Every recorded error message, oldest first.
    pub errors: Vec<String>,
}

impl JobRow {
    pub fn last_error(&self) -> Option<&str> {
        self.errors.last().map(String::as_str)
    }
}

/// The outcome of [`E2eDb::check_pipeline`]: every booked lead with messages should have exactly
/// one insight, written from its newest message and its full message count.
#[derive(Debug, Clone, Default)]
pub struct PipelineCheck {
    /// Booked leads with at least one message.
    pub expected: u64,
    pub fresh: u64,
    pub missing: Vec<i64>,
    /// Insight present but built from older messages than the lead's newest.
    pub stale: Vec<i64>,
    /// Insight rows for leads that should not have one (not booked or no messages).
    pub unexpected: Vec<i64>,
}

impl PipelineCheck {
    pub fn is_complete(&self) -> bool {
        self.missing.is_empty()
            && self.stale.is_empty()
            && self.unexpected.is_empty()
            && self.fresh == self.expected
    }
}

impl E2eDb {
    /// A fresh database on the local server (`insights_testkit::TestDb`), migrated.
    pub async fn create(label: &str) -> anyhow::Result<Self> {
        let me = Self::create_empty(label).await?;
        me.migrate().await?;
        Ok(me)
    }

    /// A fresh, empty database (for tests that migrate it themselves, e.g. through a pooler).
    pub async fn create_empty(label: &str) -> anyhow::Result<Self> {
        let db = TestDb::create(label).await?;
        let mut me = Self::attach(&db.url, &db.name).await?;
        me.owned = Some(db);
        Ok(me)
    }

    /// An existing database (for example on a throwaway cluster); not dropped, not migrated.
    /// `url` must be direct: the harness sets `statement_timeout` at start-up, which
    /// transaction poolers refuse.
    pub async fn attach(url: &str, name: &str) -> anyhow::Result<Self> {
        let opts = PgConnectOptions::from_str(url)
            .context("parsing the test database URL")?
            .application_name(HARNESS_APPLICATION_NAME)
            .options([(
                "statement_timeout",
                HARNESS_STATEMENT_TIMEOUT.as_millis().to_string(),
            )]);
        let pool = PgPoolOptions::new()
            .max_connections(HARNESS_POOL_MAX)
            .acquire_timeout(HARNESS_ACQUIRE_TIMEOUT)
            .connect_lazy_with(opts);
        Ok(Self {
            owned: None,
            name: name.to_owned(),
            url: url.to_owned(),
            pool,
        })
    }

    /// Domain and queue migrations, through the library (what `insights migrate` runs).
    pub async fn migrate(&self) -> anyhow::Result<()> {
        let settings = WorkerEnv::new(&self.url, "http://127.0.0.1:9/v1").settings()?;
        insights_worker::admin::migrate(&settings, &insights_core::Profile::builtin()?)
            .await
            .map_err(|e| anyhow::anyhow!("migrating {}: {e}", self.name))
    }

    /// Deterministic synthetic leads (what `insights seed` runs).
    pub async fn seed(&self, leads: usize, seed: u64) -> anyhow::Result<SeedReport> {
        insights_store::seed(&self.pool, leads, seed)
            .await
            .map_err(|e| anyhow::anyhow!("seeding {leads} leads: {e}"))
    }

    /// Marks every lead booked (seeding books about 9 in 10), so every seeded lead is expected
    /// to end with an insight. Returns the number of leads changed.
    pub async fn book_all(&self) -> anyhow::Result<u64> {
        let r = sqlx::query("UPDATE leads SET booked_at = now() WHERE booked_at IS NULL")
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected())
    }

    /// Ids of leads the candidate query would return now (booked, with messages, insight
    /// missing or stale), computed independently of the store's statement.
    pub async fn candidate_ids(&self) -> anyhow::Result<Vec<i64>> {
        let rows = sqlx::query(
            "SELECT l.id FROM leads l
              WHERE l.booked_at IS NOT NULL
                AND EXISTS (SELECT 1 FROM messages m WHERE m.lead_id = l.id)
                AND NOT EXISTS (SELECT 1 FROM lead_conversation_insights i
                                 WHERE i.lead_id = l.id
                                   AND i.source_last_message_at >=
                                       (SELECT max(sent_at) FROM messages m WHERE m.lead_id = l.id))
              ORDER BY l.id",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(|r| r.get::<i64, _>(0)).collect())
    }

    /// Booked leads with at least one message: the leads that must end with an insight.
    pub async fn expected_leads(&self) -> anyhow::Result<Vec<i64>> {
        let rows = sqlx::query(
            "SELECT l.id FROM leads l WHERE l.booked_at IS NOT NULL
                AND EXISTS (SELECT 1 FROM messages m WHERE m.lead_id = l.id) ORDER BY l.id",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(|r| r.get::<i64, _>(0)).collect())
    }

    /// Compares insights with the conversations they should describe.
    pub async fn check_pipeline(&self) -> anyhow::Result<PipelineCheck> {
        let rows = sqlx::query(
            "WITH conv AS (
                SELECT l.id, l.booked_at IS NOT NULL AS booked,
                       max(m.sent_at) AS newest, count(m.id) AS n
                  FROM leads l LEFT JOIN messages m ON m.lead_id = l.id
                 GROUP BY l.id)
             SELECT c.id, c.booked AND c.n > 0 AS expected,
                    i.lead_id IS NOT NULL AS has_insight,
                    i.source_last_message_at = c.newest
                        AND i.source_message_count = c.n AS fresh
               FROM conv c LEFT JOIN lead_conversation_insights i ON i.lead_id = c.id
              ORDER BY c.id",
        )
        .fetch_all(&self.pool)
        .await?;
        let mut check = PipelineCheck::default();
        for r in rows {
            let id: i64 = r.get("id");
            let expected: bool = r.get("expected");
            let has: bool = r.get("has_insight");
            let fresh: Option<bool> = r.get("fresh");
            match (expected, has) {
                (true, false) => check.missing.push(id),
                (true, true) if fresh == Some(true) => check.fresh += 1,
                (true, true) => check.stale.push(id),
                (false, true) => check.unexpected.push(id),
                (false, false) => {}
            }
            if expected {
                check.expected += 1;
            }
        }
        Ok(check)
    }

    /// Fails unless [`Self::check_pipeline`] is complete and no job is left running or waiting.
    pub async fn assert_pipeline_done(&self) -> anyhow::Result<PipelineCheck> {
        let check = self.check_pipeline().await?;
        if !check.is_complete() {
            bail!(
                "pipeline incomplete: {} of {} fresh; missing {:?}; stale {:?}; unexpected {:?}",
                check.fresh,
                check.expected,
                first(&check.missing),
                first(&check.stale),
                first(&check.unexpected)
            );
        }
        self.assert_no_pending_jobs().await?;
        Ok(check)
    }

    /// Fails if any job is running, available, scheduled or retryable.
    pub async fn assert_no_pending_jobs(&self) -> anyhow::Result<()> {
        let counts = self.job_counts().await?;
        let pending: u64 = ["running", "available", "scheduled", "retryable"]
            .iter()
            .map(|s| counts.get(*s).copied().unwrap_or(0))
            .sum();
        if pending > 0 {
            bail!("jobs left unfinished: {counts:?}");
        }
        Ok(())
    }

    /// Jobs of the insights queue by state (states with no job are absent).
    pub async fn job_counts(&self) -> anyhow::Result<BTreeMap<String, u64>> {
        let rows = sqlx::query(
            "SELECT state, count(*) FROM insights_queue.jobs WHERE queue = $1 GROUP BY state",
        )
        .bind(INSIGHTS_QUEUE)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .map(|r| {
                (
                    r.get::<String, _>(0),
                    u64::try_from(r.get::<i64, _>(1)).unwrap_or(0),
                )
            })
            .collect())
    }

    /// Jobs of the insights queue (optionally one state), by id.
    pub async fn jobs(&self, state: Option<&str>) -> anyhow::Result<Vec<JobRow>> {
        let rows = sqlx::query(
            "SELECT id, state, attempt, max_attempts, payload, dedupe_key, run_at,
                    ARRAY(SELECT e ->> 'error' FROM jsonb_array_elements(errors) e) AS errors
               FROM insights_queue.jobs
              WHERE queue = $1 AND ($2::text IS NULL OR state = $2)
              ORDER BY id",
        )
        .bind(INSIGHTS_QUEUE)
        .bind(state)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .map(|r| JobRow {
                id: r.get("id"),
                state: r.get("state"),
                attempt: r.get("attempt"),
                max_attempts: r.get("max_attempts"),
                payload: r.get("payload"),
                dedupe_key: r.get("dedupe_key"),
                run_at: r.get("run_at"),
                errors: r
                    .get::<Vec<Option<String>>, _>("errors")
                    .into_iter()
                    .flatten()
                    .collect(),
            })
            .collect())
    }

    /// The job of one lead (the newest one when there are several).
    pub async fn job_for_lead(&self, lead_id: i64) -> anyhow::Result<Option<JobRow>> {
        Ok(self
            .jobs(None)
            .await?
            .into_iter()
            .rfind(|j| j.payload.get("lead_id").and_then(|v| v.as_i64()) == Some(lead_id)))
    }

    /// Inserts a job straight into the queue, bypassing the producer (malformed payloads).
    pub async fn insert_raw_job(&self, payload: serde_json::Value) -> anyhow::Result<i64> {
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO insights_queue.jobs (queue, payload) VALUES ($1, $2) RETURNING id",
        )
        .bind(INSIGHTS_QUEUE)
        .bind(payload)
        .fetch_one(&self.pool)
        .await?;
        Ok(id)
    }

    /// A lead with the given messages (`(inbound?, body)`), sent one minute apart ending now.
    pub async fn insert_lead(
        &self,
        id: i64,
        booked: bool,
        messages: &[(bool, String)],
    ) -> anyhow::Result<()> {
        sqlx::query(
            "INSERT INTO leads (id, name, email, booked_at)
             VALUES ($1, 'E2E Lead ' || $1, 'lead' || $1 || '@e2e.test',
                     CASE WHEN $2 THEN now() ELSE NULL END)",
        )
        .bind(id)
        .bind(booked)
        .execute(&self.pool)
        .await?;
        let n = messages.len() as i64;
        for (i, (inbound, body)) in messages.iter().enumerate() {
            sqlx::query(
                "INSERT INTO messages (lead_id, direction, body, sent_at)
                 VALUES ($1, $2, $3, now() - make_interval(mins => $4::int))",
            )
            .bind(id)
            .bind(if *inbound { "inbound" } else { "outbound" })
            .bind(body)
            .bind(i32::try_from(n - 1 - i as i64).unwrap_or(0))
            .execute(&self.pool)
            .await?;
        }
        Ok(())
    }

    /// Adds a newer message to a lead and bumps `leads.last_message_at` (as an app would).
    /// Returns its `sent_at`.
    pub async fn add_message(&self, lead_id: i64, body: &str) -> anyhow::Result<DateTime<Utc>> {
        let mut tx = self.pool.begin().await?;
        let newest: Option<DateTime<Utc>> =
            sqlx::query_scalar("SELECT max(sent_at) FROM messages WHERE lead_id = $1")
                .bind(lead_id)
                .fetch_one(&mut *tx)
                .await?;
        let at = newest
            .map_or_else(Utc::now, |t| t + chrono::Duration::seconds(1))
            .max(Utc::now());
        sqlx::query(
            "INSERT INTO messages (lead_id, direction, body, sent_at) VALUES ($1, 'inbound', $2, $3)",
        )
        .bind(lead_id)
        .bind(body)
        .bind(at)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "UPDATE leads SET last_message_at = GREATEST(last_message_at, $2) WHERE id = $1",
        )
        .bind(lead_id)
        .bind(at)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        // Postgres keeps microseconds.
        Ok(DateTime::from_timestamp_micros(at.timestamp_micros()).unwrap_or(at))
    }

    pub async fn delete_lead(&self, lead_id: i64) -> anyhow::Result<()> {
        sqlx::query("DELETE FROM leads WHERE id = $1")
            .bind(lead_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// `source_last_message_at` of a lead's insight.
    pub async fn insight_source(&self, lead_id: i64) -> anyhow::Result<Option<DateTime<Utc>>> {
        Ok(sqlx::query_scalar(
            "SELECT source_last_message_at FROM lead_conversation_insights WHERE lead_id = $1",
        )
        .bind(lead_id)
        .fetch_optional(&self.pool)
        .await?)
    }

    pub async fn insight_count(&self) -> anyhow::Result<u64> {
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM lead_conversation_insights")
            .fetch_one(&self.pool)
            .await?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    /// From now on, records every write of an insight (insert or overwrite) with the LLM
    /// request it came from. The insights table keeps one row per lead, so only a log can show
    /// a lead written twice or one LLM answer written to two leads.
    pub async fn record_insight_writes(&self) -> anyhow::Result<()> {
        sqlx::raw_sql(
            "CREATE TABLE IF NOT EXISTS insight_writes (
                 lead_id        bigint      NOT NULL,
                 llm_request_id text,
                 at             timestamptz NOT NULL DEFAULT clock_timestamp()
             );
             CREATE OR REPLACE FUNCTION record_insight_write() RETURNS trigger
             LANGUAGE plpgsql AS $$
             BEGIN
                 INSERT INTO insight_writes (lead_id, llm_request_id)
                 VALUES (NEW.lead_id, NEW.llm_request_id);
                 RETURN NULL;
             END $$;
             CREATE OR REPLACE TRIGGER record_insight_write
                 AFTER INSERT OR UPDATE ON lead_conversation_insights
                 FOR EACH ROW EXECUTE FUNCTION record_insight_write();",
        )
        .execute(&self.pool)
        .await
        .context("cannot install the insight write log")?;
        Ok(())
    }

    /// The LLM request id of every insight write recorded since [`Self::record_insight_writes`],
    /// per lead, oldest first (`None`: written without one).
    pub async fn insight_writes(&self) -> anyhow::Result<BTreeMap<i64, Vec<Option<String>>>> {
        let rows = sqlx::query("SELECT lead_id, llm_request_id FROM insight_writes ORDER BY at")
            .fetch_all(&self.pool)
            .await
            .context("cannot read the insight write log")?;
        let mut writes: BTreeMap<i64, Vec<Option<String>>> = BTreeMap::new();
        for row in rows {
            writes
                .entry(row.get("lead_id"))
                .or_default()
                .push(row.get("llm_request_id"));
        }
        Ok(writes)
    }

    /// Backends of this database now, harness connections excluded.
    pub async fn backends(&self) -> anyhow::Result<BackendSample> {
        let row = sqlx::query(
            "SELECT count(*) AS total,
                    count(*) FILTER (WHERE state = 'active') AS active,
                    count(*) FILTER (WHERE state LIKE 'idle in transaction%') AS idle_in_tx,
                    count(*) FILTER (WHERE xact_start IS NOT NULL) AS in_tx
               FROM pg_stat_activity
              WHERE datname = $1 AND backend_type = 'client backend'
                AND application_name IS DISTINCT FROM $2",
        )
        .bind(&self.name)
        .bind(HARNESS_APPLICATION_NAME)
        .fetch_one(&self.pool)
        .await?;
        let n = |c: &str| u64::try_from(row.get::<i64, _>(c)).unwrap_or(0);
        Ok(BackendSample {
            total: n("total"),
            active: n("active"),
            idle_in_transaction: n("idle_in_tx"),
            in_transaction: n("in_tx"),
        })
    }
}

fn first(ids: &[i64]) -> String {
    let shown: Vec<String> = ids.iter().take(10).map(i64::to_string).collect();
    if ids.len() > 10 {
        format!("[{}, … {} in all]", shown.join(", "), ids.len())
    } else {
        format!("[{}]", shown.join(", "))
    }
}
