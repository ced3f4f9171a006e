-- Synthetic leads and conversations for schema.sql, so the example runs end to end on a fresh
-- database: cuid-like text ids, two of three leads booked, most with a thread of 2 to 10
-- messages in both directions, one in five without any; "lastMessageAt" set as the app would.
--
-- How many leads: the setting insights.seed_leads, 200 when unset. With psql:
--   psql "$DIRECT_DATABASE_URL" -c 'SET insights.seed_leads = 1000' -f seed.sql
-- Deterministic (the same count gives the same rows) and safe to run again: existing rows are
-- kept, so a second run with a larger count only adds the missing leads.

BEGIN;

INSERT INTO "Lead" ("id", "name", "email", "company", "bookedAt", "lastMessageAt", "createdAt",
                    "updatedAt")
SELECT 'clx' || lpad(to_hex(i), 6, '0') || substr(md5('lead-' || i), 1, 16),
       (ARRAY['Ada', 'Grace', 'Alan', 'Edsger', 'Barbara', 'Donald', 'Frances', 'Ken'])[1 + i % 8]
           || ' ' ||
       (ARRAY['Lovelace', 'Hopper', 'Turing', 'Dijkstra', 'Liskov', 'Knuth', 'Allen'])[1 + i % 7],
       'lead' || i || '@example.com',
       CASE WHEN i % 4 = 0 THEN NULL ELSE 'Company ' || (1 + i % 50) END,
       CASE WHEN i % 3 = 0 THEN NULL
            ELSE timestamp '2026-03-02 15:00' + (i % 20) * interval '1 day' END,
       NULL,
       timestamp '2026-02-01 09:00' + (i % 20) * interval '1 day',
       timestamp '2026-02-01 09:00' + (i % 20) * interval '1 day'
  FROM generate_series(
           1, coalesce(nullif(current_setting('insights.seed_leads', true), ''), '200')::int) i
ON CONFLICT DO NOTHING;

INSERT INTO "Message" ("id", "leadId", "direction", "body", "sentAt", "createdAt")
SELECT 'clm' || lpad(to_hex(i), 6, '0') || lpad(to_hex(k), 2, '0')
           || substr(md5('message-' || i || '-' || k), 1, 14),
       'clx' || lpad(to_hex(i), 6, '0') || substr(md5('lead-' || i), 1, 16),
       CASE WHEN k % 2 = 1 THEN 'INBOUND' ELSE 'OUTBOUND' END::"MessageDirection",
       CASE WHEN k % 2 = 1
            THEN (ARRAY['Hi, we saw your pricing page. Does the team plan include SSO?',
                        'Thanks. Our budget is tight this quarter; is there a discount for annual billing?',
                        'Can we move the call to Thursday? Our CTO wants to join.',
                        'We are comparing you with two other vendors, mostly on support response times.',
                        'The trial went well, but the import from our old CRM was slow.'])[1 + (i + k) % 5]
            ELSE (ARRAY['Yes, SSO is in the team plan. Happy to walk you through it on the call.',
                        'Annual billing takes 15% off; I can send a quote before we talk.',
                        'Thursday works. I will send a new invite for 3 pm.',
                        'Our median first response is under an hour; I can share the numbers.',
                        'Sorry about the import. Our onboarding team can run it for you.'])[1 + (i + k) % 5]
       END,
       timestamp '2026-02-01 09:00' + (i % 20) * interval '1 day' + k * interval '47 minutes',
       timestamp '2026-02-01 09:00' + (i % 20) * interval '1 day' + k * interval '47 minutes'
  FROM generate_series(
           1, coalesce(nullif(current_setting('insights.seed_leads', true), ''), '200')::int) i,
       generate_series(1, 2 + i % 9) k
 WHERE i % 5 <> 4
ON CONFLICT DO NOTHING;

-- What the app does when it stores a message.
UPDATE "Lead" l
   SET "lastMessageAt" = m.newest
  FROM (SELECT "leadId", max("sentAt") AS newest FROM "Message" GROUP BY "leadId") m
 WHERE m."leadId" = l."id"
   AND l."lastMessageAt" IS DISTINCT FROM m.newest;

COMMIT;
