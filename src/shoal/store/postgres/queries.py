"""The PostgreSQL store's statements, named as their SQLite counterparts in `sqlite/queries.py`.

The hot paths (submit, claim, finish) are each one statement and so one round trip: batches travel
as arrays and are unnested in the database. Time is always the database's (`NOW`), never the
caller's.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from shoal.model import NewJob, Outcome
from shoal.store.rules import ASSIGNMENT_EVENTS_SQL, ELIGIBLE_SQL, JOB_COLUMNS, SECTION_STATES_SQL

# Datastore time as epoch seconds. statement_timestamp() is fixed for one statement (every row
# of a batch gets the same time) but fresh for each statement of a transaction, so a statement
# that first waited on a lock does not use a stale clock.
NOW = "extract(epoch from statement_timestamp())::float8"

NODE_COLUMNS = (
    "id, name, state, section, host, pid, concurrency, tasks, started_at, heartbeat_at,"
    " lease_expires_at, state_changed_at, pause_requested, processed, failed"
)
NODE_WITH_RUNNING = (
    f"SELECT {NODE_COLUMNS}, (SELECT count(*) FROM jobs j WHERE j.state = 'running'"
    " AND j.claimer = n.id) FROM nodes n"
)
EVENT_COLUMNS = "id, at, kind, node_id, node_name, from_state, to_state, epoch, owners, reason"

LOCK_CLUSTER = "SELECT partitions, epoch FROM cluster WHERE id = 1 FOR UPDATE"

# Job counts live in job_counts, sharded so that writers do not all queue on one row per
# (task, state): submitters and cancels write shard 0, each node its own slot of COUNTER_SHARDS.
# Slots rather than one shard per node id, because ids grow with every restart and the reads sum
# every row; two live nodes sharing a slot only wait for each other, as all writers once did.
COUNTER_SHARDS = 32
SUBMITTER_SHARD = 0


def counter_shard(node_id: int) -> int:
    """The counter shard a node (or a requeue of its jobs after it died) writes to."""
    return 1 + (node_id - 1) % COUNTER_SHARDS


def add_counts(deltas: str, shard: str) -> str:
    """An INSERT adding the rows (task, state, d) of query `deltas` to the counters of `shard`.

    Deltas are summed per (task, state) first (an upsert may touch a row only once per
    statement) and applied in (task, state) order, so two writers sharing a shard lock its rows
    in the same order: they may wait for each other, never deadlock.
    """
    return f"""
    INSERT INTO job_counts AS c (shard, task, state, n)
    SELECT {shard}, d.task, d.state, sum(d.d) FROM ({deltas}) AS d(task, state, d)
    GROUP BY d.task, d.state HAVING sum(d.d) <> 0
    ORDER BY d.task, d.state
    ON CONFLICT (shard, task, state) DO UPDATE SET n = c.n + excluded.n"""


# Every job of `moved` (columns task, state: the new state) counted out of `old`, into its state.
def _moved_from(old: str, moved: str) -> str:
    return f"SELECT task, state, 1 FROM {moved} UNION ALL SELECT task, '{old}', -1 FROM {moved}"


COUNT_BY_STATE = "SELECT state, sum(n) FROM job_counts GROUP BY state"
COUNT_BY_TASK = "SELECT task, state, sum(n) FROM job_counts GROUP BY task, state HAVING sum(n) <> 0"

ALLOCATE_IDS = "SELECT nextval('jobs_id_seq') FROM generate_series(1, %s)"


def submit_batch(ids: Sequence[int], jobs: Sequence[NewJob]) -> str:
    """The JSON document SUBMIT reads: one row per job (see OUTCOMES for why JSON)."""
    return json.dumps(
        [
            [i, j.task, j.args_json, j.kwargs_json, j.max_attempts, j.timeout_s, j.delay_s]
            for i, j in zip(ids, jobs, strict=True)
        ],
        separators=(",", ":"),
    )


# One statement: insert the batch with its preallocated ids and notify the touched partitions
# (a list of partitions, or '*' when there are many), counting the new jobs. Returns how many
# rows went in.
SUBMIT = f"""
WITH ins AS (
    INSERT INTO jobs (id, partition, task, args, kwargs, state, max_attempts, timeout_s,
                      run_after, created_at)
    SELECT b.id, b.id %% c.partitions, b.task, b.args, b.kwargs, 'queued', b.max_attempts,
           b.timeout_s, {NOW} + b.delay_s, {NOW}
    FROM (
        SELECT (e->>0)::bigint AS id, e->>1 AS task, e->>2 AS args, e->>3 AS kwargs,
               (e->>4)::int AS max_attempts, (e->>5)::float8 AS timeout_s,
               (e->>6)::float8 AS delay_s
        FROM jsonb_array_elements(%(batch)s::jsonb) AS e
    ) b
    CROSS JOIN cluster c
    RETURNING partition, task
), tallied AS (
    {add_counts("SELECT task, 'queued', 1 FROM ins", str(SUBMITTER_SHARD))}
), touched AS (
    SELECT DISTINCT partition FROM ins
)
SELECT (SELECT count(*) FROM ins),
       pg_notify('shoal_jobs', CASE WHEN count(*) > 64 THEN '*'
                                    ELSE coalesce(string_agg(partition::text, ','), '') END)
