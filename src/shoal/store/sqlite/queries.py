"""The SQLite store's statements, named as their PostgreSQL counterparts in `postgres/queries.py`.

Placeholders are `?` or `:name`. SQLite lets one writer in at a time, so a batch is a loop of
small statements inside one `BEGIN IMMEDIATE` transaction rather than one statement over arrays;
time is SQLite's own clock (`NOW`), read once per transaction and passed in as `:now`.
"""

from __future__ import annotations

from shoal.store.rules import (
    ASSIGNMENT_EVENTS_SQL,
    ELIGIBLE_SQL,
    JOB_COLUMNS,
    SCHEDULES_SQL,
    SECTION_STATES_SQL,
)

# Datastore time as epoch seconds: on one host every node reads the same clock.
NOW = "SELECT (julianday('now') - 2440587.5) * 86400.0"

LOCK_CLUSTER = "SELECT partitions, epoch FROM cluster WHERE id = 1"
NEXT_IDS = "SELECT partitions, next_job_id FROM cluster WHERE id = 1"
SET_NEXT_ID = "UPDATE cluster SET next_job_id = ? WHERE id = 1"

SUBMIT = (
    "INSERT INTO jobs (id, partition, task, args, kwargs, state, max_attempts,"
    " timeout_s, run_after, created_at, priority, key, parked)"
    " VALUES (?, ?, ?, ?, ?, 'queued', ?, ?, ?, ?, ?, ?, ?)"
)

# The job that holds a key: queued or running, or finished less than the key's window ago (see
# migration 0005). The write lock is held, so nothing changes between this look and TAKE_KEY.
KEY_HOLDER = (
    "SELECT k.job_id FROM job_keys k JOIN jobs j ON j.id = k.job_id WHERE k.key = :key"
    " AND (j.state IN ('queued', 'claimed', 'running') OR j.finished_at + k.window_s > :now)"
)
TAKE_KEY = (
    "INSERT INTO job_keys (key, job_id, window_s) VALUES (?, ?, ?)"
    " ON CONFLICT (key) DO UPDATE SET job_id = excluded.job_id, window_s = excluded.window_s"
)

# A cancel: a queued job ends cancelled at once; a running one gets the request, which its node
# reads (CANCEL_REQUESTS) and every statement that ends the attempt honours (the *_CANCELLED ones).
CANCEL_STATE = "SELECT state, cancel_requested_at, cancel_requested_by FROM jobs WHERE id = ?"
# A job claimed ahead is cancelled at once too: no worker has started it, and its node finds it
# gone when it would start it.
CANCEL = (
    "UPDATE jobs SET state = 'cancelled', finished_at = :now, error = :error,"
    " cancel_requested_at = :now, cancel_requested_by = :by"
    " WHERE id = :id AND state IN ('queued', 'claimed') RETURNING task, state"
)
REQUEST_CANCEL = (
    "UPDATE jobs SET cancel_requested_at = :now, cancel_requested_by = :by"
    " WHERE id = :id AND state = 'running' AND cancel_requested_at IS NULL RETURNING id"
)
# On index jobs_cancel_requested, which holds only the running jobs being stopped.
CANCEL_REQUESTS = (
    "SELECT id, attempts, cancel_requested_at, cancel_requested_by FROM jobs"
    " WHERE state = 'running' AND claimer = ? AND cancel_requested_at IS NOT NULL ORDER BY id"
)

# The node's tasks: a node claims only jobs whose task it registers (a rolling deploy runs old
# nodes beside new ones; jobs of a task an owner lacks wait for a node that has it, see
# STRANDED).
MY_TASKS = "SELECT value FROM json_each((SELECT tasks FROM nodes WHERE id = :node))"
# The runnable queued jobs of the node's section of the tasks it registers, highest priority
# first, then oldest: a walk of jobs_queued_priority in its order that stops after the batch.
# The unary `+` keeps the planner off the index on (task, id): without statistics it took that
# index for the most selective, and so read every job of the task ever submitted, finished ones
# included (with a million finished jobs a claim took most of a second). The queued jobs'
# index, in claim order, reads only queued jobs, and stops at the limit.
PICK = (
    "SELECT id FROM jobs WHERE state = 'queued' AND parked = 0 AND run_after <= :now"
    " AND partition IN (SELECT partition FROM partitions WHERE owner = :node)"
    f" AND +task IN ({MY_TASKS})"
    " ORDER BY priority DESC, id LIMIT :limit"
)
# Idle nodes poll: look before taking the write lock.
ANY_CLAIMABLE = PICK

