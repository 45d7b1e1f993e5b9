-- Shoal schema, migration 8, PostgreSQL dialect: job priorities and unique job keys.
--
-- `priority` orders the queue within a section: a claim takes the highest first, then the
-- oldest (lowest id). The claim reads the first few queued jobs of each owned partition in that
-- order, so jobs_queued_partition now ends in (priority DESC, id): each probe still reads only
-- the rows it returns, however long the backlog, and a probe for "any queued job here" (the idle
-- poll, ANY_CLAIMABLE) still uses the partition prefix. Adding a column with a constant default
-- rewrites no rows.
ALTER TABLE jobs ADD COLUMN priority smallint NOT NULL DEFAULT 0;
DROP INDEX jobs_queued_partition;
CREATE INDEX jobs_queued_partition ON jobs (partition, priority DESC, id) WHERE state = 'queued';

-- `key` is shown with the job; the rule that keeps it unique lives in job_keys. A key names at
-- most one job at a time: the job it was last given to, which holds it while queued or running
-- and, once finished, for `window_s` seconds after finished_at. A submit takes a key with
-- INSERT ... ON CONFLICT DO UPDATE ... WHERE <the holder let it go>: the conflicting row is
-- locked either way, so two submitters of one key (or of a new key, through the primary key)
-- are ordered, and the second sees the first's job. A unique index on jobs cannot do this: it
-- cannot say "unique until some time after finishing", and on a table distributed by partition
-- a unique index must include the partition. The foreign key is checked at commit, because the
-- key is taken before the job row exists; a pruned job lets its key go (ON DELETE CASCADE, found
-- through job_keys_job).
ALTER TABLE jobs ADD COLUMN key text;
CREATE TABLE job_keys (
    key      text PRIMARY KEY,
    job_id   bigint NOT NULL REFERENCES jobs (id) ON DELETE CASCADE DEFERRABLE INITIALLY DEFERRED,
    window_s double precision NOT NULL
);
CREATE INDEX job_keys_job ON job_keys (job_id);
