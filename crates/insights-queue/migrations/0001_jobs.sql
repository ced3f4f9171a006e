
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