# PICK for one task, through jobs_queued_task (the task's queued jobs in claim order). PICK's walk
# reads past every queued job ahead that the node cannot take (of a task it lacks, or one whose
# limits leave no room): while many such jobs wait (`jobs.tasks_to_pick_one_by_one`), a claim
# picks each task it can take this way instead and merges them in claim order.
PICK_TASK = (
    "SELECT id, task, priority FROM jobs WHERE task = :task AND state = 'queued'"
    " AND parked = 0 AND run_after <= :now"
    " AND partition IN (SELECT partition FROM partitions WHERE owner = :node)"
    " ORDER BY priority DESC, id LIMIT :limit"
)
# The tasks with queued jobs, with how many (from the counters), and whether the node registers
# each, with the partition count.
QUEUED_TASKS = (
    "SELECT task, sum(n) FROM job_counts WHERE state = 'queued' GROUP BY task HAVING sum(n) > 0"
)
QUEUED_TASKS_OF_NODE = (
    f"SELECT task, sum(n), task IN ({MY_TASKS}), (SELECT partitions FROM cluster WHERE id = 1)"
    " FROM job_counts WHERE state = 'queued' GROUP BY task HAVING sum(n) > 0"
)

# The claim of jobs chosen beforehand (PICK, or its variants below), by id: the first of them
# in claim order start at once (CLAIM_IDS: running, the attempt charged, the start stamped),
# the rest are claimed ahead (CLAIM_AHEAD_IDS: held by the node, charged nothing) until
# START_CLAIMED starts them as workers free up. Both only while the node may claim.
CLAIM_IDS = (
    "UPDATE jobs SET state = 'running', claimer = :node, attempts = attempts + 1,"
    " started_at = :now, progress = 0, progress_message = NULL"
    " WHERE id IN (SELECT value FROM json_each(:ids)) AND state = 'queued'"
    f" AND EXISTS (SELECT 1 FROM nodes WHERE id = :node AND {ELIGIBLE_SQL})"
    f" RETURNING {JOB_COLUMNS}"
)
CLAIM_AHEAD_IDS = (
    "UPDATE jobs SET state = 'claimed', claimer = :node, progress = 0, progress_message = NULL"
    " WHERE id IN (SELECT value FROM json_each(:ids)) AND state = 'queued'"
    f" AND EXISTS (SELECT 1 FROM nodes WHERE id = :node AND {ELIGIBLE_SQL})"
    f" RETURNING {JOB_COLUMNS}"
)
# Those of the node's jobs claimed ahead that it still holds (a cancel, or the requeue of a
# node presumed dead, may have taken some), started.
START_CLAIMED = (
    "UPDATE jobs SET state = 'running', attempts = attempts + 1, started_at = :now,"
    " progress = 0, progress_message = NULL"
    " WHERE id IN (SELECT value FROM json_each(:ids)) AND state = 'claimed' AND claimer = :node"
    f" RETURNING {JOB_COLUMNS}"
)
# The start of attempts a worker began while their jobs were claimed (`Store.record_begun`;
# :begun, a JSON array of [id, attempt]). Each job is found by its id (the unary `+` keeps the
# planner from scanning the node's claimed jobs once per pair instead).
RECORD_BEGUN = (
    "UPDATE jobs SET state = 'running', attempts = attempts + 1, started_at = :now,"
    " progress = 0, progress_message = NULL"
    " FROM (SELECT value ->> 0 AS id, value ->> 1 AS attempt FROM json_each(:begun)) AS b"
    " WHERE jobs.id = b.id AND +jobs.claimer = :node AND +jobs.state = 'claimed'"
    " AND jobs.attempts = b.attempt - 1"
    " RETURNING jobs.task, jobs.state"
)
# Those of them running here already, started by an earlier call (as on PostgreSQL, where a
# start's outcome can be lost with its connection, the same call again returns the same jobs).
STARTED_HERE = (
    f"SELECT {JOB_COLUMNS} FROM jobs WHERE id IN (SELECT value FROM json_each(:ids))"
    " AND state = 'running' AND claimer = :node"
)

