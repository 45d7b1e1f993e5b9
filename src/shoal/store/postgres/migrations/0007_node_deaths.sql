-- Shoal schema, migration 7, PostgreSQL dialect: quarantine of jobs that kill nodes.
-- `node_deaths` counts how many times the job was running on a node that died (its lease
-- expired); at the cluster's `quarantine_after` such deaths the requeue fails the job instead
-- of handing it to the next node, which it would most likely kill too.
ALTER TABLE jobs ADD COLUMN node_deaths integer NOT NULL DEFAULT 0;
ALTER TABLE cluster ADD COLUMN quarantine_after integer NOT NULL DEFAULT 2;
