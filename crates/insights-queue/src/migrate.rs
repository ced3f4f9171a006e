//! The queue's own schema (`insights_queue`) and its migration bookkeeping. No extensions, no
//! superuser; safe to run from many processes at once (a transaction-scoped advisory lock
//! serialises them, so it also works through a transaction pooler).

use sqlx::{PgPool, Row};

use crate::db::{self, op_err};
use crate::error::QueueError;

struct Migration {
    version: i32,
    name: &'static str,
    sql: &'static str,
}

const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "jobs",
        sql: r#"
CREATE TABLE insights_queue.jobs (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    queue         text        NOT NULL,
    state         text        NOT NULL DEFAULT 'available'
                  CHECK (state IN ('available','scheduled','running','retryable',
                                   'completed','discarded','cancelled')),
    payload       jsonb       NOT NULL,
    dedupe_key    text,
    priority      smallint    NOT NULL DEFAULT 0,
    attempt       integer     NOT NULL DEFAULT 0,
    max_attempts  integer     NOT NULL DEFAULT 8 CHECK (max_attempts > 0),
    run_at        timestamptz NOT NULL DEFAULT now(),
    created_at    timestamptz NOT NULL DEFAULT now(),
    attempted_at  timestamptz,
    finalized_at  timestamptz,
    locked_by     text,
    lease_token   bigint,
    lease_until   timestamptz,
    errors        jsonb       NOT NULL DEFAULT '[]'::jsonb
) WITH (fillfactor = 70, autovacuum_vacuum_scale_factor = 0.02,
        autovacuum_vacuum_insert_scale_factor = 0.05);

-- Fetch: lowest priority value first, then oldest run_at. Partial, so finished rows leave it.
CREATE INDEX jobs_fetch_idx ON insights_queue.jobs (queue, priority, run_at, id)
    WHERE state IN ('available','scheduled','retryable');

-- Dedupe among non-terminal jobs only: a key is free again once its job finished.
CREATE UNIQUE INDEX jobs_dedupe_idx ON insights_queue.jobs (queue, dedupe_key)
    WHERE dedupe_key IS NOT NULL AND state IN ('available','scheduled','running','retryable');

-- Rescue: only running rows.
CREATE INDEX jobs_lease_idx ON insights_queue.jobs (lease_until) WHERE state = 'running';

-- Retention: only finished rows.
CREATE INDEX jobs_finalized_idx ON insights_queue.jobs (state, finalized_at)
    WHERE state IN ('completed','discarded','cancelled');

CREATE TABLE insights_queue.workers (
    id             text PRIMARY KEY,
    queue          text        NOT NULL,
    name           text        NOT NULL,
    started_at     timestamptz NOT NULL DEFAULT now(),
    last_heartbeat timestamptz NOT NULL DEFAULT now()
);

-- One notification per insert statement (not per row), for workers that LISTEN over a direct
-- URL. Nobody listens through a pooler, so sending it is harmless there.
CREATE FUNCTION insights_queue.notify_insert() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('insights_queue_jobs', q) FROM (SELECT DISTINCT queue AS q FROM new_rows) s;
    RETURN NULL;
END $$;