FROM touched
"""

# Claim a batch in one statement. The node row is locked first, so a claim and a concurrent
# declaration of death are ordered: either the claim sees the node dead and takes nothing, or the
# death (which locks the node row before requeueing) waits and then requeues what was claimed.
# The section comes from that locked row, which every rebalance updates with `partitions`.
# Candidates are the oldest few queued jobs of each owned partition (index jobs_queued_partition),
# so a claim costs the same whether or not other sections have a backlog older than ours; the
# batch is the oldest `limit` of them. `cap` is generous enough that with ids spread round-robin
# over partitions the batch is exactly the section's oldest runnable jobs. Only jobs of the tasks
# the node registers are candidates (in a rolling deploy, jobs of a task the owner lacks wait for
# a node that has it: see STRANDED). The claimed jobs are counted from queued to running in the
# node's counter shard.
CLAIM = f"""
WITH me AS (
    SELECT section, tasks,
           least(%(limit)s, greatest(4, ceil(%(limit)s * 2.0
                                             / greatest(1, cardinality(section)))))::int AS cap
    FROM nodes
    WHERE id = %(node)s AND {ELIGIBLE_SQL}
    FOR NO KEY UPDATE
), candidates AS MATERIALIZED (
    -- The oldest few runnable jobs of each owned partition, computed once. Materialised so the
    -- planner cannot re-run this per row of the queue: with statistics gathered before a burst
    -- of submits it once did, and a claim over a 1M-row table took 37 s instead of milliseconds.
    SELECT c.id FROM me CROSS JOIN unnest(me.section) AS s(partition)
    CROSS JOIN LATERAL (
        SELECT q.id FROM jobs q
        WHERE q.partition = s.partition AND q.state = 'queued' AND q.run_after <= {NOW}
          AND q.task = ANY(me.tasks)
        ORDER BY q.partition, q.id LIMIT me.cap
    ) c
), picked AS (
    -- Re-checked through the primary key: `state || ''` matches no partial index, so stale
    -- statistics cannot turn this into a scan of the whole queue.
    SELECT j.id FROM jobs j
    WHERE j.id = ANY(ARRAY(SELECT id FROM candidates))
      AND j.state || '' = 'queued' AND j.run_after <= {NOW}
    ORDER BY j.id
    LIMIT %(limit)s
    FOR UPDATE OF j SKIP LOCKED
), claimed AS (
    UPDATE jobs j
    SET state = 'running', claimer = %(node)s, claim_token = %(token)s,
        attempts = j.attempts + 1, started_at = {NOW}, progress = 0, progress_message = NULL
    FROM picked WHERE j.id = picked.id
    RETURNING j.*
), tallied AS (
    {add_counts(_moved_from("queued", "claimed"), "%(shard)s")}
), flipped AS (
    UPDATE nodes n SET state = 'working', state_changed_at = {NOW}
    WHERE n.id = %(node)s AND n.state = 'waiting' AND EXISTS (SELECT 1 FROM claimed)
    RETURNING n.id, n.name
), noted AS (
    INSERT INTO history (at, kind, node_id, node_name, from_state, to_state, reason)
    SELECT {NOW}, 'node_state', id, name, 'waiting', 'working', %(why)s FROM flipped
)
SELECT {JOB_COLUMNS} FROM claimed ORDER BY id
"""

# Idle nodes poll: look without locking anything before claiming. One probe per owned partition
# (a LATERAL with LIMIT stays a probe whatever the statistics say: with statistics taken while
# no job was queued, the planner once hashed every queued job of the table on each look).
ANY_CLAIMABLE = f"""
SELECT 1 FROM nodes n CROSS JOIN unnest(n.section) AS s(partition)
CROSS JOIN LATERAL (
    SELECT 1 FROM jobs j
    WHERE j.partition = s.partition AND j.state = 'queued' AND j.run_after <= {NOW}
      AND j.task = ANY(n.tasks)
    LIMIT 1
) found
WHERE n.id = %s
LIMIT 1
"""

# Rolling deploys: each owner of partitions with its tasks, the tasks of a node that may own a
# section, the runnable queued jobs of one task in one owner's section (through
# jobs_queued_partition, one probe per partition), and the claim of jobs so found, as CLAIM
# claims (see `Store.claim_stranded`).
OWNER_TASKS = """
SELECT id, tasks FROM nodes WHERE id IN (SELECT owner FROM partitions WHERE owner IS NOT NULL)
"""
ELIGIBLE_TASKS = f"SELECT tasks FROM nodes WHERE id = %s AND {ELIGIBLE_SQL}"
STRANDED = f"""
SELECT c.id FROM partitions p CROSS JOIN LATERAL (
    SELECT q.id FROM jobs q
    WHERE q.partition = p.partition AND q.state = 'queued' AND q.run_after <= {NOW}
      AND q.task = %(task)s
    ORDER BY q.partition, q.id LIMIT %(limit)s
) c
WHERE p.owner = %(owner)s
ORDER BY c.id LIMIT %(limit)s
"""
CLAIM_STRANDED = f"""
WITH me AS (
    SELECT id FROM nodes WHERE id = %(node)s AND {ELIGIBLE_SQL} FOR NO KEY UPDATE
), picked AS (
    SELECT j.id FROM jobs j
    WHERE j.id = ANY(%(ids)s::bigint[]) AND j.state || '' = 'queued'
      AND EXISTS (SELECT 1 FROM me)
    ORDER BY j.id
    FOR UPDATE OF j SKIP LOCKED
), claimed AS (
    UPDATE jobs j
    SET state = 'running', claimer = %(node)s, claim_token = %(token)s,
        attempts = j.attempts + 1, started_at = {NOW}, progress = 0, progress_message = NULL
    FROM picked WHERE j.id = picked.id
    RETURNING j.*
), tallied AS (
    {add_counts(_moved_from("queued", "claimed"), "%(shard)s")}
), flipped AS (
    UPDATE nodes n SET state = 'working', state_changed_at = {NOW}
    WHERE n.id = %(node)s AND n.state = 'waiting' AND EXISTS (SELECT 1 FROM claimed)
    RETURNING n.id, n.name
), noted AS (
    INSERT INTO history (at, kind, node_id, node_name, from_state, to_state, reason)
    SELECT {NOW}, 'node_state', id, name, 'waiting', 'working', %(why)s FROM flipped
)
SELECT {JOB_COLUMNS} FROM claimed ORDER BY id
"""

RUNNING_ATTEMPTS = (
    "SELECT id, attempts FROM jobs WHERE state = 'running' AND claimer = %s ORDER BY id"
)

# After a claim whose outcome was lost with its connection: the jobs it took, if it committed.
CLAIMED_BY_TOKEN = f"""
SELECT {JOB_COLUMNS} FROM jobs
WHERE state = 'running' AND claimer = %s AND claim_token = %s ORDER BY id
"""

# A batch of outcomes travels as one JSON document of rows (see `outcome_batch`): one C-speed
# encode on the node and one parse here, where seven parallel arrays cost several times more on
# both sides.
OUTCOMES = """
SELECT (e->>0)::bigint AS id, (e->>1)::int AS attempt, (e->>2)::bool AS ok, e->>3 AS result,
       e->>4 AS error, e->>5 AS traceback, (e->>6)::float8 AS retry_in_s
