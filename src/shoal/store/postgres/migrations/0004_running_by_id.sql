-- Shoal schema 4: index running jobs by (claimer, id) instead of (claimer).
--
-- Every entry of the old index for one node had the same key, so PostgreSQL merged them into
-- posting lists; the entries that finished jobs left behind could not be marked dead one by one,
-- and every scan of a busy node's running jobs visited all of them again until the next vacuum.
-- With the id in the key each entry is distinct and is skipped once dead.
CREATE INDEX jobs_running_by_id ON jobs (claimer, id) WHERE state = 'running';
DROP INDEX jobs_running;