# -- task limits (see store/limits.py) ------------------------------------------------------------

# The claim of a node when some task has limits: the runnable queued jobs of its section in claim
# order, leaving out the tasks with no room (:full, a JSON array); read until the batch is full.
PICK_WITHIN_LIMITS = (
    "SELECT id, task FROM jobs WHERE state = 'queued' AND parked = 0 AND run_after <= :now"
    " AND partition IN (SELECT partition FROM partitions WHERE owner = :node)"
    f" AND +task IN ({MY_TASKS})"
    " AND task NOT IN (SELECT value FROM json_each(:full)) ORDER BY priority DESC, id"
)
ANY_CLAIMABLE_WITHIN_LIMITS = f"{PICK_WITHIN_LIMITS} LIMIT 1"

# Parked jobs due within :lead seconds, or overdue, back where claims find them: at most :limit,
# the soonest due first, through jobs_parked.
UNPARK = (
    "UPDATE jobs SET parked = 0 WHERE id IN (SELECT id FROM jobs WHERE state = 'queued'"
    " AND parked = 1 AND run_after <= :now + :lead ORDER BY run_after LIMIT :limit)"
)
ANY_TO_UNPARK = (
    "SELECT 1 FROM jobs WHERE state = 'queued' AND parked = 1 AND run_after <= :now + :lead LIMIT 1"
)

# Rolling deploys: each owner of partitions with its tasks, the tasks of a node that may own a
# section, the runnable queued jobs of one task in one owner's section, and the claim of jobs so
# found (by id, as every claim; see `Store.claim_stranded`).
OWNER_TASKS = (
    "SELECT id, tasks FROM nodes WHERE id IN (SELECT owner FROM partitions WHERE owner IS NOT NULL)"
)
ELIGIBLE_TASKS = f"SELECT tasks FROM nodes WHERE id = ? AND {ELIGIBLE_SQL}"
STRANDED = (  # through jobs_queued_task, as PICK_TASK
    "SELECT id, task, priority FROM jobs WHERE task = :task AND state = 'queued'"
    " AND parked = 0 AND run_after <= :now"
    " AND partition IN (SELECT partition FROM partitions WHERE owner = :owner)"
    " ORDER BY priority DESC, id LIMIT :limit"
)
READ_LIMITS = "SELECT task, max_running, max_per_s, starts FROM task_limits ORDER BY task"
# Running jobs per task, from the counters: exact inside a write transaction.
# Jobs claimed ahead hold their room as running ones do.
RUNNING_BY_TASK = (
    "SELECT task, sum(n) FROM job_counts WHERE state IN ('running', 'claimed')"
    " AND task IN (SELECT value FROM json_each(?)) GROUP BY task"
)
SET_STARTS = "UPDATE task_limits SET starts = ? WHERE task = ?"
UPSERT_LIMIT = (
    "INSERT INTO task_limits (task, max_running, max_per_s) VALUES (?, ?, ?)"
    " ON CONFLICT (task) DO UPDATE SET max_running = excluded.max_running,"
    " max_per_s = excluded.max_per_s"
)
CLEAR_LIMIT = "DELETE FROM task_limits WHERE task = ?"

PROGRESS = (
    "UPDATE jobs SET progress = ?, progress_message = ? WHERE id = ? AND claimer = ?"
    " AND attempts = ? AND state = 'running'"
)


def _finish(held: str, started: str = "") -> str:
    """The UPDATE recording one outcome of a job found by `held`, setting `started` besides."""
    return f"""
UPDATE jobs SET
    state = CASE WHEN :ok THEN 'succeeded' WHEN :retry_in_s IS NULL THEN 'failed'
                 ELSE 'queued' END,
    result = CASE WHEN :ok THEN :result ELSE result END,
    error = CASE WHEN :ok THEN NULL ELSE :error END,
    traceback = CASE WHEN :ok THEN NULL ELSE :traceback END,
    progress = CASE WHEN :ok THEN 1.0 WHEN :retry_in_s IS NULL THEN progress ELSE 0 END,
    claimer = CASE WHEN NOT :ok AND :retry_in_s IS NOT NULL THEN NULL ELSE claimer END,
    run_after = CASE WHEN NOT :ok AND :retry_in_s IS NOT NULL THEN :now + :retry_in_s
                     ELSE run_after END,
    parked = coalesce(NOT :ok AND :retry_in_s > :park_after_s, 0),
    finished_at = CASE WHEN :ok OR :retry_in_s IS NULL THEN :now ELSE finished_at END{started}
WHERE id = :id AND claimer = :node AND {held} AND cancel_requested_at IS NULL
RETURNING task, state
"""