FROM jsonb_array_elements(%(batch)s::jsonb) AS e
"""


def outcome_batch(outcomes: Sequence[Outcome]) -> str:
    """The JSON document OUTCOMES reads: one row per outcome."""
    return json.dumps(
        [
            [o.job_id, o.attempt, o.succeeded, o.result_json, o.error, o.traceback, o.retry_in_s]
            for o in outcomes
        ],
        separators=(",", ":"),
    )


def held_rows(rows: str) -> str:
    """CTEs `me` and `held`: the rows of query `rows` (columns id, attempt, ...) whose job the node
    %(node)s still holds under that attempt, each with the ctid of the job's row.

    Every writer of a node's running jobs other than the node itself (a declaration of death, a
    requeue) locks that node's row first; so does `me`, and `held` is empty if the node is dead by
    the time it holds the lock. Each row finds its job by one primary-key lookup, whatever the
    statistics say: a LATERAL subquery with LIMIT is never turned into a join, and `state || ''`
    matches no partial index. (With statistics taken while the table was empty, the planner once
    scanned the node's running jobs once per outcome: a finish of a thousand outcomes took 700 ms
    instead of 10.) An update joins `held` on `j.ctid = held.tid AND j.id = held.id` and adds no
    selective condition of its own, so the planner has no reason to drive it from a scan of `jobs`.
    """
    return f"""
