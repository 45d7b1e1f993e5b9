-- Shoal schema, migration to version 8, SQLite dialect: cluster-wide limits per task.
-- One row per task that declares a limit (the latest node to register decides them; a task
-- whose limits are lifted loses its row). `starts` is a JSON array of the latest start times
-- (datastore time) the rate window needs, oldest first (see shoal/store/limits.py). Running
-- jobs are counted from job_counts: SQLite's single writer makes that count exact inside the
-- claim's write transaction, so no count is stored here.
CREATE TABLE task_limits (
    task        TEXT PRIMARY KEY,
    max_running INTEGER CHECK (max_running > 0),
    max_per_s   REAL CHECK (max_per_s > 0),
    starts      TEXT NOT NULL DEFAULT '[]',
    CHECK (max_running IS NOT NULL OR max_per_s IS NOT NULL)
) WITHOUT ROWID;
