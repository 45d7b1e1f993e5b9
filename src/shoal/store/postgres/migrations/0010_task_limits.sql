-- Shoal schema, migration 10, PostgreSQL dialect: cluster-wide limits per task.
-- One row per task that declares a limit (the latest node to register decides them). A task
-- whose limits are lifted keeps its row with no limits, dormant: nothing counts into it until a
-- later registration limits the task again and counts afresh (so nodes need no DELETE grant). Claims of a limited task lock its row, so they apply
-- one at a time across every node; `running` is the exact count of its running jobs, kept by
-- every statement that moves one of them into or out of `running` (claim, finish, release,
-- requeue), and `starts` the latest start times (datastore time) the rate window needs,
-- oldest first (see shoal/store/limits.py). The count is kept here rather than summed from
-- job_counts because a claim that waited for the row lock reads the row's latest version,
-- where a sum over other rows would come from the statement's older snapshot.
CREATE TABLE task_limits (
    task        text PRIMARY KEY,
    max_running integer CHECK (max_running > 0),
    max_per_s   double precision CHECK (max_per_s > 0),
    running     integer NOT NULL DEFAULT 0,
    starts      double precision[] NOT NULL DEFAULT '{}'
) WITH (
    -- Every claim and finish of a limited task updates its row: room for HOT updates.
    fillfactor = 50
);