me AS (
    SELECT id FROM nodes WHERE id = %(node)s AND state <> 'dead' FOR NO KEY UPDATE
), held AS MATERIALIZED (
    SELECT r.*, t.tid FROM ({rows}) AS r CROSS JOIN LATERAL (
        SELECT j.ctid AS tid FROM jobs j
        WHERE j.id = r.id AND j.claimer = %(node)s AND j.attempts = r.attempt
          AND j.state || '' = 'running'
        LIMIT 1
    ) t
    WHERE EXISTS (SELECT 1 FROM me)
)"""


# Record a batch of outcomes in one statement, each fenced by (claimer, attempt, running); see
# `held_rows` for how the rows are found and why.
FINISH = f"""
WITH {held_rows(OUTCOMES)}, done AS (
    UPDATE jobs j SET
        state = CASE WHEN o.ok THEN 'succeeded' WHEN o.retry_in_s IS NULL THEN 'failed'
                     ELSE 'queued' END,
        result = CASE WHEN o.ok THEN o.result ELSE j.result END,
        error = CASE WHEN o.ok THEN NULL ELSE o.error END,
        traceback = CASE WHEN o.ok THEN NULL ELSE o.traceback END,
        progress = CASE WHEN o.ok THEN 1.0 WHEN o.retry_in_s IS NULL THEN j.progress
                        ELSE 0 END,
        claimer = CASE WHEN NOT o.ok AND o.retry_in_s IS NOT NULL THEN NULL ELSE j.claimer END,
        claim_token = NULL,
        run_after = CASE WHEN NOT o.ok AND o.retry_in_s IS NOT NULL
                         THEN {NOW} + o.retry_in_s ELSE j.run_after END,
        finished_at = CASE WHEN o.ok OR o.retry_in_s IS NULL THEN {NOW} ELSE j.finished_at END
    FROM held o
    WHERE j.ctid = o.tid AND j.id = o.id
    RETURNING j.id, j.attempts, j.state, j.task
), tallied AS (
    {add_counts(_moved_from("running", "done"), "%(shard)s")}
), counted AS (
    UPDATE nodes SET processed = processed + (SELECT count(*) FROM done),
                     failed = failed + (SELECT count(*) FROM done WHERE state <> 'succeeded')
    WHERE id = %(node)s AND EXISTS (SELECT 1 FROM done)
)
SELECT id, attempts FROM done
"""

# For a finish retried after an unknown outcome: the rows as the earlier try would have left them.
FINISHED_AS_SENT = f"""
SELECT j.id, o.attempt FROM jobs j
JOIN ({OUTCOMES}) AS o ON j.id = o.id
WHERE j.attempts = o.attempt AND (
       (o.ok AND j.state = 'succeeded' AND j.claimer = %(node)s)
    OR (NOT o.ok AND o.retry_in_s IS NULL AND j.state = 'failed' AND j.claimer = %(node)s
        AND j.error IS NOT DISTINCT FROM o.error)
    OR (NOT o.ok AND o.retry_in_s IS NOT NULL AND j.state = 'queued' AND j.claimer IS NULL
        AND j.error IS NOT DISTINCT FROM o.error))
"""

# Progress of running jobs, fenced and planned as FINISH is.
PROGRESS = f"""
WITH {
    held_rows(
        "SELECT * FROM unnest(%(ids)s::bigint[], %(attempts)s::int[], %(fractions)s::float8[],"
        " %(messages)s::text[]) AS u(id, attempt, fraction, message)"
    )
}
UPDATE jobs j SET progress = u.fraction, progress_message = u.message
FROM held u
WHERE j.ctid = u.tid AND j.id = u.id
"""

RELEASE = f"""
WITH released AS (
    UPDATE jobs SET state = 'queued', claimer = NULL, claim_token = NULL,
                    attempts = attempts - 1, run_after = {NOW}, progress = 0,
                    progress_message = NULL
    WHERE id = ANY (%(ids)s::bigint[]) AND claimer = %(node)s AND state = 'running'
    RETURNING task, state
), tallied AS (
    {add_counts(_moved_from("running", "released"), "%(shard)s")}
)
SELECT count(*), pg_notify('shoal_jobs', '*') FROM released HAVING count(*) > 0
"""

CANCEL = f"""
WITH cancelled AS (
    UPDATE jobs SET state = 'cancelled', finished_at = {NOW} WHERE id = %(id)s AND state = 'queued'
    RETURNING task, state
), tallied AS (
    {add_counts(_moved_from("queued", "cancelled"), str(SUBMITTER_SHARD))}
)
SELECT count(*) FROM cancelled
"""

HEARTBEAT = f"""
UPDATE nodes n SET heartbeat_at = {NOW}, lease_expires_at = {NOW} + %(lease)s
FROM cluster c
WHERE n.id = %(node)s AND n.state <> 'dead' AND c.id = 1
RETURNING {NOW}, c.epoch, n.section, n.pause_requested, n.state
"""

INSERT_NODE = f"""
INSERT INTO nodes (name, state, host, pid, concurrency, tasks, started_at, heartbeat_at,
                   lease_expires_at, state_changed_at, isolated)
