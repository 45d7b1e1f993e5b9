-- Shoal schema, migration 11, PostgreSQL dialect: quarantine of jobs that kill nodes.
-- `node_deaths` counts how many times the job was running on a node that died (its lease
-- expired) while running its tasks in its own process; at the cluster's `quarantine_after`
-- (port.QUARANTINE_AFTER for new clusters) such deaths the requeue fails the job instead of
-- handing it to the next node, which it would most likely kill too. A node whose tasks run in a
-- worker process (`isolated`) cannot be killed by them: its death counts against no job.
ALTER TABLE jobs ADD COLUMN node_deaths integer NOT NULL DEFAULT 0;
ALTER TABLE cluster ADD COLUMN quarantine_after integer NOT NULL DEFAULT 2;
ALTER TABLE nodes ADD COLUMN isolated boolean NOT NULL DEFAULT false;