# One outcome, fenced by (claimer, attempt, running): success, a retry after a delay, or failure.
FINISH = _finish("attempts = :attempt AND state = 'running'")
# One outcome of a tiny job whose start was never recorded (`Outcome.ran_s`): still claimed, under
# the attempt before; its start is recorded with its end, in the same row write.
FINISH_UNRECORDED = _finish(
    "attempts = :attempt - 1 AND state = 'claimed'",
    ",\n    attempts = :attempt, started_at = :now - :ran_s",
)

# The outcome of an attempt whose job was asked to cancel, fenced as FINISH is: the job ends
# cancelled however the attempt ended, and a result is discarded.
FINISH_CANCELLED = """
UPDATE jobs SET
    state = 'cancelled',
    error = :head || CASE WHEN :ok THEN :anyway ELSE coalesce(:error, '') END,
    traceback = CASE WHEN :ok THEN NULL ELSE :traceback END,
    finished_at = :now
WHERE id = :id AND claimer = :node AND attempts = :attempt AND state = 'running'
  AND cancel_requested_at IS NOT NULL
RETURNING task, state
"""

COUNT_FINISHES = "UPDATE nodes SET processed = processed + ?, failed = failed + ? WHERE id = ?"

RELEASE = (
    "UPDATE jobs SET state = 'queued', claimer = NULL, attempts = attempts - 1,"
    " run_after = :now, progress = 0, progress_message = NULL"
    " WHERE id = :id AND claimer = :node AND state = 'running' AND cancel_requested_at IS NULL"
    " RETURNING task, state"
)
# A job claimed ahead, given back: queued again as it was (no attempt of it started).
RELEASE_CLAIMED = (
    "UPDATE jobs SET state = 'queued', claimer = NULL"
    " WHERE id = :id AND claimer = :node AND state = 'claimed' RETURNING task, state"
)
# A job asked to cancel is never released to run again: it ends cancelled.
RELEASE_CANCELLED = (
    "UPDATE jobs SET state = 'cancelled', finished_at = :now, error = :error"
    " WHERE id = :id AND claimer = :node AND state = 'running'"
    " AND cancel_requested_at IS NOT NULL RETURNING task, state"
)

# What the datastore has under a node, for `reconcile`: each running job with its attempt, and
# each job claimed ahead with 0 (no attempt of it has started).
LAST_STARTED = (
    "SELECT id FROM jobs WHERE state = 'running' AND claimer = :node AND started_at = ("
    " SELECT max(started_at) FROM jobs WHERE state = 'running' AND claimer = :node) ORDER BY id"
)

RUNNING_ATTEMPTS = (
    "SELECT id, CASE WHEN state = 'running' THEN attempts ELSE 0 END FROM jobs"
    " WHERE state IN ('running', 'claimed') AND claimer = ? ORDER BY id"
)

ADD_COUNTS = (
    "INSERT INTO job_counts (shard, task, state, n) VALUES (0, ?, ?, ?)"
    " ON CONFLICT (shard, task, state) DO UPDATE SET n = n + excluded.n"
)

# -- nodes ----------------------------------------------------------------------------------------

INSERT_NODE = (
    "INSERT INTO nodes (name, state, host, pid, concurrency, tasks, started_at,"
    " heartbeat_at, lease_expires_at, state_changed_at, isolated)"
    " VALUES (:name, 'initializing', :host, :pid, :concurrency, :tasks, :now, :now,"
    " :now + :lease, :now, :isolated)"
)
LIVE_HOLDER = "SELECT id, state, lease_expires_at - ? FROM nodes WHERE name = ? AND state <> 'dead'"

NODE_STATE_EVENT = (
    "INSERT INTO history (at, kind, node_id, node_name, from_state, to_state, reason)"
    " VALUES (?, 'node_state', ?, ?, ?, ?, ?)"
)
MOVE_NODE = (
    "UPDATE nodes SET state = :new, state_changed_at = :now WHERE id = :node AND state = :old"
    " RETURNING name"
)

