-- Shoal schema, migration 7, PostgreSQL dialect: cancelling running jobs.
-- A cancel asked for a running job is recorded on it (when, and by whom); its node reads the
-- requests for its running jobs through the partial index, which holds only the few jobs being
-- stopped, and the job ends cancelled however its attempt ends. Nullable columns without a
-- default: adding them rewrites nothing.
ALTER TABLE jobs ADD COLUMN cancel_requested_at double precision;
ALTER TABLE jobs ADD COLUMN cancel_requested_by text;
CREATE INDEX jobs_cancel_requested ON jobs (claimer)
    WHERE state = 'running' AND cancel_requested_at IS NOT NULL;
