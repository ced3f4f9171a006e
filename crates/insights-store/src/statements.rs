//! The three domain statements, in one place, so a team can point the worker at its own tables.
//!
//! [`DomainStatements::default`] targets our schema (`migrations/`). To use your own tables
//! (for example Prisma's quoted `"Lead"` and `"Message"` with camelCase columns), build a
//! `DomainStatements` with your SQL and pass it in `StoreOptions::statements`. Each statement is
//! defined by its parameters and the columns it returns, documented on the field; names and
//! order of the returned columns must match (alias them with `AS`). Cast enums to `text`.
//!
//! Keep each one a single statement: in pooler mode it runs unnamed inside a transaction, in
//! direct mode as a cached prepared statement, and a single statement is one snapshot either way.
//! Keep the candidate query served by an index (see `migrations/0002_candidates.sql`).
//!
//! Example for a Prisma schema (abridged):
//! ```text
//! SELECT l."id" AS id FROM "Lead" l
//!  WHERE l."bookedAt" IS NOT NULL AND l."lastMessageAt" IS NOT NULL AND l."id" > $1
//!    AND NOT EXISTS (SELECT 1 FROM lead_conversation_insights i
//!                     WHERE i.lead_id = l."id" AND i.source_last_message_at >= l."lastMessageAt")
//!  ORDER BY l."id" LIMIT $2
//! ```

use std::sync::Arc;

/// SQL of the candidate query, the conversation load and the insight upsert.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainStatements {
    /// Ids of leads that need an insight: booked, with at least one message, and whose insight
    /// is missing or older than the lead's newest message. Keyset page.
    /// Parameters: `$1 bigint` (return ids greater than this), `$2 bigint` (page size).
    /// Returns: `id bigint`, ascending.
    pub candidates: Arc<str>,
    /// Leads with their newest messages, ONE row per existing lead (a missing lead has no row).
    /// Parameters: `$1 bigint[]` lead ids, `$2 bigint` maximum messages per lead.
    /// Returns: `id bigint, name text, email text, booked_at timestamptz,
    /// last_message_at timestamptz, total_message_count bigint,
    /// stored_source_last_message_at timestamptz` (the stored insight's watermark, null if none),
    /// and the newest messages oldest first as parallel arrays `message_ids bigint[],
    /// message_directions text[] ('inbound'|'outbound'), message_bodies text[],
    /// message_sent_at timestamptz[]`.
    pub load: Arc<str>,
    /// Upsert of a batch of insights that only overwrites a row with older source data and
    /// skips leads that no longer exist. Parameters (parallel arrays, one element per insight,
    /// lead ids unique): `$1 bigint[]` lead_id, `$2 text[]` summary, `$3 text[]` sentiment,
    /// `$4 text[]` objections (JSON), `$5 text[]` next_steps (JSON), `$6 text[]` model,
    /// `$7 text[]` prompt_version, `$8 timestamptz[]` source_last_message_at,
    /// `$9 bigint[]` source_message_count, `$10 bigint[]` prompt_tokens,
    /// `$11 bigint[]` completion_tokens, `$12 text[]` llm_request_id.
    /// Returns one row per input: `lead_id bigint, written bool, lead_exists bool`.
    pub upsert: Arc<str>,
}

impl Default for DomainStatements {
    fn default() -> Self {
        Self {
            candidates: Arc::from(CANDIDATES),
            load: Arc::from(LOAD),
            upsert: Arc::from(UPSERT),
        }
    }
}

// NOT EXISTS with the fresh-insight condition is "missing or stale" in one probe of the
// insights primary key per lead; the LIMIT keeps the planner on the ordered partial index.
const CANDIDATES: &str = "\
SELECT l.id
  FROM leads l
 WHERE l.booked_at IS NOT NULL
   AND l.last_message_at IS NOT NULL
   AND l.id > $1
   AND NOT EXISTS (
        SELECT 1
          FROM lead_conversation_insights i
         WHERE i.lead_id = l.id
           AND i.source_last_message_at >= l.last_message_at)
 ORDER BY l.id
 LIMIT $2";