HEARTBEAT = (
    "UPDATE nodes SET heartbeat_at = :now, lease_expires_at = :now + :lease"
    " WHERE id = :node AND state <> 'dead' RETURNING state, section, pause_requested"
)
EPOCH = "SELECT epoch FROM cluster WHERE id = 1"

FIND_NODE_BY_ID = "SELECT id, name, state FROM nodes WHERE id = ?"
FIND_NODE_BY_NAME = (
    "SELECT id, name, state FROM nodes WHERE name = ? ORDER BY state = 'dead', id DESC LIMIT 1"
)
SET_PAUSE = "UPDATE nodes SET pause_requested = ? WHERE id = ?"
PAUSE_EVENT = (
    "INSERT INTO history (at, kind, node_id, node_name, reason)"
    " VALUES (?, 'pause_request', ?, ?, ?)"
)

ANY_EXPIRED = f"SELECT 1 FROM nodes WHERE state <> 'dead' AND lease_expires_at < ({NOW}) LIMIT 1"
EXPIRED = (
    "SELECT id, name, state, isolated FROM nodes WHERE state <> 'dead' AND lease_expires_at < ?"
)
MARK_EXPIRED_DEAD = "UPDATE nodes SET state = 'dead', state_changed_at = ? WHERE id = ?"

# A departed node's running jobs go back to the queue, the attempt counting; a job with no
# attempts left fails. The error is `:reason` followed by a tail whose marks stand for the job's
# attempt and maximum (see `texts`). When the node died (`:died` is 1, not a clean stop) each
# job's `node_deaths` grows by one, and a job whose count reaches `:quarantine_after` fails
# with `:quarantine_head`, the reason and `:quarantine_tail` instead: it most likely
# kills the nodes that run it. SET expressions read the row as it was before the update.
REQUEUE_ORPHANS = """
UPDATE jobs SET
    node_deaths = node_deaths + :died,
    state = CASE WHEN attempts >= max_attempts
                   OR (:died AND node_deaths + 1 >= :quarantine_after) THEN 'failed'
                 ELSE 'queued' END,
    finished_at = CASE WHEN attempts >= max_attempts
                         OR (:died AND node_deaths + 1 >= :quarantine_after) THEN :now
                       ELSE finished_at END,
    claimer = CASE WHEN attempts >= max_attempts
                     OR (:died AND node_deaths + 1 >= :quarantine_after) THEN claimer END,
    run_after = CASE WHEN attempts >= max_attempts
                       OR (:died AND node_deaths + 1 >= :quarantine_after) THEN run_after
                     ELSE :now END,
    progress = CASE WHEN attempts >= max_attempts
                      OR (:died AND node_deaths + 1 >= :quarantine_after) THEN progress
                    ELSE 0 END,
    progress_message = CASE WHEN attempts >= max_attempts
                              OR (:died AND node_deaths + 1 >= :quarantine_after)
                            THEN progress_message END,
    traceback = NULL,
    error = CASE WHEN :died AND node_deaths + 1 >= :quarantine_after
                 THEN replace(:quarantine_head, :deaths_mark, node_deaths + 1) ELSE '' END
        || :reason || replace(replace(
            CASE WHEN :died AND node_deaths + 1 >= :quarantine_after THEN :quarantine_tail
                 WHEN attempts >= max_attempts THEN :failed_tail ELSE :requeued_tail END,
            :attempt_mark, attempts), :max_mark, max_attempts)
WHERE state = 'running' AND claimer = :node AND cancel_requested_at IS NULL
RETURNING task, state
"""
# A departed node's jobs that were asked to cancel end cancelled, never requeued.
CANCEL_ORPHANS = """
UPDATE jobs SET state = 'cancelled', finished_at = :now, traceback = NULL, error = :error
WHERE state = 'running' AND claimer = :node AND cancel_requested_at IS NOT NULL
RETURNING task, state
"""
# A departed node's jobs claimed ahead go back to the queue as they were: none of them started.
REQUEUE_CLAIMED = (
    "UPDATE jobs SET state = 'queued', claimer = NULL WHERE state = 'claimed' AND claimer = :node"
    " RETURNING task, state"
)
QUARANTINE_AFTER = "SELECT quarantine_after FROM cluster WHERE id = 1"
SET_QUARANTINE_AFTER = "UPDATE cluster SET quarantine_after = ? WHERE id = 1"

