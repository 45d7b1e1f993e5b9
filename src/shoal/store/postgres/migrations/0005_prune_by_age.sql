-- Shoal schema 5: an index that finds the oldest finished jobs of one state, for retention.
--
-- Nodes delete finished jobs in small batches, oldest finish first, per final state (each state
-- keeps its own age). Over (finished_at) alone, a batch of succeeded jobs past a week would walk
-- every failed job younger than its month on every pass; keyed by state first, each batch reads
-- only rows it deletes, and a pass with nothing old enough is one probe. Partial, like
-- jobs_finished: an entry is written once, when the job finishes.
CREATE INDEX jobs_state_finished ON jobs (state, finished_at) WHERE finished_at IS NOT NULL;
