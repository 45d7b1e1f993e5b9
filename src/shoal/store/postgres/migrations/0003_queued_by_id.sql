-- Shoal schema 3: keep the claim's per-partition scan on jobs_queued_partition.
--
-- With two partial indexes on queued jobs, statistics taken while the queue was empty (say, right
-- after a bulk load of finished jobs) made both look like one row, and the planner chose the
-- smaller (id) index for the claim's per-partition lookups, filtering out every other
-- partition's jobs: a claim over a table of a million finished jobs took 37 ms instead of 8.
-- The (id) index now carries an extra predicate term that the claim does not state, so the claim
-- can only use the (partition, id) index; the queries that want id order (oldest queued job,
-- newest-first lists of queued jobs) state the term and keep using this one.
DROP INDEX IF EXISTS jobs_queued;
CREATE INDEX jobs_queued_by_id ON jobs (id) WHERE state = 'queued' AND partition >= 0;