# Each node that may own a section, with its slots: its share of the partitions follows them.
ELIGIBLE_NODES = f"SELECT id, concurrency FROM nodes WHERE {ELIGIBLE_SQL} ORDER BY id"
OWNERS = "SELECT owner FROM partitions ORDER BY partition"
HOMES = "SELECT home FROM partitions ORDER BY partition"
# `moved_at` where a load move changes the owner (its time given; NULL for a rebalance), as on
# PostgreSQL: membership changes leave the load rule's hold alone.
SET_OWNER = (
    "UPDATE partitions SET owner = :owner, home = :home,"
    " moved_at = CASE WHEN owner IS :owner OR :moved IS NULL THEN moved_at ELSE :moved END"
    " WHERE partition = :partition"
)
SET_SECTION = "UPDATE nodes SET section = ? WHERE id = ?"
SET_EPOCH = "UPDATE cluster SET epoch = ? WHERE id = 1"
REBALANCE_EVENT = (
    "INSERT INTO history (at, kind, epoch, owners, reason) VALUES (?, 'rebalance', ?, ?, ?)"
)

# -- reads and samples ----------------------------------------------------------------------------

READ_JOB = f"SELECT {JOB_COLUMNS} FROM jobs WHERE id = ?"
KNOWN_TASKS = "SELECT tasks FROM nodes WHERE state <> 'dead'"
RUNNING_BY_NODE = "SELECT claimer, count(*) FROM jobs WHERE state = 'running' GROUP BY claimer"
NODES_IN_VIEW = "SELECT * FROM nodes WHERE state <> 'dead' OR state_changed_at >= ? ORDER BY id"
READ_NODE = "SELECT * FROM nodes WHERE id = ?"
RUNNING_OF_NODE = "SELECT count(*) FROM jobs WHERE state = 'running' AND claimer = ?"
READ_HISTORY = "SELECT * FROM history WHERE at >= ? AND at <= ? ORDER BY at, id LIMIT ?"
LAST_REBALANCE = (
    f"SELECT * FROM history WHERE {ASSIGNMENT_EVENTS_SQL} AND at <= ?"
    " ORDER BY at DESC, id DESC LIMIT 1"
)
NODE_STATES_AT = (
    "SELECT n.*, (SELECT h.to_state FROM history h WHERE h.node_id = n.id"
    "  AND h.kind = 'node_state' AND h.at <= :at ORDER BY h.at DESC, h.id DESC LIMIT 1)"
    "  AS past_state,"
    " (SELECT h.at FROM history h WHERE h.node_id = n.id"
    "  AND h.kind = 'node_state' AND h.at <= :at ORDER BY h.at DESC, h.id DESC LIMIT 1)"
    "  AS past_changed_at"
    " FROM nodes n WHERE n.started_at <= :at ORDER BY n.id"
)
READ_SAMPLES = "SELECT * FROM samples WHERE at >= ? AND at <= ? ORDER BY at"
COUNT_BY_STATE = "SELECT state, sum(n) FROM job_counts GROUP BY state"
COUNT_BY_TASK = "SELECT task, state, sum(n) FROM job_counts GROUP BY task, state HAVING sum(n) <> 0"
LIST_FINISHED = (
    f"SELECT {JOB_COLUMNS} FROM jobs WHERE finished_at >= ? ORDER BY finished_at, id LIMIT ?"
)
OLDEST_QUEUED = "SELECT created_at FROM jobs WHERE state = 'queued' ORDER BY id LIMIT 1"

SAMPLE_EXISTS = "SELECT 1 FROM samples WHERE bucket = ?"
FINISHED_BETWEEN = (
    "SELECT state, count(*) FROM jobs WHERE finished_at >= ? AND finished_at < ? GROUP BY state"
)
LIVE_NODES = f"SELECT count(*) FROM nodes WHERE {SECTION_STATES_SQL}"
SAMPLE = (
    "INSERT OR IGNORE INTO samples (bucket, at, interval_s, queued, running, succeeded,"
    " failed, live_nodes, oldest_queued_age_s) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
)

