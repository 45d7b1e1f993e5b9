-- Shoal schema, migration 13, PostgreSQL dialect: claims read only jobs they can take now.
-- A claim walks the head of each partition of its section (jobs_queued_partition), reading past
-- the queued jobs it cannot take. A backlog of such jobs made every claim read through all of
-- it: with 80,000 of them ahead, a lone job started about 200 ms after its submit instead of 5.
--
-- Jobs of a task the node lacks, or whose limits leave no room: while many wait, claims find
-- their candidates task by task through jobs_queued_task instead.
--
-- Jobs due later (a delay, a retry's backoff): a job queued to run more than 5 s ahead is
-- `parked`, out of both claim indexes; the nodes' housekeeping unparks it shortly before it is
-- due, through jobs_parked.
ALTER TABLE jobs ADD COLUMN parked boolean NOT NULL DEFAULT false;
UPDATE jobs SET parked = true
WHERE state = 'queued' AND run_after > extract(epoch from statement_timestamp()) + 5;
DROP INDEX jobs_queued_partition;
CREATE INDEX jobs_queued_partition ON jobs (partition, priority DESC, id)
    WHERE state = 'queued' AND NOT parked;
CREATE INDEX jobs_queued_task ON jobs (partition, task, priority DESC, id)
    WHERE state = 'queued' AND NOT parked;
CREATE INDEX jobs_parked ON jobs (run_after) WHERE state = 'queued' AND parked;
