-- Shoal schema, migration to version 6, SQLite dialect: job priorities and unique job keys.
--
-- `priority` orders the queue within a section: a claim takes the highest first, then the
-- oldest (lowest id). jobs_queued_priority serves the claim in that order, so it walks the queue
-- as the claim reads it and stops after the batch, as jobs_queued did in id order; jobs_queued
-- stays for the reads that want id order (the oldest queued job, lists of queued jobs).
ALTER TABLE jobs ADD COLUMN priority INTEGER NOT NULL DEFAULT 0;
CREATE INDEX jobs_queued_priority ON jobs (priority DESC, id) WHERE state = 'queued';

-- `key` is shown with the job; the rule that keeps it unique lives in job_keys. A key names at
-- most one job at a time: the job it was last given to, which holds it while queued or running
-- and, once finished, for `window_s` seconds after finished_at. A submit with a held key returns
-- that job; with a key whose job let it go (or was pruned), it takes the row over. A separate
-- table rather than a unique index on jobs: an index cannot say "unique until some time after
-- finishing", and a row per key is what a submit checks and takes over in one write. SQLite
-- lets one writer in at a time (BEGIN IMMEDIATE), so the check and the take-over are atomic.
ALTER TABLE jobs ADD COLUMN key TEXT;
CREATE TABLE job_keys (
    key      TEXT PRIMARY KEY,
    job_id   INTEGER NOT NULL,
    window_s REAL NOT NULL
) WITHOUT ROWID;
-- A pruned job lets its key go with it (one primary-key delete per pruned job that had a key).
CREATE TRIGGER job_keys_follow_prune AFTER DELETE ON jobs WHEN old.key IS NOT NULL
BEGIN
    DELETE FROM job_keys WHERE key = old.key AND job_id = old.id;
END;