# -- schema ---------------------------------------------------------------------------------------

HAS_META = "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'shoal_meta'"
SCHEMA_VERSION = "SELECT value FROM shoal_meta WHERE key = 'schema_version'"
SET_SCHEMA_VERSION = (
    "INSERT INTO shoal_meta (key, value) VALUES ('schema_version', ?)"
    " ON CONFLICT (key) DO UPDATE SET value = excluded.value"
)
CLUSTER_PARTITIONS = "SELECT partitions FROM cluster WHERE id = 1"
INSERT_CLUSTER = "INSERT INTO cluster (id, partitions, created_at) VALUES (1, ?, ?)"
INSERT_PARTITION = "INSERT INTO partitions (partition, owner) VALUES (?, NULL)"
SET_PARTITIONS = "UPDATE cluster SET partitions = ? WHERE id = 1"

# -- retention ------------------------------------------------------------------------------------

# The finished jobs one prune rule selects (see `rules.PruneRule`), on index jobs_state_finished;
# task lists travel as JSON arrays. :node NULL: every partition; else only those it owns now.
PRUNABLE = """
SELECT id FROM jobs
WHERE state = :state AND finished_at IS NOT NULL AND finished_at < :before
  AND (:node IS NULL OR partition IN (SELECT partition FROM partitions WHERE owner = :node))
  AND (:only IS NULL OR task IN (SELECT value FROM json_each(:only)))
  AND task NOT IN (SELECT value FROM json_each(:except))
"""
PRUNE_JOBS = f"""
DELETE FROM jobs WHERE id IN ({PRUNABLE} ORDER BY finished_at LIMIT :limit)
RETURNING task, state
"""
COUNT_PRUNABLE = f"SELECT task, count(*) FROM jobs WHERE id IN ({PRUNABLE}) GROUP BY task"

# History older than :before, except the latest rebalance and each node's latest state change:
# the views of the past start from them, however long ago they happened.
PRUNABLE_EVENTS = f"""
SELECT h.id FROM history h
WHERE h.at < :before
  AND h.id <> coalesce((SELECT r.id FROM history r WHERE r.{ASSIGNMENT_EVENTS_SQL}
                        ORDER BY r.at DESC, r.id DESC LIMIT 1), 0)
  AND (h.kind <> 'node_state' OR h.id <> (
        SELECT s.id FROM history s WHERE s.node_id = h.node_id AND s.kind = 'node_state'
        ORDER BY s.at DESC, s.id DESC LIMIT 1))
"""
PRUNE_EVENTS = f"DELETE FROM history WHERE id IN ({PRUNABLE_EVENTS} ORDER BY h.at LIMIT :limit)"
COUNT_PRUNABLE_EVENTS = f"SELECT count(*) FROM ({PRUNABLE_EVENTS})"
PRUNE_SAMPLES = """
DELETE FROM samples WHERE bucket IN (
    SELECT bucket FROM samples WHERE at < :before ORDER BY bucket LIMIT :limit)
"""
COUNT_PRUNABLE_SAMPLES = "SELECT count(*) FROM samples WHERE at < :before"

# Where the stored history begins: the later of the first sample and the first event (pruning
# keeps a few old events, the latest of each kind, but no old samples).
HISTORY_START = """
SELECT max(coalesce(s, e), coalesce(e, s)) FROM (
    SELECT (SELECT at FROM samples ORDER BY bucket LIMIT 1) AS s,
           (SELECT at FROM history ORDER BY at LIMIT 1) AS e)
"""

# -- load moves -----------------------------------------------------------------------------------

