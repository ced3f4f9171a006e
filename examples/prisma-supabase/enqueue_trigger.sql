-- Optional: enqueue a booked lead's insight job the moment a message for it is stored, so
-- insights follow conversations within seconds. `insights enqueue` on a schedule stays the
-- safety net: it catches what this trigger cannot see (a lead booked after its last message, a
-- message stored while the lead's job was already running, a queue that was down).
--
-- Needs the queue in the same database (its migrations applied: `insights migrate`, or the
-- queue's migrations alone) and runs inside the app's own transaction, so the job becomes
-- visible exactly when the message does, and a rolled-back message enqueues nothing.
--
-- One job per lead, whatever the burst: the trigger fires once per INSERT statement and calls
-- `insights_queue.add_job` once per booked lead among the new rows; add_job refuses a second
-- job for a lead whose job is still pending (dedupe key `lead:<id>`), so 50 messages in 50
-- statements also leave one pending job. Two transactions adding messages to the same lead at
-- the same time meet on that key: the second waits for the first to commit, then enqueues
-- nothing. Safe through a transaction-mode pooler: no session state.
--
-- Apply it with the migrations of your app (Prisma: paste into a migration made with
-- `prisma migrate dev --create-only`), or once with psql. To remove it:
--   DROP TRIGGER "Message_enqueue_insight" ON "Message";
--   DROP FUNCTION insights_enqueue_on_message();

CREATE OR REPLACE FUNCTION insights_enqueue_on_message() RETURNS trigger
LANGUAGE plpgsql
AS $$
BEGIN
    -- The payload and dedupe key are the worker's: {"lead_id": <key>}, 'lead:<key>', on the
    -- queue 'lead-insights'. Keys in order, so concurrent bursts take the dedupe locks in the
    -- same order.
    PERFORM insights_queue.add_job('lead-insights',
                                   jsonb_build_object('lead_id', l."id"),
                                   'lead:' || l."id")
       FROM "Lead" l
      WHERE l."id" IN (SELECT DISTINCT n."leadId" FROM new_messages n)
        AND l."bookedAt" IS NOT NULL
      ORDER BY l."id";
    RETURN NULL;
END $$;

CREATE OR REPLACE TRIGGER "Message_enqueue_insight"
    AFTER INSERT ON "Message"
    REFERENCING NEW TABLE AS new_messages
    FOR EACH STATEMENT
    EXECUTE FUNCTION insights_enqueue_on_message();
