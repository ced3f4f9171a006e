-- insights_queue.add_job: enqueue one job from SQL, with the same semantics as a push from Rust,
-- for an application's own code (Prisma's `$executeRaw`, a trigger on new messages):
-- - dedupe: ON CONFLICT DO NOTHING on the dedupe index, which only covers jobs that are not
--   finished, so a key is refused while its job is pending and reusable once it finished;
-- - a wake-up for workers that LISTEN (delivered at commit);
-- - one statement and no session state: safe through a transaction-mode pooler.
-- Returns the new job's id, or NULL when a job with the same key is still pending.
-- `p_max_attempts` has the column's default; pass the deployment's INSIGHTS_MAX_ATTEMPTS when it
-- differs.
CREATE FUNCTION insights_queue.add_job(
    p_queue text,
    p_payload jsonb,
    p_dedupe_key text DEFAULT NULL,
    p_run_at timestamptz DEFAULT NULL,
    p_priority smallint DEFAULT 0,
    p_max_attempts integer DEFAULT 8)
RETURNS bigint
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    v_id bigint;
BEGIN
    INSERT INTO insights_queue.jobs (queue, state, payload, dedupe_key, priority, run_at,
                                     max_attempts)
    VALUES (p_queue,
            CASE WHEN p_run_at > now() THEN 'scheduled' ELSE 'available' END,
            p_payload, p_dedupe_key, p_priority, coalesce(p_run_at, now()), p_max_attempts)
    ON CONFLICT DO NOTHING
    RETURNING id INTO v_id;
    IF v_id IS NOT NULL THEN
        PERFORM pg_notify('insights_queue_jobs', p_queue);
    END IF;
    RETURN v_id;
END $$;
