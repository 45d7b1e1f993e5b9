-- Shoal schema, version 2: job counts kept incrementally instead of counted with GROUP BY.
-- Stop every node before applying it (`shoal init`): a node of the previous version would keep
-- changing jobs without adjusting the counters.

-- Counts per (task, state), split in shards so that writers do not queue on one hot row: a node
-- adds its deltas to shard 1 + (id - 1) % 32, submitters and cancels to shard 0 (see
-- postgres_sql.counter_shard). A shard's count may be negative (a node finishes jobs that a
-- submitter counted); the sum over shards per (task, state) is the truth. Node ids grow with
-- every restart, so folding them into 32 slots keeps the table, and each read of it, bounded.
CREATE TABLE job_counts (
    shard integer NOT NULL,
    task  text NOT NULL,
    state text NOT NULL
        CHECK (state IN ('queued', 'running', 'succeeded', 'failed', 'cancelled')),
    n     bigint NOT NULL,
    PRIMARY KEY (shard, task, state)
) WITH (
    -- Every claim and finish updates a row here: leave room on each page for HOT updates.
    fillfactor = 50
);

-- Counted under a SHARE lock, which waits for writes in flight and holds off new ones until the
-- migration commits, so no change is counted twice or missed.
LOCK TABLE jobs IN SHARE MODE;
INSERT INTO job_counts (shard, task, state, n)
SELECT 0, task, state, count(*) FROM jobs GROUP BY task, state;

-- (state, id) and (task, state) were mostly there for the counts, and every claim and finish
-- wrote an entry into both. What the job lists still need:
--   state = queued   jobs_queued (id), partial;   state = running   jobs_running, partial;
--   a final state    jobs_final below, partial: written once, when the job finishes;
--   task = ...       jobs_task_id, newest first without a sort.
DROP INDEX jobs_state;
DROP INDEX jobs_task;
CREATE INDEX jobs_final ON jobs (state, id) WHERE state IN ('succeeded', 'failed', 'cancelled');
CREATE INDEX jobs_task_id ON jobs (task, id);