CREATE TRIGGER jobs_notify_insert AFTER INSERT ON insights_queue.jobs
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION insights_queue.notify_insert();
"#,
    },
    Migration {
        version: 2,
        name: "fetch_functions",
        // The fetch must always walk jobs_fetch_idx in order and stop after LIMIT rows. Right
        // after a bulk insert the statistics are stale (a 100k-row queue looks like 2 rows)
        // and the planner picks bitmap scan + sort over the whole backlog: 40 ms per fetch
        // instead of 2. Planner settings on the functions pin the plan without session state.
        //
        // fetch_jobs_after starts the index scan after a cursor (the last key a worker
        // fetched), skipping the prefix of dead index entries that fetched rows leave behind
        // until VACUUM: without it a fetch reads ~500 buffers after 90k jobs instead of ~5.
        sql: r#"
CREATE FUNCTION insights_queue.fetch_jobs(
    p_queue text, p_limit bigint, p_worker text, p_token bigint, p_lease_ms bigint)
RETURNS TABLE (id bigint, payload text, attempt integer, max_attempts integer,
               priority smallint, dedupe_key text, run_at timestamptz)
LANGUAGE plpgsql VOLATILE
SET enable_bitmapscan = off SET enable_seqscan = off SET enable_sort = off
AS $$
#variable_conflict use_column
BEGIN
    RETURN QUERY
    WITH next AS (
        SELECT c.id FROM insights_queue.jobs c
        WHERE c.queue = p_queue AND c.state IN ('available','scheduled','retryable')
          AND c.run_at <= now()
        ORDER BY c.priority, c.run_at, c.id
        LIMIT p_limit
        FOR UPDATE SKIP LOCKED
    )
    UPDATE insights_queue.jobs j
    SET state = 'running', attempt = j.attempt + 1, attempted_at = now(),
        locked_by = p_worker, lease_token = p_token,
        lease_until = now() + p_lease_ms * interval '1 millisecond'
    FROM next WHERE j.id = next.id
    RETURNING j.id, j.payload::text, j.attempt, j.max_attempts, j.priority, j.dedupe_key,
              j.run_at;
END $$;

CREATE FUNCTION insights_queue.fetch_jobs_after(
    p_queue text, p_limit bigint, p_worker text, p_token bigint, p_lease_ms bigint,
    p_priority smallint, p_run_at timestamptz, p_id bigint)
RETURNS TABLE (id bigint, payload text, attempt integer, max_attempts integer,
               priority smallint, dedupe_key text, run_at timestamptz)
LANGUAGE plpgsql VOLATILE
SET enable_bitmapscan = off SET enable_seqscan = off SET enable_sort = off
AS $$
#variable_conflict use_column
BEGIN
    RETURN QUERY
    WITH next AS (
        SELECT c.id FROM insights_queue.jobs c
        WHERE c.queue = p_queue AND c.state IN ('available','scheduled','retryable')
          AND c.run_at <= now()
          AND (c.priority, c.run_at, c.id) > (p_priority, p_run_at, p_id)
        ORDER BY c.priority, c.run_at, c.id
        LIMIT p_limit
        FOR UPDATE SKIP LOCKED
    )
    UPDATE insights_queue.jobs j
    SET state = 'running', attempt = j.attempt + 1, attempted_at = now(),
        locked_by = p_worker, lease_token = p_token,
        lease_until = now() + p_lease_ms * interval '1 millisecond'
    FROM next WHERE j.id = next.id
    RETURNING j.id, j.payload::text, j.attempt, j.max_attempts, j.priority, j.dedupe_key,
              j.run_at;
END $$;
"#,
    },
    Migration {
        version: 3,
        name: "notify_from_push",
        // The insert trigger's transition table copied every inserted row into a tuplestore
        // (spilling to temp files on a bulk push) only to find the distinct queue names; the
        // push statement knows its queue and notifies itself (see `queue.rs`), once per
        // statement that inserted anything. Nothing else inserts jobs.
        sql: r#"
DROP TRIGGER IF EXISTS jobs_notify_insert ON insights_queue.jobs;
DROP FUNCTION IF EXISTS insights_queue.notify_insert();
"#,
    },
    Migration {
        version: 4,
        name: "fetch_generic_plan_async_claim",
        // Two changes to the fetch functions, measured with `insights-bench queue`:
        //
        // 1. The plan is made once per connection (`plan_cache_mode = force_generic_plan`)
        //    instead of on every call. The rows to claim are handed to the UPDATE as an array
        //    (`id = ANY (ARRAY(..))`), because with a join the generic plan walked the whole
        //    primary key.
        // 2. The claim commits without waiting for its WAL flush (`synchronous_commit = off`
        //    for this transaction only; pooler-safe). A server crash can lose a claim made in
        //    the last few hundred ms: its jobs are then available again and run once more
        //    (at least once, as after a worker crash; the lost lease fences the first run's
        //    completion). Anything the handler committed since on this server flushed the
        //    claim with it. Waiting for the flush was a third of an idle database's fetch
        //    latency, and every job waits for its fetch.
        sql: r#"
CREATE OR REPLACE FUNCTION insights_queue.fetch_jobs(
    p_queue text, p_limit bigint, p_worker text, p_token bigint, p_lease_ms bigint)
RETURNS TABLE (id bigint, payload text, attempt integer, max_attempts integer,
               priority smallint, dedupe_key text, run_at timestamptz)
LANGUAGE plpgsql VOLATILE
SET enable_bitmapscan = off SET enable_seqscan = off SET enable_sort = off
SET plan_cache_mode = force_generic_plan
AS $$
#variable_conflict use_column
BEGIN
    PERFORM set_config('synchronous_commit', 'off', true);
    RETURN QUERY
    WITH next AS (
        SELECT c.id FROM insights_queue.jobs c
        WHERE c.queue = p_queue AND c.state IN ('available','scheduled','retryable')
          AND c.run_at <= now()
        ORDER BY c.priority, c.run_at, c.id
        LIMIT p_limit
        FOR UPDATE SKIP LOCKED
    )
    UPDATE insights_queue.jobs j
    SET state = 'running', attempt = j.attempt + 1, attempted_at = now(),
        locked_by = p_worker, lease_token = p_token,
        lease_until = now() + p_lease_ms * interval '1 millisecond'
    WHERE j.id = ANY (ARRAY(SELECT next.id FROM next))
    RETURNING j.id, j.payload::text, j.attempt, j.max_attempts, j.priority, j.dedupe_key,
              j.run_at;
END $$;

CREATE OR REPLACE FUNCTION insights_queue.fetch_jobs_after(
    p_queue text, p_limit bigint, p_worker text, p_token bigint, p_lease_ms bigint,
    p_priority smallint, p_run_at timestamptz, p_id bigint)
RETURNS TABLE (id bigint, payload text, attempt integer, max_attempts integer,
               priority smallint, dedupe_key text, run_at timestamptz)
LANGUAGE plpgsql VOLATILE
SET enable_bitmapscan = off SET enable_seqscan = off SET enable_sort = off
SET plan_cache_mode = force_generic_plan
AS $$
#variable_conflict use_column
BEGIN
    PERFORM set_config('synchronous_commit', 'off', true);
    RETURN QUERY
    WITH next AS (
        SELECT c.id FROM insights_queue.jobs c
        WHERE c.queue = p_queue AND c.state IN ('available','scheduled','retryable')
          AND c.run_at <= now()
          AND (c.priority, c.run_at, c.id) > (p_priority, p_run_at, p_id)
        ORDER BY c.priority, c.run_at, c.id
        LIMIT p_limit
        FOR UPDATE SKIP LOCKED
    )
    UPDATE insights_queue.jobs j
    SET state = 'running', attempt = j.attempt + 1, attempted_at = now(),
        locked_by = p_worker, lease_token = p_token,
        lease_until = now() + p_lease_ms * interval '1 millisecond'
    WHERE j.id = ANY (ARRAY(SELECT next.id FROM next))
    RETURNING j.id, j.payload::text, j.attempt, j.max_attempts, j.priority, j.dedupe_key,
              j.run_at;
END $$;
"#,
    },
];