// The total is counted only when the window is full: most threads are shorter than the window,
// and then its length is the total (saves a second pass over the lead's messages).
const LOAD: &str = "\
SELECT l.id, l.name, l.email, l.booked_at, l.last_message_at,
       CASE WHEN coalesce(cardinality(w.ids), 0) < $2 THEN coalesce(cardinality(w.ids), 0)::bigint
            ELSE (SELECT count(*) FROM messages c WHERE c.lead_id = l.id)
       END AS total_message_count,
       (SELECT i.source_last_message_at
          FROM lead_conversation_insights i
         WHERE i.lead_id = l.id) AS stored_source_last_message_at,
       coalesce(w.ids, '{}') AS message_ids,
       coalesce(w.directions, '{}') AS message_directions,
       coalesce(w.bodies, '{}') AS message_bodies,
       coalesce(w.sent_at, '{}') AS message_sent_at
  FROM leads l
  LEFT JOIN LATERAL (
        SELECT array_agg(r.id ORDER BY r.sent_at, r.id) AS ids,
               array_agg(r.direction ORDER BY r.sent_at, r.id) AS directions,
               array_agg(r.body ORDER BY r.sent_at, r.id) AS bodies,
               array_agg(r.sent_at ORDER BY r.sent_at, r.id) AS sent_at
          FROM (SELECT m.id, m.direction, m.body, m.sent_at
                  FROM messages m
                 WHERE m.lead_id = l.id
                 ORDER BY m.sent_at DESC, m.id DESC
                 LIMIT $2) r
       ) w ON true
 WHERE l.id = ANY($1::bigint[])";

// Rows are inserted in lead id order so concurrent batches lock rows in the same order (no
// deadlocks). A lead deleted since its job loaded is skipped rather than failing the batch on
// the foreign key.
const UPSERT: &str = "\
WITH input AS (
    SELECT *
      FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
                  $7::text[], $8::timestamptz[], $9::bigint[], $10::bigint[], $11::bigint[],
                  $12::text[])
        AS r(lead_id, summary, sentiment, objections, next_steps, model, prompt_version,
             source_last_message_at, source_message_count, prompt_tokens, completion_tokens,
             llm_request_id)
), written AS (
    INSERT INTO lead_conversation_insights AS i
           (lead_id, summary, sentiment, objections, next_steps, model, prompt_version,
            source_last_message_at, source_message_count, prompt_tokens, completion_tokens,
            llm_request_id)
    SELECT r.lead_id, r.summary, r.sentiment, r.objections::jsonb, r.next_steps::jsonb, r.model,
           r.prompt_version, r.source_last_message_at, r.source_message_count, r.prompt_tokens,
           r.completion_tokens, r.llm_request_id
      FROM input r
     WHERE EXISTS (SELECT 1 FROM leads l WHERE l.id = r.lead_id)
     ORDER BY r.lead_id
    ON CONFLICT (lead_id) DO UPDATE
       SET summary = excluded.summary,
           sentiment = excluded.sentiment,
           objections = excluded.objections,
           next_steps = excluded.next_steps,
           model = excluded.model,
           prompt_version = excluded.prompt_version,
           source_last_message_at = excluded.source_last_message_at,
           source_message_count = excluded.source_message_count,
           prompt_tokens = excluded.prompt_tokens,
           completion_tokens = excluded.completion_tokens,
           llm_request_id = excluded.llm_request_id,
           updated_at = now()
     WHERE i.source_last_message_at IS NULL
        OR excluded.source_last_message_at > i.source_last_message_at
    RETURNING i.lead_id
)
SELECT r.lead_id,
       (w.lead_id IS NOT NULL) AS written,
       EXISTS (SELECT 1 FROM leads l WHERE l.id = r.lead_id) AS lead_exists
  FROM input r
  LEFT JOIN written w ON w.lead_id = r.lead_id";
