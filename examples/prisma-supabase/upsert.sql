-- Writes a batch of validated insights, mapping the insight document's fields to columns.
-- Only newer source data overwrites a stored insight; leads deleted since their load are
-- skipped. Rows are inserted in key order so concurrent batches lock in the same order.
-- $1 text[] lead ids, $2 jsonb[] insights, $3 text[] model, $4 text[] prompt version,
-- $5 timestamptz[] source_last_message_at, $6 bigint[] source_message_count,
-- $7 bigint[] prompt_tokens, $8 bigint[] completion_tokens, $9 text[] llm_request_id.
WITH input AS (
    SELECT *
      FROM unnest($1::text[], $2::jsonb[], $3::text[], $4::text[], $5::timestamptz[],
                  $6::bigint[], $7::bigint[], $8::bigint[], $9::text[])
        AS r(lead_key, insight, model, prompt_version, source_last_message_at,
             source_message_count, prompt_tokens, completion_tokens, llm_request_id)
), written AS (
    INSERT INTO "LeadConversationInsight" AS i
           ("leadId", "stage", "buyingSignals", "risks", "nextAction", "confidence", "model",
            "promptVersion", "sourceLastMessageAt", "sourceMessageCount", "promptTokens",
            "completionTokens", "llmRequestId", "updatedAt")
    SELECT r.lead_key,
           r.insight ->> 'stage',
           r.insight -> 'buyingSignals',
           r.insight -> 'risks',
           r.insight ->> 'nextAction',
           (r.insight ->> 'confidence')::double precision,
           r.model,
           r.prompt_version,
           r.source_last_message_at AT TIME ZONE 'UTC',
           r.source_message_count,
           r.prompt_tokens,
           r.completion_tokens,
           r.llm_request_id,
           CURRENT_TIMESTAMP
      FROM input r
     WHERE EXISTS (SELECT 1 FROM "Lead" l WHERE l."id" = r.lead_key)
     ORDER BY r.lead_key
    ON CONFLICT ("leadId") DO UPDATE
       SET "stage" = excluded."stage",
           "buyingSignals" = excluded."buyingSignals",
           "risks" = excluded."risks",
           "nextAction" = excluded."nextAction",
           "confidence" = excluded."confidence",
           "model" = excluded."model",
           "promptVersion" = excluded."promptVersion",
           "sourceLastMessageAt" = excluded."sourceLastMessageAt",
           "sourceMessageCount" = excluded."sourceMessageCount",
           "promptTokens" = excluded."promptTokens",
           "completionTokens" = excluded."completionTokens",
           "llmRequestId" = excluded."llmRequestId",
           "updatedAt" = CURRENT_TIMESTAMP
     WHERE excluded."sourceLastMessageAt" > i."sourceLastMessageAt"
    RETURNING i."leadId"
)
SELECT r.lead_key,
       (w."leadId" IS NOT NULL) AS written,
       EXISTS (SELECT 1 FROM "Lead" l WHERE l."id" = r.lead_key) AS lead_exists
  FROM input r
  LEFT JOIN written w ON w."leadId" = r.lead_key