VALUES (%(name)s, 'initializing', %(host)s, %(pid)s, %(concurrency)s, %(tasks)s, {NOW}, {NOW},
        {NOW} + %(lease)s, {NOW}, %(isolated)s)
RETURNING id
"""

NODE_STATE_EVENT = f"""
INSERT INTO history (at, kind, node_id, node_name, from_state, to_state, reason)
VALUES ({NOW}, 'node_state', %s, %s, %s, %s, %s)
"""

MOVE_NODE = f"""
UPDATE nodes SET state = %(new)s, state_changed_at = {NOW},
                 section = CASE WHEN %(new)s = 'dead' THEN '{{}}'::int[] ELSE section END
WHERE id = %(node)s AND state = %(old)s
RETURNING name
"""

ANY_EXPIRED = f"SELECT 1 FROM nodes WHERE state <> 'dead' AND lease_expires_at < {NOW} LIMIT 1"

# Requeue only after the lease has expired in database time: a slow commit is not a death.
MARK_EXPIRED_DEAD = f"""
UPDATE nodes n SET state = 'dead', state_changed_at = {NOW}, section = '{{}}'
FROM (SELECT id, state FROM nodes
      WHERE state <> 'dead' AND lease_expires_at < {NOW}
      ORDER BY id FOR UPDATE) old
WHERE n.id = old.id
RETURNING n.id, n.name, old.state, n.isolated
"""

# A departed node's running jobs go back to the queue, the attempt counting; a job with no
# attempts left fails. The error is `%(reason)s` (the node and why it went) followed by a tail
# whose marks stand for the job's attempt and maximum (see `texts`). When the node died
# (`%(died)s`, not a clean stop) each job's `node_deaths` grows by one, and a job whose count
# reaches the cluster's `quarantine_after` fails with `%(quarantine_head)s`, the reason and
# `%(quarantine_tail)s` instead: it most likely kills the nodes that run it. SET expressions
# read the row as it was before the update. One statement, so the counters are adjusted by one
# upsert in (task, state) order, in the dead node's shard. Returns how many jobs went back to
# the queue.
REQUEUE_ORPHANS = f"""
WITH orphans AS (
    UPDATE jobs SET
        node_deaths = node_deaths + %(died)s::int,
        state = CASE WHEN attempts >= max_attempts
                       OR (%(died)s AND node_deaths + 1 >= c.quarantine_after) THEN 'failed'
                     ELSE 'queued' END,
        finished_at = CASE WHEN attempts >= max_attempts
                             OR (%(died)s AND node_deaths + 1 >= c.quarantine_after) THEN {NOW}
                           ELSE finished_at END,
        claimer = CASE WHEN attempts >= max_attempts
                         OR (%(died)s AND node_deaths + 1 >= c.quarantine_after) THEN claimer END,
        run_after = CASE WHEN attempts >= max_attempts
                           OR (%(died)s AND node_deaths + 1 >= c.quarantine_after) THEN run_after
                         ELSE {NOW} END,
        progress = CASE WHEN attempts >= max_attempts
                          OR (%(died)s AND node_deaths + 1 >= c.quarantine_after) THEN progress
                        ELSE 0 END,
        progress_message = CASE WHEN attempts >= max_attempts
                                  OR (%(died)s AND node_deaths + 1 >= c.quarantine_after)
                                THEN progress_message END,
        claim_token = NULL, traceback = NULL,
        error = CASE WHEN %(died)s AND node_deaths + 1 >= c.quarantine_after
                     THEN replace(%(quarantine_head)s, %(deaths_mark)s, (node_deaths + 1)::text)
                     ELSE '' END
            || %(reason)s || replace(replace(
                CASE WHEN %(died)s AND node_deaths + 1 >= c.quarantine_after
                     THEN %(quarantine_tail)s
                     WHEN attempts >= max_attempts THEN %(failed_tail)s
                     ELSE %(requeued_tail)s END,
                %(attempt_mark)s, attempts::text), %(max_mark)s, max_attempts::text)
    FROM cluster c
    WHERE c.id = 1 AND jobs.state = 'running' AND jobs.claimer = %(node)s
    RETURNING jobs.task, jobs.state
), tallied AS (
    {add_counts(_moved_from("running", "orphans"), "%(shard)s")}
)
SELECT count(*) FILTER (WHERE state = 'queued') FROM orphans
"""
SET_QUARANTINE_AFTER = "UPDATE cluster SET quarantine_after = %s WHERE id = 1"

WAKE_ALL = "SELECT pg_notify('shoal_jobs', '*')"

# Each node that may own a section, with its slots: its share of the partitions follows them.
ELIGIBLE_NODES = f"SELECT id, concurrency FROM nodes WHERE {ELIGIBLE_SQL} ORDER BY id"
OWNERS = "SELECT owner FROM partitions ORDER BY partition"
HOMES = "SELECT home FROM partitions ORDER BY partition"
# Owners and homes of the changed partitions; `moved_at` only where the owner changes.
SET_OWNERS = f"""
UPDATE partitions p SET owner = v.owner, home = v.home,
       moved_at = CASE WHEN p.owner IS NOT DISTINCT FROM v.owner THEN p.moved_at ELSE {NOW} END
