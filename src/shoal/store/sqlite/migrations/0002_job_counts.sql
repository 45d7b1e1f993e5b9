-- Shoal schema, migration from version 1 to 2, SQLite dialect: job counts kept incrementally
-- instead of counted with GROUP BY. Applied in one write transaction by
-- `sqlite/schema.py`, which records the version in shoal_meta.

-- Counts per (task, state). SQLite lets one writer in at a time, so there is nothing to spread
-- over shards: every write goes to shard 0, and the table has the same shape as PostgreSQL's.
CREATE TABLE job_counts (
    shard INTEGER NOT NULL,
    task  TEXT NOT NULL,
    state TEXT NOT NULL,
    n     INTEGER NOT NULL,
    PRIMARY KEY (shard, task, state)
) WITHOUT ROWID;

INSERT INTO job_counts (shard, task, state, n)
SELECT 0, task, state, count(*) FROM jobs GROUP BY task, state;

-- (state, id) and (task, state) served mostly the counts. The job lists use jobs_queued and
-- jobs_running for those states, jobs_final for the others, jobs_task_id for a task.
DROP INDEX IF EXISTS jobs_state;
DROP INDEX IF EXISTS jobs_task;
CREATE INDEX jobs_final ON jobs (state, id) WHERE state IN ('succeeded', 'failed', 'cancelled');
CREATE INDEX jobs_task_id ON jobs (task, id);
