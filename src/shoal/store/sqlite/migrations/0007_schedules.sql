-- Shoal schema, migration to version 7, SQLite dialect: periodic schedules.
-- One row per declared schedule: its definition as the nodes last declared it, and
-- `fired_through`, the datastore time up to which its ticks are settled (fired or skipped).
CREATE TABLE IF NOT EXISTS schedules (
    name          TEXT PRIMARY KEY,
    task          TEXT NOT NULL,
    cron          TEXT,
    every_s       REAL,
    tz            TEXT NOT NULL,
    args          TEXT NOT NULL,
    kwargs        TEXT NOT NULL,
    missed        TEXT NOT NULL,
    declared_at   REAL NOT NULL,
    fired_through REAL NOT NULL
);

-- One row per firing. The key makes a second job for one tick impossible: the firing that
-- inserts the row inserts the job in the same transaction.
CREATE TABLE IF NOT EXISTS schedule_ticks (
    schedule TEXT NOT NULL REFERENCES schedules (name),
    tick     REAL NOT NULL,
    job_id   INTEGER NOT NULL,
    catch_up INTEGER NOT NULL DEFAULT 0,
    fired_at REAL NOT NULL,
    PRIMARY KEY (schedule, tick)
);
