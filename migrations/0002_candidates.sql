-- The candidate query walks booked leads in id order (keyset pages) and probes the insight by
-- primary key. This partial index is that walk: only booked leads, ordered by id, carrying
-- last_message_at so the staleness test needs no heap visit for the lead.
CREATE INDEX leads_booked_id_idx ON leads (id) INCLUDE (last_message_at)
    WHERE booked_at IS NOT NULL;

-- leads.last_message_at is the freshness watermark the candidate query compares. Keep it true
-- when messages are inserted by anything (the app, a test, a backfill). Statement level with a
-- transition table, so a bulk insert costs one UPDATE, not one per row.
CREATE FUNCTION insights_bump_last_message_at() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    UPDATE leads l
       SET last_message_at = n.newest
      FROM (SELECT lead_id, max(sent_at) AS newest FROM new_messages GROUP BY lead_id) n
     WHERE l.id = n.lead_id
       AND (l.last_message_at IS NULL OR l.last_message_at < n.newest);
    RETURN NULL;
END;
$$;

CREATE TRIGGER messages_bump_last_message_at
    AFTER INSERT ON messages
    REFERENCING NEW TABLE AS new_messages
    FOR EACH STATEMENT EXECUTE FUNCTION insights_bump_last_message_at();
