-- Shoal schema, migration 9, PostgreSQL dialect: periodic schedules.
-- One row per declared schedule: its definition as the nodes last declared it, and
-- `fired_through`, the datastore time up to which its ticks are settled (fired or skipped).
-- Every firing locks its schedule's row (a conditional update), so firings of one schedule
-- apply one at a time and a second one for the same round finds it gone.
CREATE TABLE schedules (
    name          text PRIMARY KEY,
    task          text NOT NULL,
    cron          text,
    every_s       double precision,
    tz            text NOT NULL,
    args          text NOT NULL,
    kwargs        text NOT NULL,
    missed        text NOT NULL CHECK (missed IN ('once', 'skip')),
    declared_at   double precision NOT NULL,
    fired_through double precision NOT NULL,
    CHECK ((cron IS NULL) <> (every_s IS NULL))
);

-- One row per firing. The key makes a second job for one tick impossible: the firing that
-- inserts the row inserts the job in the same transaction.
CREATE TABLE schedule_ticks (
    schedule text NOT NULL REFERENCES schedules (name),
    tick     double precision NOT NULL,
    job_id   bigint NOT NULL,
    catch_up boolean NOT NULL DEFAULT false,
    fired_at double precision NOT NULL,
    PRIMARY KEY (schedule, tick)
);