/// Creates or upgrades the `insights_queue` schema. Idempotent; concurrent callers wait for
/// each other.
pub async fn migrate(pool: &PgPool) -> Result<(), QueueError> {
    const OP: &str = "migrate";
    // DDL can wait on locks held by running workers; give it more room than a normal call.
    let timeout = std::time::Duration::from_secs(60);
    db::with_timeout(OP, timeout, async {
        let mut tx = pool.begin().await.map_err(op_err(OP))?;
        // The lock key is an arbitrary constant shared by every caller; the lock is released at
        // commit, so nothing outlives the transaction (pooler-safe).
        sqlx::raw_sql(
            "SELECT pg_advisory_xact_lock(1896814939470127461);
             CREATE SCHEMA IF NOT EXISTS insights_queue;
             CREATE TABLE IF NOT EXISTS insights_queue.schema_migrations (
                 version integer PRIMARY KEY,
                 name text NOT NULL,
                 applied_at timestamptz NOT NULL DEFAULT now());",
        )
        .execute(&mut *tx)
        .await
        .map_err(op_err(OP))?;
        let applied: Vec<i32> = sqlx::query("SELECT version FROM insights_queue.schema_migrations")
            .persistent(false)
            .fetch_all(&mut *tx)
            .await
            .map_err(op_err(OP))?
            .iter()
            .map(|r| r.try_get::<i32, _>(0))
            .collect::<Result<_, _>>()
            .map_err(op_err(OP))?;
        for m in MIGRATIONS {
            if applied.contains(&m.version) {
                continue;
            }
            sqlx::raw_sql(m.sql)
                .execute(&mut *tx)
                .await
                .map_err(op_err(OP))?;
            sqlx::query(
                "INSERT INTO insights_queue.schema_migrations (version, name) VALUES ($1, $2)",
            )
            .persistent(false)
            .bind(m.version)
            .bind(m.name)
            .execute(&mut *tx)
            .await
            .map_err(op_err(OP))?;
        }
        tx.commit().await.map_err(op_err(OP))?;
        Ok(())
    })
    .await
}
