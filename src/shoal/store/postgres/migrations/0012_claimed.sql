-- Shoal schema, migration 12, PostgreSQL dialect: jobs claimed ahead are not started.
-- A node claims a few jobs beyond its free slots so its workers never wait on a claim. Such a
-- job is `claimed`: held by its node (`claimer`, `claim_token`) but charged no attempt and
-- stamped with no start until a worker takes it and the node records the start (claimed ->
-- running). If its node dies or gives it back, it returns to the queue as it was.
ALTER TABLE jobs DROP CONSTRAINT jobs_state_check;
ALTER TABLE jobs ADD CONSTRAINT jobs_state_check
    CHECK (state IN ('queued', 'claimed', 'running', 'succeeded', 'failed', 'cancelled'));
ALTER TABLE job_counts DROP CONSTRAINT job_counts_state_check;
ALTER TABLE job_counts ADD CONSTRAINT job_counts_state_check
    CHECK (state IN ('queued', 'claimed', 'running', 'succeeded', 'failed', 'cancelled'));
-- A node's claimed jobs, for its starts, its releases and the requeue when it dies.
CREATE INDEX jobs_claimed_by_id ON jobs (claimer, id) WHERE state = 'claimed';
