//! The three domain statements, in one place: the built-in ones for this project's tables
//! (`migrations/`), or a team's own from its profile (`insights_core::profile`, whose module docs
//! give the contract every statement follows: parameters, returned columns, semantics).
//!
//! Keep each one a single statement: in pooler mode it runs unnamed inside a transaction, in
//! direct mode as a cached prepared statement, and a single statement is one snapshot either way.
//! Keep the candidate query served by an index (see `migrations/0002_candidates.sql`).

use std::sync::Arc;

use insights_core::LeadKeyKind;
use insights_core::profile::Statements;

/// SQL of the candidate query, the conversation load and the insight upsert, and the SQL type of
/// the lead keys they take and return.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainStatements {
    pub lead_key: LeadKeyKind,
    /// Keys of leads that need an insight, ascending; a keyset page.
    pub candidates: Arc<str>,
    /// Leads with their newest messages, ONE row per existing lead.
    pub load: Arc<str>,
    /// Writes a batch of validated insight documents; only newer source data overwrites.
    pub upsert: Arc<str>,
}

impl Default for DomainStatements {
    fn default() -> Self {
        Self {
            lead_key: LeadKeyKind::Bigint,
            candidates: Arc::from(CANDIDATES),
            load: Arc::from(LOAD),
            upsert: Arc::from(UPSERT),
        }
    }
}

impl DomainStatements {
    /// A profile's statements; `None` (the built-in profile) gives this project's.
    pub fn from_profile(statements: Option<&Statements>) -> Self {
        match statements {
            None => Self::default(),
            Some(s) => Self {
                lead_key: s.lead_key,
                candidates: Arc::from(s.candidates.as_str()),
                load: Arc::from(s.load.as_str()),
                upsert: Arc::from(s.upsert.as_str()),
            },
        }
    }
}

// NOT EXISTS with the fresh-insight condition is "missing or stale" in one probe of the
// insights primary key per lead; the LIMIT keeps the planner on the ordered partial index.
const CANDIDATES: &str = "\
SELECT l.id AS lead_key
  FROM leads l
 WHERE l.booked_at IS NOT NULL
   AND l.last_message_at IS NOT NULL
   AND l.id > coalesce($1, -9223372036854775808)
   AND NOT EXISTS (
        SELECT 1
          FROM lead_conversation_insights i
         WHERE i.lead_id = l.id
           AND i.source_last_message_at >= l.last_message_at)
 ORDER BY l.id
 LIMIT $2";

// The total is counted only when the window is full: most threads are shorter than the window,
// and then its length is the total (saves a second pass over the lead's messages). The lead and
// message objects carry what the built-in prompt template reads.
const LOAD: &str = "\
SELECT l.id AS lead_key,
       l.booked_at IS NOT NULL AS eligible,
       jsonb_build_object(
           'id', l.id,
           'name', coalesce(l.name, ''),
           'email', coalesce(l.email, ''),
           'booked_at', l.booked_at,
           'last_message_at', l.last_message_at) AS lead,
       coalesce(w.messages, '[]'::jsonb) AS messages,
       CASE WHEN coalesce(w.loaded, 0) < $2 THEN coalesce(w.loaded, 0)
            ELSE (SELECT count(*) FROM messages c WHERE c.lead_id = l.id)
       END AS total_message_count,
       greatest(w.newest, l.last_message_at) AS source_last_message_at,
       (SELECT i.source_last_message_at
          FROM lead_conversation_insights i
         WHERE i.lead_id = l.id) AS stored_source_last_message_at
  FROM leads l
  LEFT JOIN LATERAL (
        SELECT jsonb_agg(
                   jsonb_build_object(
                       'id', r.id,
                       'direction', r.direction,
                       'body', r.body,
                       'sent_at', r.sent_at)
                   ORDER BY r.sent_at, r.id) AS messages,
               count(*) AS loaded,
               max(r.sent_at) AS newest
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
      FROM unnest($1::bigint[], $2::jsonb[], $3::text[], $4::text[], $5::timestamptz[],
                  $6::bigint[], $7::bigint[], $8::bigint[], $9::text[])
        AS r(lead_key, insight, model, prompt_version, source_last_message_at,
             source_message_count, prompt_tokens, completion_tokens, llm_request_id)
), written AS (
    INSERT INTO lead_conversation_insights AS i
           (lead_id, summary, sentiment, objections, next_steps, model, prompt_version,
            source_last_message_at, source_message_count, prompt_tokens, completion_tokens,
            llm_request_id)
    SELECT r.lead_key, r.insight ->> 'summary', r.insight ->> 'sentiment',
           r.insight -> 'objections', r.insight -> 'next_steps', r.model, r.prompt_version,
           r.source_last_message_at, r.source_message_count, r.prompt_tokens,
           r.completion_tokens, r.llm_request_id
      FROM input r
     WHERE EXISTS (SELECT 1 FROM leads l WHERE l.id = r.lead_key)
     ORDER BY r.lead_key
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
SELECT r.lead_key,
       (w.lead_id IS NOT NULL) AS written,
       EXISTS (SELECT 1 FROM leads l WHERE l.id = r.lead_key) AS lead_exists
  FROM input r
  LEFT JOIN written w ON w.lead_id = r.lead_key";