FROM unnest(%s::int[], %s::bigint[], %s::bigint[]) AS v(partition, owner, home)
WHERE p.partition = v.partition
"""
SET_SECTION = "UPDATE nodes SET section = %s WHERE id = %s"
BUMP_EPOCH = "UPDATE cluster SET epoch = epoch + 1 WHERE id = 1 RETURNING epoch"
REBALANCE_EVENT = f"""
INSERT INTO history (at, kind, epoch, owners, reason)
VALUES ({NOW}, 'rebalance', %s, %s, %s)
"""

FIND_NODE_BY_ID = "SELECT id, name, state FROM nodes WHERE id = %s"
FIND_NODE_BY_NAME = """
SELECT id, name, state FROM nodes WHERE name = %s ORDER BY state = 'dead', id DESC LIMIT 1
"""
SET_PAUSE = "UPDATE nodes SET pause_requested = %s WHERE id = %s"
PAUSE_EVENT = f"""
INSERT INTO history (at, kind, node_id, node_name, reason)
VALUES ({NOW}, 'pause_request', %s, %s, %s)
"""

# Sample the cluster once per bucket of `interval` seconds; `at` is the bucket's end and the
# finish counts cover the bucket before it, as on every backend. Queued and running come from the
# counters; the finishes of one bucket from the finished_at index, bounded by the bucket.
SAMPLE = f"""
WITH t AS (SELECT {NOW} AS now, floor({NOW} / %(interval)s)::bigint AS bucket)
INSERT INTO samples (bucket, at, interval_s, queued, running, succeeded, failed, live_nodes,
                     oldest_queued_age_s)
SELECT t.bucket, t.bucket * %(interval)s, %(interval)s,
       (SELECT coalesce(sum(n), 0) FROM job_counts WHERE state = 'queued'),
       (SELECT coalesce(sum(n), 0) FROM job_counts WHERE state = 'running'),
       (SELECT count(*) FROM jobs WHERE state = 'succeeded'
          AND finished_at >= (t.bucket - 1) * %(interval)s
          AND finished_at < t.bucket * %(interval)s),
       (SELECT count(*) FROM jobs WHERE state = 'failed'
          AND finished_at >= (t.bucket - 1) * %(interval)s
          AND finished_at < t.bucket * %(interval)s),
       (SELECT count(*) FROM nodes WHERE {SECTION_STATES_SQL}),
       (SELECT greatest(0, t.now - created_at) FROM jobs
          WHERE state = 'queued' AND partition >= 0 ORDER BY id LIMIT 1)
