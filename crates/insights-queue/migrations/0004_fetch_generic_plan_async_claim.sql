-- Two changes to the fetch functions, measured with `insights-bench queue`:
--
-- 1. The plan is made once per connection (`plan_cache_mode = force_generic_plan`) instead of
--    on every call. The rows to claim are handed to the UPDATE as an array
--    (`id = ANY (ARRAY(..))`), because with a join the generic plan walked the whole primary
--    key.
-- 2. The claim commits without waiting for its WAL flush (`synchronous_commit = off` for this
--    transaction only; pooler-safe). A server crash can lose a claim made in the last few
--    hundred ms: its jobs are then available again and run once more (at least once, as after
--    a worker crash; the lost lease fences the first run's completion). Anything the handler
--    committed since on this server flushed the claim with it. Waiting for the flush was a
--    third of an idle database's fetch latency, and every job waits for its fetch.

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
