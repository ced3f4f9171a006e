-- The fetch must always walk jobs_fetch_idx in order and stop after LIMIT rows. Right after a
-- bulk insert the statistics are stale (a 100k-row queue looks like 2 rows) and the planner
-- picks bitmap scan + sort over the whole backlog: 40 ms per fetch instead of 2. Planner
-- settings on the functions pin the plan without session state.
--
-- fetch_jobs_after starts the index scan after a cursor (the last key a worker fetched),
-- skipping the prefix of dead index entries that fetched rows leave behind until VACUUM:
-- without it a fetch reads ~500 buffers after 90k jobs instead of ~5.

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