FROM t
WHERE NOT EXISTS (SELECT 1 FROM samples s WHERE s.bucket = t.bucket)
ON CONFLICT (bucket) DO NOTHING
RETURNING bucket
"""

OLDEST_QUEUED_AGE = f"""
SELECT greatest(0, {NOW} - created_at) FROM jobs
WHERE state = 'queued' AND partition >= 0  -- the term that selects index jobs_queued_by_id
ORDER BY id LIMIT 1
"""

NODE_STATES_AT = f"""
SELECT {NODE_COLUMNS}, past.to_state, past.at
FROM nodes n
CROSS JOIN LATERAL (
    SELECT h.to_state, h.at FROM history h
    WHERE h.node_id = n.id AND h.kind = 'node_state' AND h.at <= %(at)s
    ORDER BY h.at DESC, h.id DESC LIMIT 1
) past
WHERE n.started_at <= %(at)s
ORDER BY n.id
"""

# -- schema ---------------------------------------------------------------------------------------

SCHEMA_TABLE = """
CREATE TABLE IF NOT EXISTS shoal_schema (
    version    integer PRIMARY KEY,
    name       text NOT NULL,
    applied_at double precision NOT NULL DEFAULT extract(epoch from clock_timestamp())
)
"""
APPLIED_MIGRATIONS = "SELECT version FROM shoal_schema"
RECORD_MIGRATION = "INSERT INTO shoal_schema (version, name) VALUES (%s, %s)"
SCHEMA_VERSION = "SELECT max(version) FROM shoal_schema"
CLUSTER_PARTITIONS = "SELECT partitions FROM cluster WHERE id = 1"
INSERT_CLUSTER = f"""
INSERT INTO cluster (id, partitions, created_at) VALUES (1, %s, {NOW})
ON CONFLICT (id) DO NOTHING
"""
# Partitions first..last-1 (all of them at init, the new ones when P grows).
INSERT_PARTITIONS = """
INSERT INTO partitions (partition, owner) SELECT p, NULL FROM generate_series(%s, %s - 1) p
ON CONFLICT (partition) DO NOTHING
"""
SET_PARTITIONS = "UPDATE cluster SET partitions = %s WHERE id = 1"

# -- reads ----------------------------------------------------------------------------------------

READ_JOB = f"SELECT {JOB_COLUMNS} FROM jobs WHERE id = %s"
KNOWN_TASKS = "SELECT DISTINCT unnest(tasks) FROM nodes WHERE state <> 'dead'"
CLUSTER = "SELECT partitions, epoch FROM cluster WHERE id = 1"
NODES_IN_VIEW = f"{NODE_WITH_RUNNING} WHERE state <> 'dead' OR state_changed_at >= %s ORDER BY id"
READ_NODE = f"{NODE_WITH_RUNNING} WHERE id = %s"
READ_HISTORY = (
    f"SELECT {EVENT_COLUMNS} FROM history WHERE at >= %s AND at <= %s ORDER BY at, id LIMIT %s"
)
LAST_REBALANCE = (
    f"SELECT {EVENT_COLUMNS} FROM history WHERE {ASSIGNMENT_EVENTS_SQL} AND at <= %s"
    " ORDER BY at DESC, id DESC LIMIT 1"
)
READ_SAMPLES = (
    "SELECT at, interval_s, queued, running, succeeded, failed, live_nodes,"
    " oldest_queued_age_s FROM samples WHERE at >= %s AND at <= %s ORDER BY at"
)
LIST_FINISHED = (
    f"SELECT {JOB_COLUMNS} FROM jobs WHERE finished_at >= %s ORDER BY finished_at, id LIMIT %s"
)
SECTION_OF_NODE = "SELECT section FROM nodes WHERE id = %s"

# -- nodes ----------------------------------------------------------------------------------------

OUR_REGISTRATION = (
    "SELECT id FROM nodes WHERE name = %s AND host = %s AND pid = %s AND state = 'initializing'"
)
LIVE_HOLDER = (
    f"SELECT id, state, lease_expires_at - {NOW} FROM nodes WHERE name = %s AND state <> 'dead'"
)
NODE_STATE = "SELECT state FROM nodes WHERE id = %s"

# -- jobs, off the hot paths ----------------------------------------------------------------------

JOB_EXISTS = "SELECT 1 FROM jobs WHERE id = %s"
JOB_STATE = "SELECT state FROM jobs WHERE id = %s"
CLAIMED_BY_TOKENS = f"""
SELECT {JOB_COLUMNS} FROM jobs
WHERE state = 'running' AND claimer = %s AND claim_token = ANY (%s)
"""

# -- retention ------------------------------------------------------------------------------------

# The finished jobs one prune rule selects (see `rules.PruneRule`), on index jobs_state_finished.
# %(node)s NULL: every partition; else only the partitions that node owns now, so live nodes
# share the pruning without a leader and never pick the same rows.
PRUNABLE = """
SELECT id FROM jobs
WHERE state = %(state)s AND finished_at IS NOT NULL AND finished_at < %(before)s
  AND (%(node)s::bigint IS NULL
       OR partition = ANY ((SELECT section FROM nodes WHERE id = %(node)s)::int[]))
  AND (%(only)s::text[] IS NULL OR task = ANY (%(only)s::text[]))
  AND NOT task = ANY (%(except)s::text[])
