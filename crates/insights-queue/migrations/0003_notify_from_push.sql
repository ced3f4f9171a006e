-- The insert trigger's transition table copied every inserted row into a tuplestore (spilling
-- to temp files on a bulk push) only to find the distinct queue names; the push statement knows
-- its queue and notifies itself (see `queue.rs`), once per statement that inserted anything.
-- Nothing else inserts jobs.

DROP TRIGGER IF EXISTS jobs_notify_insert ON insights_queue.jobs;
DROP FUNCTION IF EXISTS insights_queue.notify_insert();
