-- Shoal schema, migration from version 2 to 3, SQLite dialect: indexes for retention.
--
-- Finished jobs are deleted in small batches, oldest finish first, per final state: keyed by
-- state first, a batch reads only the rows it deletes (see the PostgreSQL dialect's 0005).
CREATE INDEX jobs_state_finished ON jobs (state, finished_at) WHERE finished_at IS NOT NULL;
-- History is pruned by age except each node's latest state change, found through this index.
CREATE INDEX history_node_at ON history (node_id, at) WHERE kind = 'node_state';