# What the load rule looks at: each partition's owner, home and when it last moved; each eligible
# node's slots and running jobs; and the runnable backlog of the next queued jobs to run (a
# bounded scan in claim order, through jobs_queued_priority, so parked jobs are never read).
LOAD_PARTITIONS = "SELECT owner, home, moved_at FROM partitions ORDER BY partition"
# A node's busy slots: its running jobs and those it claimed ahead, which take its next free
# workers.
LOAD_NODES = (
    "SELECT n.id, n.concurrency, (SELECT count(*) FROM jobs j WHERE j.state = 'running'"
    " AND j.claimer = n.id) + (SELECT count(*) FROM jobs j WHERE j.state = 'claimed'"
    f" AND j.claimer = n.id) FROM nodes n WHERE {ELIGIBLE_SQL}"
)
# Only jobs that the partition's owner can take count (of the tasks it registers; any job, in a
# partition without an owner): a job that waits for a node with its task is not load to move.
LOAD_BACKLOG = (
    "SELECT j.partition, count(*), ? - min(max(j.created_at, j.run_after)) FROM ("
    " SELECT partition, task, created_at, run_after FROM jobs"
    " WHERE state = 'queued' AND parked = 0 AND run_after <= ?"
    " ORDER BY priority DESC, id LIMIT ?) AS j"
    " JOIN partitions p ON p.partition = j.partition LEFT JOIN nodes o ON o.id = p.owner"
    " WHERE o.id IS NULL OR j.task IN (SELECT value FROM json_each(o.tasks))"
    " GROUP BY j.partition"
)
# The same scan for one task, through jobs_queued_task, for while many queued jobs wait that some
# owner cannot take (`nodes.read_load`): among the oldest LOAD_SCAN_JOBS, they would hide the rest.
LOAD_BACKLOG_OF_TASK = (
    "SELECT partition, created_at, run_after FROM jobs"
    " WHERE task = ? AND state = 'queued' AND parked = 0 AND run_after <= ?"
    " ORDER BY priority DESC, id LIMIT ?"
)
LOAD_OWNER_TASKS = "SELECT p.partition, n.tasks FROM partitions p JOIN nodes n ON n.id = p.owner"
ELIGIBLE_NODE_TASKS = f"SELECT tasks FROM nodes WHERE {ELIGIBLE_SQL}"
LOAD_MOVE_EVENT = (
    "INSERT INTO history (at, kind, epoch, owners, reason) VALUES (?, 'load_move', ?, ?, ?)"
)
RECENT_LOAD_MOVES = "SELECT count(*) FROM history WHERE kind = 'load_move' AND at >= ?"

# -- periodic schedules ---------------------------------------------------------------------------

# A new schedule, or a changed one, starts settled up to now; an unchanged one keeps its place.
DECLARE_SCHEDULE = """
INSERT INTO schedules (name, task, cron, every_s, tz, args, kwargs, missed, declared_at,
                       fired_through)
VALUES (:name, :task, :cron, :every_s, :tz, :args, :kwargs, :missed, :now, :now)
ON CONFLICT (name) DO UPDATE SET
    fired_through = CASE WHEN task IS NOT excluded.task OR cron IS NOT excluded.cron
        OR every_s IS NOT excluded.every_s OR tz IS NOT excluded.tz OR args IS NOT excluded.args
        OR kwargs IS NOT excluded.kwargs OR missed IS NOT excluded.missed
        THEN max(fired_through, excluded.fired_through) ELSE fired_through END,
    task = excluded.task, cron = excluded.cron, every_s = excluded.every_s, tz = excluded.tz,
    args = excluded.args, kwargs = excluded.kwargs, missed = excluded.missed,
    declared_at = excluded.declared_at
"""
READ_SCHEDULES = SCHEDULES_SQL
# The round applies only from where the caller planned it, and never ahead of the clock.
ADVANCE_SCHEDULE = (
    "UPDATE schedules SET fired_through = :through"
    " WHERE name = :name AND fired_through = :expected AND :through <= :now"
)
INSERT_TICK = (
    "INSERT INTO schedule_ticks (schedule, tick, job_id, catch_up, fired_at)"
    " VALUES (:name, :tick, :job, :catch_up, :now) ON CONFLICT (schedule, tick) DO NOTHING"
)
TRIM_TICKS = """
DELETE FROM schedule_ticks WHERE schedule = :name AND tick <= (
    SELECT tick FROM schedule_ticks WHERE schedule = :name ORDER BY tick DESC
    LIMIT 1 OFFSET :keep)
"""
LIST_TICKS = (
    "SELECT schedule, tick, job_id, catch_up, fired_at FROM schedule_ticks"
    " WHERE schedule = ? ORDER BY tick DESC LIMIT ?"
)
FORGET_TICKS = "DELETE FROM schedule_ticks WHERE schedule = ?"
FORGET_SCHEDULE = "DELETE FROM schedules WHERE name = ?"
