-- Leads with their newest messages, one row per existing lead.
-- $1 text[]: lead ids; $2 bigint: newest messages to load.
-- Prisma's DateTime columns hold UTC without a zone; AT TIME ZONE 'UTC' makes them timestamptz,
-- which the watermark parameters are and which to_jsonb prints as RFC 3339.
-- eligible: a lead unbooked since it was enqueued gets no insight (its job is skipped).
-- The total is counted only when the window is full: otherwise its length is the total.
SELECT l."id" AS lead_key,
       l."bookedAt" IS NOT NULL AS eligible,
       jsonb_build_object(
           'id', l."id",
           'name', l."name",
           'email', l."email",
           'company', l."company",
           'bookedAt', l."bookedAt" AT TIME ZONE 'UTC') AS lead,
       coalesce(w.messages, '[]'::jsonb) AS messages,
       CASE WHEN coalesce(w.loaded, 0) < $2 THEN coalesce(w.loaded, 0)
            ELSE (SELECT count(*) FROM "Message" c WHERE c."leadId" = l."id")
       END AS total_message_count,
       greatest(w.newest, l."lastMessageAt") AT TIME ZONE 'UTC' AS source_last_message_at,
       (SELECT i."sourceLastMessageAt" AT TIME ZONE 'UTC'
          FROM "LeadConversationInsight" i
         WHERE i."leadId" = l."id") AS stored_source_last_message_at
  FROM "Lead" l
  LEFT JOIN LATERAL (
        SELECT jsonb_agg(
                   jsonb_build_object(
                       'direction', r."direction",
                       'body', r."body",
                       'sentAt', r."sentAt" AT TIME ZONE 'UTC')
                   ORDER BY r."sentAt", r."id") AS messages,
               count(*) AS loaded,
               max(r."sentAt") AS newest
          FROM (SELECT m."id", m."direction", m."body", m."sentAt"
                  FROM "Message" m
                 WHERE m."leadId" = l."id"
                 ORDER BY m."sentAt" DESC, m."id" DESC
                 LIMIT $2) r
       ) w ON true
 WHERE l."id" = ANY($1::text[])