"""

# Delete one batch of prunable jobs, oldest finish first, and count them out of their
# (task, state) in the same statement. SKIP LOCKED: a row someone else holds (a `shoal prune`
# beside the nodes) is left for the next pass instead of waited on.
PRUNE_JOBS = f"""
WITH doomed AS (
    {PRUNABLE}
    ORDER BY finished_at LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
), gone AS (
    -- By primary key, one lookup per row: joined to `doomed` instead, the planner may hash it
    -- against a scan of the whole table.
    DELETE FROM jobs j WHERE j.id = ANY (ARRAY(SELECT id FROM doomed))
    RETURNING j.task, j.state
), tallied AS (
    {add_counts("SELECT task, state, -1 FROM gone", "%(shard)s")}
)
SELECT task, count(*) FROM gone GROUP BY task
"""

COUNT_PRUNABLE = f"""
SELECT j.task, count(*) FROM jobs j WHERE j.id IN ({PRUNABLE}) GROUP BY j.task
"""

# History older than %(before)s, except the latest rebalance and each node's latest state change:
# the views of the past start from them, however long ago they happened. Deleted through arrays
# of keys, one lookup each, for the reason given at PRUNE_JOBS.
PRUNABLE_EVENTS = f"""
SELECT h.id FROM history h
WHERE h.at < %(before)s
  AND h.id <> coalesce((SELECT r.id FROM history r WHERE r.{ASSIGNMENT_EVENTS_SQL}
                        ORDER BY r.at DESC, r.id DESC LIMIT 1), 0)
  AND (h.kind <> 'node_state' OR h.id <> (
        SELECT s.id FROM history s WHERE s.node_id = h.node_id AND s.kind = 'node_state'
        ORDER BY s.at DESC, s.id DESC LIMIT 1))
"""
PRUNE_EVENTS = f"""
DELETE FROM history WHERE id = ANY (ARRAY({PRUNABLE_EVENTS} ORDER BY h.at LIMIT %(limit)s
                                          FOR UPDATE SKIP LOCKED))
"""
COUNT_PRUNABLE_EVENTS = f"SELECT count(*) FROM ({PRUNABLE_EVENTS}) e"
PRUNE_SAMPLES = """
DELETE FROM samples WHERE bucket = ANY (ARRAY(
    SELECT bucket FROM samples WHERE at < %(before)s ORDER BY bucket LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED))
"""
COUNT_PRUNABLE_SAMPLES = "SELECT count(*) FROM samples WHERE at < %(before)s"

# Where the stored history begins: the later of the first sample and the first event (pruning
# keeps a few old events, the latest of each kind, but no old samples).
HISTORY_START = """
SELECT greatest((SELECT at FROM samples ORDER BY bucket LIMIT 1),
                (SELECT at FROM history ORDER BY at LIMIT 1))
"""

# -- load moves -----------------------------------------------------------------------------------

# What the load rule looks at: each partition's owner, home and how long ago it last moved; each
# eligible node's slots and running jobs; and each partition's runnable backlog (at most
# 64 jobs counted, one probe per partition through jobs_queued_partition, so the
# read costs the same however long the queue is).
LOAD_PARTITIONS = f"""
SELECT owner, home, {NOW} - moved_at FROM partitions ORDER BY partition
"""
LOAD_NODES = f"""
SELECT n.id, n.concurrency, (SELECT count(*) FROM jobs j WHERE j.state = 'running'
                             AND j.claimer = n.id)
FROM nodes n WHERE {ELIGIBLE_SQL}
"""
LOAD_BACKLOG = f"""
SELECT p.partition, b.n, b.waited FROM partitions p
CROSS JOIN LATERAL (
    SELECT count(*) AS n, {NOW} - min(greatest(q.created_at, q.run_after)) AS waited
    FROM (SELECT j.created_at, j.run_after FROM jobs j
          WHERE j.partition = p.partition AND j.state = 'queued' AND j.run_after <= {NOW}
          ORDER BY j.partition, j.id LIMIT 64) q
) b
WHERE b.n > 0
"""
LOAD_MOVE_EVENT = f"""
INSERT INTO history (at, kind, epoch, owners, reason)
VALUES ({NOW}, 'load_move', %s, %s, %s)
"""
RECENT_LOAD_MOVES = f"""
SELECT count(*) FROM history WHERE kind = 'load_move' AND at >= {NOW} - 60
"""
