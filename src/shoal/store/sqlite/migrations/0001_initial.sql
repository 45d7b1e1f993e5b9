-- Shoal schema, version 1, SQLite dialect. Timestamps are REAL seconds since the Unix epoch.
CREATE TABLE IF NOT EXISTS shoal_meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

-- One row: the partition count P (fixed at init), the rebalance epoch, the next job id.
CREATE TABLE IF NOT EXISTS cluster (
    id          INTEGER PRIMARY KEY CHECK (id = 1),
    partitions  INTEGER NOT NULL CHECK (partitions > 0),
    epoch       INTEGER NOT NULL DEFAULT 0,
    next_job_id INTEGER NOT NULL DEFAULT 1,
    created_at  REAL NOT NULL
);

-- The system-state collection: one record per node; `section` mirrors the partitions it owns.
CREATE TABLE IF NOT EXISTS nodes (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    name             TEXT NOT NULL,
    state            TEXT NOT NULL,
    section          TEXT NOT NULL DEFAULT '',
    host             TEXT NOT NULL,
    pid              INTEGER NOT NULL,
    concurrency      INTEGER NOT NULL,
    tasks            TEXT NOT NULL DEFAULT '[]',
    started_at       REAL NOT NULL,
    heartbeat_at     REAL NOT NULL,
    lease_expires_at REAL NOT NULL,
    state_changed_at REAL NOT NULL,
    pause_requested  INTEGER NOT NULL DEFAULT 0,
    processed        INTEGER NOT NULL DEFAULT 0,
    failed           INTEGER NOT NULL DEFAULT 0
);
CREATE UNIQUE INDEX IF NOT EXISTS nodes_live_name ON nodes (name) WHERE state <> 'dead';
CREATE INDEX IF NOT EXISTS nodes_live_lease ON nodes (lease_expires_at) WHERE state <> 'dead';

-- Owner of each partition: what claims are fenced on.
CREATE TABLE IF NOT EXISTS partitions (
    partition INTEGER PRIMARY KEY,
    owner     INTEGER REFERENCES nodes (id)
);

-- The job-queue collection: every job that is, will be, or was.
CREATE TABLE IF NOT EXISTS jobs (
    id               INTEGER PRIMARY KEY,
    partition        INTEGER NOT NULL,
    task             TEXT NOT NULL,
    args             TEXT NOT NULL,
    kwargs           TEXT NOT NULL,
    state            TEXT NOT NULL,
    attempts         INTEGER NOT NULL DEFAULT 0,
    max_attempts     INTEGER NOT NULL,
    timeout_s        REAL,
    run_after        REAL NOT NULL,
    claimer          INTEGER,
    progress         REAL NOT NULL DEFAULT 0,
    progress_message TEXT,
    result           TEXT,
    error            TEXT,
    traceback        TEXT,
    created_at       REAL NOT NULL,
    started_at       REAL,
    finished_at      REAL
);
CREATE INDEX IF NOT EXISTS jobs_queued ON jobs (id) WHERE state = 'queued';
CREATE INDEX IF NOT EXISTS jobs_running ON jobs (claimer) WHERE state = 'running';
CREATE INDEX IF NOT EXISTS jobs_state ON jobs (state, id);
CREATE INDEX IF NOT EXISTS jobs_task ON jobs (task, state);
CREATE INDEX IF NOT EXISTS jobs_finished ON jobs (finished_at) WHERE finished_at IS NOT NULL;

-- Node transitions, pause requests and rebalances, for the observer's view of the past.
CREATE TABLE IF NOT EXISTS history (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    at         REAL NOT NULL,
    kind       TEXT NOT NULL,
    node_id    INTEGER,
    node_name  TEXT,
    from_state TEXT,
    to_state   TEXT,
    epoch      INTEGER,
    owners     TEXT,
    reason     TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS history_at ON history (at);
CREATE INDEX IF NOT EXISTS history_kind_at ON history (kind, at);

-- Periodic cluster samples (throughput, queue depth) written by the nodes.
CREATE TABLE IF NOT EXISTS samples (
    bucket              INTEGER PRIMARY KEY,
    at                  REAL NOT NULL,
    interval_s          REAL NOT NULL,
    queued              INTEGER NOT NULL,
    running             INTEGER NOT NULL,
    succeeded           INTEGER NOT NULL,
    failed              INTEGER NOT NULL,
    live_nodes          INTEGER NOT NULL,
    oldest_queued_age_s REAL
);
