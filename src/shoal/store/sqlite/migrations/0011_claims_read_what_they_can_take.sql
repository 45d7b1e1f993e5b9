-- Shoal schema, migration to version 11, SQLite dialect: claims read only jobs they can take.
-- A claim walks the queued jobs in claim order (jobs_queued_priority), reading past those it
-- cannot take. A backlog of such jobs made every claim read through all of it.
--
-- Jobs of a task the node lacks, or whose limits leave no room: while many wait, a claim picks
-- each of its tasks through jobs_queued_task instead.
--
-- Jobs due later (a delay, a retry's backoff): a job queued to run more than 5 s ahead is
-- `parked`, out of both claim indexes; the nodes' housekeeping unparks it shortly before it is
-- due, through jobs_parked.
ALTER TABLE jobs ADD COLUMN parked INTEGER NOT NULL DEFAULT 0;
UPDATE jobs SET parked = 1
WHERE state = 'queued' AND run_after > (julianday('now') - 2440587.5) * 86400.0 + 5;
DROP INDEX jobs_queued_priority;
CREATE INDEX jobs_queued_priority ON jobs (priority DESC, id)
    WHERE state = 'queued' AND parked = 0;
CREATE INDEX jobs_queued_task ON jobs (task, priority DESC, id)
    WHERE state = 'queued' AND parked = 0;
CREATE INDEX jobs_parked ON jobs (run_after) WHERE state = 'queued' AND parked = 1;
