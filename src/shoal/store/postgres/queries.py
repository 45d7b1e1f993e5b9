"""The PostgreSQL store's statements, named as their SQLite counterparts in `sqlite/queries.py`.

The hot paths (submit, claim, finish) are each one statement and so one round trip: batches travel
as arrays and are unnested in the database. Time is always the database's (`NOW`), never the
caller's.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import Any

from shoal.model import NewJob, Outcome
from shoal.store.rules import (
    ASSIGNMENT_EVENTS_SQL,
    ELIGIBLE_SQL,
    JOB_COLUMNS,
    SCHEDULES_SQL,
    SECTION_STATES_SQL,
)

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
# (task, state): cancels write shard 0, submitters the shard of their process (below), each node
# its own slot of COUNTER_SHARDS. Slots rather than one shard per node id, because ids grow with
# every restart and the reads sum every row; two live nodes sharing a slot only wait for each
# other, as all writers once did.
COUNTER_SHARDS = 32
SUBMITTER_SHARD = 0  # cancels, and the first of the submitters' shards
# Submitters count new jobs in shards 0, -1, ... -(SUBMITTER_SHARDS - 1), one per process, so
# that submitting processes do not queue on one counter row for each other's commits.
SUBMITTER_SHARDS = 16


def submitter_shard() -> int:
    """The counter shard this process's submits write to."""
    return SUBMITTER_SHARD - os.getpid() % SUBMITTER_SHARDS


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


# -- task limits (see store/limits.py for the rules these state in SQL) --------------------------

# A room larger than any batch: what a limit that is not set leaves.
_NO_LIMIT = "2147483647"


def _rate_k(row: str) -> str:
    """`limits.rate_window`'s k for the limits row `row` (NULL without a rate limit; at least
    1, as max_per_s > 0: not `greatest(1, ...)`, which would turn NULL into 1)."""
    return f"ceil({row}.max_per_s)"


def _rate_window_s(row: str) -> str:
    return f"({_rate_k(row)} / {row}.max_per_s)"


def is_limited(row: str) -> str:
    """Whether the limits row `row` limits its task. A row whose limits were lifted stays,
    dormant (nodes need no DELETE grant): nothing counts into it or locks it until a later
    registration limits the task again and counts its running jobs afresh."""
    return f"({row}.max_running IS NOT NULL OR {row}.max_per_s IS NOT NULL)"


def limit_room(row: str) -> str:
    """How many more jobs of the limits row `row`'s task may start now (`limits.room`)."""
    return f"""least(
        coalesce({row}.max_running - {row}.running, {_NO_LIMIT}),
        coalesce({_rate_k(row)}::int - (SELECT count(*) FROM unnest({row}.starts) AS x
                                       WHERE x > {NOW} - {_rate_window_s(row)}), {_NO_LIMIT}))"""


def record_starts(row: str, n: str) -> str:
    """The starts the limits row `row` keeps after `n` more now (`limits.record_starts`)."""
    return f"""CASE WHEN {row}.max_per_s IS NULL THEN '{{}}'::float8[] ELSE ARRAY(
        SELECT x FROM (SELECT x FROM unnest({row}.starts || array_fill({NOW}, ARRAY[{n}::int])) x
                       WHERE x > {NOW} - {_rate_window_s(row)}
                       ORDER BY x DESC LIMIT {_rate_k(row)}) kept
        ORDER BY x) END"""


# The tasks whose limits leave no room now, as this statement's snapshot sees them (no lock).
FULL_TASKS = f"ARRAY(SELECT l.task FROM task_limits l WHERE {limit_room('l')} <= 0)"


def give_back_room(moved: str) -> str:
    """CTEs that give back the room of the jobs in CTE `moved` (column task) that have left
    `running` (or `claimed`), then `left_running`: `moved`'s rows, for the job counters.

    The limits rows are locked in task order, as every claim locks them, before any counter
    row: `left_running` reads only once `freeing` has locked them all, and the counters are
    written from it. With every writer taking limits rows before counter rows, and each kind
    in one order, two statements never wait for each other in a circle. A task whose running
    count falls below its limit wakes every node (its queued jobs may be anywhere). Tasks
    without limits have no row: nothing is locked for them.
    """
    return f"""
freeing AS MATERIALIZED (
    SELECT l.task FROM task_limits l
    WHERE l.task IN (SELECT task FROM {moved}) AND {is_limited("l")}
    ORDER BY l.task
    FOR NO KEY UPDATE
), freed AS (
    UPDATE task_limits l SET running = l.running - g.n
    FROM (SELECT task, count(*) AS n FROM {moved} GROUP BY task) g
    WHERE l.task = g.task AND l.task IN (SELECT task FROM freeing)
    RETURNING l.running < l.max_running AND l.running + g.n >= l.max_running AS reopened
), woken AS (
    SELECT pg_notify('shoal_jobs', '*') FROM freed WHERE reopened LIMIT 1
), left_running AS (
    SELECT m.* FROM {moved} m
    WHERE (SELECT count(*) FROM freeing) >= 0 AND (SELECT count(*) FROM woken) >= 0
)"""


COUNT_BY_STATE = "SELECT state, sum(n) FROM job_counts GROUP BY state"
COUNT_BY_TASK = "SELECT task, state, sum(n) FROM job_counts GROUP BY task, state HAVING sum(n) <> 0"

# Ids for a submit that finds too few reserved ahead by an earlier SUBMIT (see reserve.py).
ALLOCATE_IDS = "SELECT nextval('jobs_id_seq') FROM generate_series(1, %s)"


def submit_batch(ids: Sequence[int], jobs: Sequence[NewJob]) -> str:
    """The JSON document SUBMIT reads: one row per job (see OUTCOMES for why JSON)."""
    return json.dumps(
        [_submit_row(i, j) for i, j in zip(ids, jobs, strict=True)], separators=(",", ":")
    )


def _submit_row(i: int, j: NewJob) -> list[Any]:
    return [i, j.task, j.args_json, j.kwargs_json, j.max_attempts, j.timeout_s, j.delay_s,
            j.priority, j.key]  # fmt: skip


# The channel that wakes one node: a submit notifies each touched partition's owner on its own
# channel (with the partitions it touched there, or '*' for many), so a submit wakes the nodes
# that own its jobs rather than every node's listener; partitions that no node owns, and every
# '*' (requeues, releases, rebalances, a limit with room again), go to `shoal_jobs`, which every
# node listens to as well. A partition that moves while a submit runs may be announced to its
# old owner: the new one finds the job at its next claim (every move wakes everyone first).
NODE_CHANNEL_PREFIX = "shoal_jobs_n"


def node_channel(node_id: int) -> str:
    return f"{NODE_CHANNEL_PREFIX}{int(node_id)}"


def node_channel_sql(owner: str) -> str:
    return f"'{NODE_CHANNEL_PREFIX}' || {owner}"


# One statement: insert the batch with its preallocated ids and notify the owners of the
# touched partitions (see `node_channel`), counting the new jobs. Returns how many
# rows went in, and `ahead` ids reserved for the store's next submit (see reserve.py), taken in
# this transaction, so they cost no commit of their own.
SUBMIT = f"""
WITH ins AS (
    INSERT INTO jobs (id, partition, task, args, kwargs, state, max_attempts, timeout_s,
                      run_after, created_at, priority, key, parked)
    SELECT b.id, b.id %% c.partitions, b.task, b.args, b.kwargs, 'queued', b.max_attempts,
           b.timeout_s, {NOW} + b.delay_s, {NOW}, b.priority, b.key, b.delay_s > %(park_after)s
    FROM (
        SELECT (e->>0)::bigint AS id, e->>1 AS task, e->>2 AS args, e->>3 AS kwargs,
               (e->>4)::int AS max_attempts, (e->>5)::float8 AS timeout_s,
               (e->>6)::float8 AS delay_s, (e->>7)::smallint AS priority, e->>8 AS key
        FROM jsonb_array_elements(%(batch)s::jsonb) AS e
    ) b
    CROSS JOIN cluster c
    RETURNING partition, task
), tallied AS (
    {add_counts("SELECT task, 'queued', 1 FROM ins", "%(shard)s")}
), touched AS (
    SELECT p.owner, count(*) AS n, string_agg(i.partition::text, ',') AS listed
    FROM (SELECT DISTINCT partition FROM ins) i
    LEFT JOIN partitions p ON p.partition = i.partition
    GROUP BY p.owner
), woken AS MATERIALIZED (
    SELECT pg_notify(coalesce({node_channel_sql("t.owner")}, 'shoal_jobs'),
                     CASE WHEN t.n > 64 THEN '*' ELSE t.listed END)
    FROM touched t
)
SELECT (SELECT count(*) FROM ins),
       (SELECT count(*) FROM woken),
       ARRAY(SELECT nextval('jobs_id_seq') FROM generate_series(1, %(ahead)s))
"""

# Keys are taken in three statements, in one transaction (see migration 0007). A new key goes in
# at once; the insert of a key that another transaction is inserting waits for it to end.
# Batches insert and lock keys in key order, so two batches sharing keys wait, never deadlock.
TAKE_NEW_KEYS = """
INSERT INTO job_keys (key, job_id, window_s)
SELECT * FROM unnest(%(keys)s::text[], %(ids)s::bigint[], %(windows)s::float8[]) ORDER BY 1
ON CONFLICT (key) DO NOTHING
RETURNING key
"""
# The keys that exist: locked, with their holder as last committed.
LOCK_KEYS = """
SELECT key, job_id FROM job_keys WHERE key = ANY (%(keys)s::text[]) ORDER BY key FOR UPDATE
"""
# A locked key whose holder let it go (finished past its window, or pruned) passes to the new
# job. A statement of its own, so that its snapshot, taken after the locks were granted, sees
# the holder's job as committed by whoever held the key before (a subquery in the statement that
# waited for the lock would read jobs as they were before the wait).
TAKE_FREED_KEYS = f"""
UPDATE job_keys k SET job_id = v.job_id, window_s = v.window_s
FROM unnest(%(keys)s::text[], %(ids)s::bigint[], %(windows)s::float8[]) AS v(key, job_id, window_s)
WHERE k.key = v.key AND NOT EXISTS (
    SELECT 1 FROM jobs j WHERE j.id = k.job_id
      AND (j.state IN ('queued', 'claimed', 'running') OR j.finished_at + k.window_s > {NOW}))
RETURNING k.key
"""
# After a submit whose commit outcome was lost: which of its reserved ids went in.
JOBS_PRESENT = "SELECT id FROM jobs WHERE id = ANY (%s::bigint[])"
KEY_HOLDERS = "SELECT key, job_id FROM job_keys WHERE key = ANY (%s::text[])"

# What every claim does with the jobs it picked (CTE `picked`: id, task, priority), in order:
# `gate`, `admitted`, `started` hold them to the task limits (see CLAIM); the first
# `%(start)s` in claim order start at once (running, attempt charged, start stamped), and the
# rest are claimed ahead (`claimed`: held by the node, charged nothing, until START_CLAIMED
# starts them as workers free up). Both count out of `queued`; the node moves waiting ->
# working with its first claim. A claimed job holds its room in the limits as a running one
# does: it starts without asking them again.
_CLAIMED = f"""gate AS MATERIALIZED (
    -- [limits] The picked jobs' limits rows, locked in task order (as every writer of them
    -- locks them): claims of one limited task apply one at a time across the cluster. A row
    -- this waited for is read as its latest committed version (READ COMMITTED re-reads a row
    -- it had to wait to lock), so `running` and `starts`, and so the room, are exact.
    SELECT l.task, {limit_room("l")} AS room FROM task_limits l
    WHERE l.task IN (SELECT task FROM picked) AND {is_limited("l")}
    ORDER BY l.task
    FOR NO KEY UPDATE
), admitted AS (
    -- [limits] The picked jobs that fit: all of tasks without limits, the room of the others;
    -- numbered in claim order.
    SELECT r.id, row_number() OVER (ORDER BY r.priority DESC, r.id) AS nth FROM (
        SELECT p.id, p.task, p.priority,
               row_number() OVER (PARTITION BY p.task ORDER BY p.priority DESC, p.id) AS nth
        FROM picked p
    ) r LEFT JOIN gate g ON g.task = r.task
    WHERE g.task IS NULL OR r.nth <= g.room
), claimed AS (
    UPDATE jobs j
    SET state = CASE WHEN a.nth <= %(start)s THEN 'running' ELSE 'claimed' END,
        claimer = %(node)s, claim_token = %(token)s,
        attempts = j.attempts + CASE WHEN a.nth <= %(start)s THEN 1 ELSE 0 END,
        started_at = CASE WHEN a.nth <= %(start)s THEN {NOW} ELSE j.started_at END,
        progress = 0, progress_message = NULL
    FROM admitted a WHERE j.id = a.id
    RETURNING j.*
), started AS (
    -- [limits] The claimed jobs count into their limits rows (locked above).
    UPDATE task_limits l SET running = l.running + c.n, starts = {record_starts("l", "c.n")}
    FROM (SELECT task, count(*) AS n FROM claimed GROUP BY task) c
    WHERE l.task = c.task AND l.task IN (SELECT task FROM gate)
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
SELECT {JOB_COLUMNS} FROM claimed ORDER BY priority DESC, id"""


# Claim a batch in one statement. The node row is locked first, so a claim and a concurrent
# declaration of death are ordered: either the claim sees the node dead and takes nothing, or the
# death (which locks the node row before requeueing) waits and then requeues what was claimed.
# The section comes from that locked row, which every rebalance updates with `partitions`.
# Candidates are the first few queued jobs of each owned partition in claim order, highest
# priority first and then oldest (`head`: `_HEAD` walks jobs_queued_partition, `_HEAD_BY_TASK`
# goes task by task), so a claim costs the same whether or not other sections have a backlog
# older than ours; the batch is the first `limit` of them.
# `cap` is generous enough that with ids spread round-robin over partitions the batch is exactly
# the section's first runnable jobs. Only jobs of the tasks the node registers are candidates
# (in a rolling deploy, jobs of a task the owner lacks wait for a node that has it: see
# STRANDED). The claimed jobs are counted from queued to running in the node's counter shard.
#
# Task limits are one step of their own (`seen`, `within`; `gate`, `admitted`, `started`):
# candidates leave out the tasks with no room as the snapshot sees them, and at most each
# limited task's room of its jobs; the picked jobs' limits rows are then locked and the batch cut
# to the room they leave; the claimed jobs count into those rows. Jobs of tasks without limits
# lock no limits row (they have none).
#
# The claim commits synchronously, as every write does. With `synchronous_commit` off, a server
# crash just after a claim can lose it while its node already runs the jobs: they go back to the
# queue with the attempt uncounted and start again elsewhere under the same attempt number, one
# attempt run twice (the fault suite's immediate restart caught one). A flush of the WAL is the
# price of an attempt counted once.
def _claim(head: str, wanted: str = "") -> str:
    return f"""
WITH me AS (
    SELECT section, tasks,
           least(%(limit)s, greatest(4, ceil(%(limit)s * 2.0
                                             / greatest(1, cardinality(section)))))::int AS cap
    FROM nodes
    WHERE id = %(node)s AND {ELIGIBLE_SQL}
    FOR NO KEY UPDATE
), seen AS MATERIALIZED (
    -- [limits] Each limited task's room as this statement's snapshot sees it, without a lock
    -- (the exact room is read under the lock in `gate`). A task with none has no candidates,
    -- so a backlog of its jobs holds up no younger job of another task.
    SELECT l.task, {limit_room("l")} AS room FROM task_limits l WHERE {is_limited("l")}
),{wanted} candidates AS MATERIALIZED (
    -- The first few runnable jobs of each owned partition, computed once. Materialised so the
    -- planner cannot re-run this per row of the queue: with statistics gathered before a burst
    -- of submits it once did, and a claim over a 1M-row table took 37 s instead of milliseconds.
    SELECT s.partition, c.id, c.priority, c.task
    FROM me CROSS JOIN unnest(me.section) AS s(partition)
    {head}
), floor AS (
    -- A partition that filled its `cap` may hold more jobs, at its lowest candidate priority or
    -- below; candidates of a lower priority than that are left, so no job starts while one of a
    -- higher priority waits in the section (the batch may come out smaller). With one priority
    -- throughout, nothing is left.
    SELECT max(low) AS priority FROM (
        SELECT min(priority) AS low FROM candidates GROUP BY partition
        HAVING count(*) >= (SELECT cap FROM me)
    ) full_partitions
), within AS (
    -- [limits] At most each limited task's room (as seen) of its candidates above the floor,
    -- in claim order.
    SELECT r.id FROM (
        SELECT c.id, c.task,
               row_number() OVER (PARTITION BY c.task ORDER BY c.priority DESC, c.id) AS nth
        FROM candidates c, floor f
        WHERE f.priority IS NULL OR c.priority >= f.priority
    ) r LEFT JOIN seen ON seen.task = r.task
    WHERE seen.task IS NULL OR r.nth <= seen.room
), picked AS (
    -- Re-checked through the primary key: `state || ''` matches no partial index, so stale
    -- statistics cannot turn this into a scan of the whole queue.
    SELECT j.id, j.task, j.priority FROM jobs j
    WHERE j.id = ANY(ARRAY(SELECT id FROM within))
      AND j.state || '' = 'queued' AND j.run_after <= {NOW} AND NOT j.parked
    ORDER BY j.priority DESC, j.id
    LIMIT %(limit)s
    FOR UPDATE OF j SKIP LOCKED
), {_CLAIMED}
"""


# The head of one partition (`s.partition`) for CLAIM: its first `cap` runnable jobs of the
# node's tasks, in claim order. One walk of jobs_queued_partition in that order, which reads past
# every queued job ahead of them that the node cannot take: few, as long as the node registers
# every task with queued jobs and none of them waits for room in its limits.
_HEAD = f"""CROSS JOIN LATERAL (
        SELECT q.id, q.priority, q.task FROM jobs q
        WHERE q.partition = s.partition AND q.state = 'queued' AND NOT q.parked
          AND q.run_after <= {NOW}
          -- [limits] `task || ''` has no statistics: with one task in the queue the planner
          -- took `task <> ALL` to match nothing and read every job of each partition.
          AND (q.task || '') <> ALL (ARRAY(SELECT task FROM seen WHERE room <= 0))
          AND (q.task || '') = ANY (me.tasks)
        ORDER BY q.partition, q.priority DESC, q.id LIMIT me.cap
    ) c"""
# The same head, found task by task: for each task of the node's that has queued jobs and room
# (`wanted`, from the job counters), the first `cap` of its jobs in the partition through
# jobs_queued_task, merged in claim order. It never reads a job of another task, so a backlog
# the node cannot take (a task that it lacks, a rolling deploy's new one or one no node has any
# more, or one whose limits leave no room) costs it nothing, where `_HEAD` would read through
# all of it on every claim. It costs one probe per partition and wanted task, so the store uses
# it only while such a backlog is there (`Store.claim_jobs`, UNTAKEN_BACKLOG).
_HEAD_BY_TASK = f"""CROSS JOIN LATERAL (
        SELECT t.id, t.priority, t.task FROM wanted w
        CROSS JOIN LATERAL (
            SELECT q.id, q.priority, q.task FROM jobs q
            WHERE q.partition = s.partition AND q.task = w.task AND q.state = 'queued'
              AND NOT q.parked AND q.run_after <= {NOW}
            ORDER BY q.partition, q.task, q.priority DESC, q.id LIMIT me.cap
        ) t
        ORDER BY t.priority DESC, t.id LIMIT me.cap
    ) c"""
_WANTED = """ wanted AS MATERIALIZED (
    -- The node's tasks with queued jobs, less those with no room (as `seen` has it).
    SELECT c.task FROM job_counts c, me
    WHERE c.state = 'queued' AND c.task = ANY (me.tasks)
      AND c.task <> ALL (ARRAY(SELECT task FROM seen WHERE room <= 0))
    GROUP BY c.task HAVING sum(c.n) > 0
),"""
CLAIM = _claim(_HEAD)
CLAIM_BY_TASK = _claim(_HEAD_BY_TASK, _WANTED)

# Idle nodes poll: look without locking anything before claiming. One probe per owned partition
# (a LATERAL with LIMIT stays a probe whatever the statistics say: with statistics taken while
# no job was queued, the planner once hashed every queued job of the table on each look).
# Jobs of tasks whose limits leave no room do not count: a node does not claim in vain, again
# and again, while they wait (a finish that makes room wakes the nodes, see `give_back_room`).
ANY_CLAIMABLE = f"""
SELECT 1 FROM nodes n CROSS JOIN unnest(n.section) AS s(partition)
CROSS JOIN LATERAL (
    SELECT 1 FROM jobs j
    WHERE j.partition = s.partition AND j.state = 'queued' AND NOT j.parked
      AND j.run_after <= {NOW}
      AND (j.task || '') <> ALL ({FULL_TASKS})  -- no statistics, as in CLAIM
      AND (j.task || '') = ANY (n.tasks)
    LIMIT 1
) found
WHERE n.id = %s
LIMIT 1
"""

# ANY_CLAIMABLE task by task, as CLAIM_BY_TASK finds its candidates: one probe per partition and
# task of the node's with queued jobs and room.
ANY_CLAIMABLE_BY_TASK = f"""
SELECT 1 FROM nodes n CROSS JOIN unnest(n.section) AS s(partition)
CROSS JOIN LATERAL (
    SELECT c.task FROM job_counts c
    WHERE c.state = 'queued' AND c.task = ANY (n.tasks) AND c.task <> ALL ({FULL_TASKS})
    GROUP BY c.task HAVING sum(c.n) > 0
) w
CROSS JOIN LATERAL (
    SELECT 1 FROM jobs j
    WHERE j.partition = s.partition AND j.task = w.task AND j.state = 'queued'
      AND NOT j.parked AND j.run_after <= {NOW}
    LIMIT 1
) found
WHERE n.id = %s
LIMIT 1
"""
# How many queued jobs a node cannot take, as the job counters have them: those of the tasks it
# does not register, and of the tasks with limits (which may leave no room), with the partition
# count. Past `rules.UNTAKEN_PER_PARTITION` of them for each partition, its claims find their
# candidates task by task (CLAIM_BY_TASK).
UNTAKEN_BACKLOG = f"""
SELECT coalesce(sum(c.n), 0), (SELECT partitions FROM cluster)
FROM job_counts c, nodes n
WHERE n.id = %s AND c.state = 'queued'
  AND ((c.task || '') <> ALL (n.tasks)
       OR c.task IN (SELECT l.task FROM task_limits l WHERE {is_limited("l")}))
"""

# Parked jobs due within %(lead)s seconds, or overdue, back into the claim indexes: at most
# %(limit)s of them, the soonest due first, through jobs_parked. Rows another node is unparking
# are left to it (SKIP LOCKED), so the nodes doing this at once never wait for each other.
UNPARK = f"""
WITH due AS (
    SELECT id FROM jobs WHERE state = 'queued' AND parked AND run_after <= {NOW} + %(lead)s
    ORDER BY run_after LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
)
UPDATE jobs j SET parked = false FROM due WHERE j.id = due.id AND j.state = 'queued' AND j.parked
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
SELECT c.id, c.priority FROM partitions p CROSS JOIN LATERAL (
    SELECT q.id, q.priority FROM jobs q
    WHERE q.partition = p.partition AND q.state = 'queued' AND NOT q.parked
      AND q.run_after <= {NOW} AND q.task = %(task)s
    ORDER BY q.partition, q.priority DESC, q.id LIMIT %(limit)s
) c
WHERE p.owner = %(owner)s
ORDER BY c.priority DESC, c.id LIMIT %(limit)s
"""
# The claim of stranded jobs found by STRANDED: fenced, counted, split between starting and
# claimed ahead, and held to the task limits as CLAIM is (`_CLAIMED`).
CLAIM_STRANDED = f"""
WITH me AS (
    SELECT id FROM nodes WHERE id = %(node)s AND {ELIGIBLE_SQL} FOR NO KEY UPDATE
), picked AS (
    SELECT j.id, j.task, j.priority FROM jobs j
    WHERE j.id = ANY(%(ids)s::bigint[]) AND j.state || '' = 'queued' AND NOT j.parked
      AND EXISTS (SELECT 1 FROM me)
    ORDER BY j.priority DESC, j.id
    FOR UPDATE OF j SKIP LOCKED
), {_CLAIMED}
"""

# What the datastore has under a node, for `reconcile`: each running job with its attempt, and
# each job claimed ahead with 0 (no attempt of it has started).
LAST_STARTED = """
SELECT id FROM jobs WHERE state = 'running' AND claimer = %(node)s AND started_at = (
    SELECT max(started_at) FROM jobs WHERE state = 'running' AND claimer = %(node)s
) ORDER BY id
"""

RUNNING_ATTEMPTS = """
SELECT id, attempts FROM jobs WHERE state = 'running' AND claimer = %(node)s
UNION ALL SELECT id, 0 FROM jobs WHERE state = 'claimed' AND claimer = %(node)s
ORDER BY id
"""

# The start of jobs claimed ahead, as workers free up: claimed -> running, the attempt charged
# and the start stamped, for those the node still holds (a cancel, or the requeue of a node
# presumed dead, may have taken some). Also returned: those of the jobs already running here,
# which an earlier start whose outcome was lost with its connection started (only this node
# starts its claimed jobs; the statement's snapshot shows the jobs it starts itself as still
# claimed, so none is returned twice). Its commit is synchronous, as a claim's is: a start lost
# in a crash of the server would let the attempt start again under the same number.
START_CLAIMED = f"""
WITH started AS (
    UPDATE jobs SET state = 'running', attempts = attempts + 1, started_at = {NOW},
                    progress = 0, progress_message = NULL
    WHERE id = ANY (%(ids)s::bigint[]) AND state = 'claimed' AND claimer = %(node)s
    RETURNING *
), tallied AS (
    {add_counts(_moved_from("claimed", "started"), "%(shard)s")}
)
SELECT {JOB_COLUMNS} FROM started
UNION ALL
SELECT {JOB_COLUMNS} FROM jobs
WHERE id = ANY (%(ids)s::bigint[]) AND state = 'running' AND claimer = %(node)s
"""

# The start of attempts a worker began while their jobs were claimed (`Store.record_begun`).
RECORD_BEGUN = f"""
WITH begun AS (
    UPDATE jobs j SET state = 'running', attempts = j.attempts + 1, started_at = {NOW},
                      progress = 0, progress_message = NULL
    FROM unnest(%(ids)s::bigint[], %(attempts)s::int[]) AS b(id, attempt)
    WHERE j.id = b.id AND j.claimer = %(node)s AND j.state = 'claimed'
      AND j.attempts = b.attempt - 1
    RETURNING j.task, j.state
), tallied AS (
    {add_counts(_moved_from("claimed", "begun"), "%(shard)s")}
)
SELECT count(*) FROM begun
"""


def _held_by(node: str, where: str) -> str:
    """The node's running and claimed jobs that match `where`: one branch per state, since
    `state IN ('running', 'claimed')` implies neither partial index (jobs_running_by_id,
    jobs_claimed_by_id) and would read the whole table, however large."""
    return f"""
SELECT {JOB_COLUMNS} FROM jobs WHERE state = 'running' AND claimer = {node} AND {where}
UNION ALL
SELECT {JOB_COLUMNS} FROM jobs WHERE state = 'claimed' AND claimer = {node} AND {where}"""


# After a claim whose outcome was lost with its connection: the jobs it took, if it committed
# (started or claimed ahead).
CLAIMED_BY_TOKEN = f"""{_held_by("%(node)s", "claim_token = %(token)s")}
ORDER BY id
"""

# A batch of outcomes travels as one JSON document of rows (see `outcome_batch`): one C-speed
# encode on the node and one parse here, where seven parallel arrays cost several times more on
# both sides.
OUTCOMES = """
SELECT (e->>0)::bigint AS id, (e->>1)::int AS attempt, (e->>2)::bool AS ok, e->>3 AS result,
       e->>4 AS error, e->>5 AS traceback, (e->>6)::float8 AS retry_in_s,
       (e->>7)::float8 AS ran_s
FROM jsonb_array_elements(%(batch)s::jsonb) AS e
"""


def outcome_batch(outcomes: Sequence[Outcome]) -> str:
    """The JSON document OUTCOMES reads: one row per outcome."""
    return json.dumps(
        [
            [
                o.job_id,
                o.attempt,
                o.succeeded,
                o.result_json,
                o.error,
                o.traceback,
                o.retry_in_s,
                o.ran_s,
            ]
            for o in outcomes
        ],
        separators=(",", ":"),
    )


# The rows an update of `held` changes, by their ctid (see `held_rows`).
HELD_ROWS_ONLY = "j.ctid = ANY (ARRAY(SELECT tid FROM held))"


def held_rows(rows: str, unrecorded: bool = False) -> str:
    """CTEs `me` and `held`: the rows of query `rows` (columns id, attempt, ...) whose job the node
    %(node)s still holds under that attempt, each with the ctid of the job's row and its state
    (`was`). With `unrecorded`, a row whose column `ran_s` is set also finds its job still
    claimed under the attempt before (a tiny job whose start was never recorded: `Outcome.ran_s`).

    Every writer of a node's running jobs other than the node itself (a declaration of death, a
    requeue) locks that node's row first; so does `me`, and `held` is empty if the node is dead by
    the time it holds the lock. A cancel request is the exception: it only marks the job's row, and
    the statement that ends such a job (FINISH_CANCELLED) runs afresh and finds the new row. Each
    row finds its job by one primary-key lookup, whatever the statistics say: a LATERAL subquery
    with LIMIT is never turned into a join, and `state || ''` matches no partial index. (With
    statistics taken while the table was empty, the planner once scanned the node's running jobs
    once per outcome: a finish of a thousand outcomes took 700 ms instead of 10.) An update joins
    `held` on `j.ctid = held.tid AND j.id = held.id` and also names the rows it changes by
    `j.ctid = ANY (ARRAY(SELECT tid FROM held))` (HELD_ROWS_ONLY), a TID scan whatever the
    statistics say: by the join alone, with statistics from when the table was small (a new
    database, or a burst before autovacuum analyzed it), the planner read every row of `jobs` and
    hashed it, and each finish cost a scan of the table.
    """
    held_state = "j.attempts = r.attempt AND j.state || '' = 'running'"
    if unrecorded:
        held_state = f"""(({held_state}) OR (r.ran_s IS NOT NULL AND j.attempts = r.attempt - 1
                                            AND j.state || '' = 'claimed'))"""
    return f"""
me AS (
    SELECT id FROM nodes WHERE id = %(node)s AND state <> 'dead' FOR NO KEY UPDATE
), held AS MATERIALIZED (
    SELECT r.*, t.tid, t.was FROM ({rows}) AS r CROSS JOIN LATERAL (
        SELECT j.ctid AS tid, j.state AS was FROM jobs j
        WHERE j.id = r.id AND j.claimer = %(node)s AND {held_state}
        LIMIT 1
    ) t
    WHERE EXISTS (SELECT 1 FROM me)
)"""


def _announced(done: str) -> str:
    """CTE `announced`: whoever waits for a result hears of it at once (`aio.Finishes`): the ids
    of the jobs of `done` that ended, or '*' when too many for one notification. The statement's
    final SELECT must read it (a SELECT in WITH runs only when read)."""
    return f"""announced AS MATERIALIZED (
    SELECT pg_notify('shoal_done', CASE WHEN count(*) > 200 THEN '*'
                                        ELSE string_agg(id::text, ',') END)
    FROM {done} WHERE state <> 'queued' HAVING count(*) > 0
)"""


def _counted(done: str) -> str:
    """CTEs counting the finished jobs of `done` out of the state each was in (column `was`:
    running, or claimed for a start recorded with the outcome), and into the node's processed
    and failed counters (failed: every outcome but a success)."""
    moved = (
        "SELECT task, state, 1 FROM left_running UNION ALL SELECT task, was, -1 FROM left_running"
    )
    return f"""{give_back_room(done)}, tallied AS (
    {add_counts(moved, "%(shard)s")}
), counted AS (
    UPDATE nodes SET processed = processed + (SELECT count(*) FROM {done}),
                     failed = failed + (SELECT count(*) FROM {done} WHERE state <> 'succeeded')
    WHERE id = %(node)s AND EXISTS (SELECT 1 FROM {done})
)"""


# Record a batch of outcomes in one statement, each fenced by (claimer, attempt, running); see
# `held_rows` for how the rows are found and why.
FINISH = f"""
WITH {held_rows(OUTCOMES, unrecorded=True)}, done AS (
    UPDATE jobs j SET
        state = CASE WHEN o.ok THEN 'succeeded' WHEN o.retry_in_s IS NULL THEN 'failed'
                     ELSE 'queued' END,
        attempts = o.attempt,
        started_at = CASE WHEN o.was = 'claimed' THEN {NOW} - o.ran_s ELSE j.started_at END,
        result = CASE WHEN o.ok THEN o.result ELSE j.result END,
        error = CASE WHEN o.ok THEN NULL ELSE o.error END,
        traceback = CASE WHEN o.ok THEN NULL ELSE o.traceback END,
        progress = CASE WHEN o.ok THEN 1.0 WHEN o.retry_in_s IS NULL THEN j.progress
                        ELSE 0 END,
        claimer = CASE WHEN NOT o.ok AND o.retry_in_s IS NOT NULL THEN NULL ELSE j.claimer END,
        claim_token = NULL,
        run_after = CASE WHEN NOT o.ok AND o.retry_in_s IS NOT NULL
                         THEN {NOW} + o.retry_in_s ELSE j.run_after END,
        parked = NOT o.ok AND coalesce(o.retry_in_s > %(park_after)s, false),
        finished_at = CASE WHEN o.ok OR o.retry_in_s IS NULL THEN {NOW} ELSE j.finished_at END
    FROM held o
    WHERE {HELD_ROWS_ONLY} AND j.ctid = o.tid AND j.id = o.id AND j.cancel_requested_at IS NULL
    RETURNING j.id, j.attempts, j.state, j.task, o.was
), {_counted("done")}, {_announced("done")}
SELECT id, attempts FROM done WHERE (SELECT count(*) FROM announced) >= 0
"""

# The outcomes of attempts whose job was asked to cancel, fenced and planned as FINISH is: the
# job ends cancelled however the attempt ended, and a result is discarded. Run after FINISH for
# the outcomes it did not apply: a new statement, so it also sees a request that committed while
# FINISH ran (whose new row version FINISH, looking by ctid, no longer finds).
FINISH_CANCELLED = f"""
WITH {held_rows(OUTCOMES, unrecorded=True)}, done AS (
    UPDATE jobs j SET
        state = 'cancelled', claim_token = NULL, finished_at = {NOW}, attempts = o.attempt,
        started_at = CASE WHEN o.was = 'claimed' THEN {NOW} - o.ran_s ELSE j.started_at END,
        error = %(head)s || CASE WHEN o.ok THEN %(anyway)s ELSE coalesce(o.error, '') END,
        traceback = CASE WHEN o.ok THEN NULL ELSE o.traceback END
    FROM held o
    WHERE {HELD_ROWS_ONLY} AND j.ctid = o.tid AND j.id = o.id AND j.cancel_requested_at IS NOT NULL
    RETURNING j.id, j.attempts, j.state, j.task, o.was
), {_counted("done")}, {_announced("done")}
SELECT id, attempts FROM done WHERE (SELECT count(*) FROM announced) >= 0
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
        AND j.error IS NOT DISTINCT FROM o.error)
    OR (j.state = 'cancelled' AND j.claimer = %(node)s AND j.cancel_requested_at IS NOT NULL))
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
WHERE {HELD_ROWS_ONLY} AND j.ctid = u.tid AND j.id = u.id
"""

RELEASE = f"""
WITH released AS (
    UPDATE jobs SET state = 'queued', claimer = NULL, claim_token = NULL,
                    attempts = attempts - 1, run_after = {NOW}, progress = 0,
                    progress_message = NULL
    WHERE id = ANY (%(ids)s::bigint[]) AND claimer = %(node)s AND state = 'running'
      AND cancel_requested_at IS NULL
    RETURNING task, state
), {give_back_room("released")}, tallied AS (
    {add_counts(_moved_from("running", "left_running"), "%(shard)s")}
)
SELECT count(*), pg_notify('shoal_jobs', '*') FROM released HAVING count(*) > 0
"""
# Jobs claimed ahead, given back: queued again as they were (no attempt of theirs started).
RELEASE_CLAIMED = f"""
WITH released AS (
    UPDATE jobs SET state = 'queued', claimer = NULL, claim_token = NULL
    WHERE id = ANY (%(ids)s::bigint[]) AND claimer = %(node)s AND state = 'claimed'
    RETURNING task, state
), {give_back_room("released")}, tallied AS (
    {add_counts(_moved_from("claimed", "left_running"), "%(shard)s")}
)
SELECT count(*), pg_notify('shoal_jobs', '*') FROM released HAVING count(*) > 0
"""
# Run after RELEASE: a job asked to cancel is never released to run again, it ends cancelled.
RELEASE_CANCELLED = f"""
WITH ended AS (
    UPDATE jobs SET state = 'cancelled', claim_token = NULL, finished_at = {NOW},
                    error = %(error)s
    WHERE id = ANY (%(ids)s::bigint[]) AND claimer = %(node)s AND state = 'running'
      AND cancel_requested_at IS NOT NULL
    RETURNING task, state
), {give_back_room("ended")}, tallied AS (
    {add_counts(_moved_from("running", "left_running"), "%(shard)s")}
)
SELECT count(*) FROM ended
"""

# A cancel: a queued job ends cancelled at once; a running one gets the request, which its node
# reads (CANCEL_REQUESTS) and every statement that ends the attempt honours (the *_CANCELLED
# ones). Each statement re-checks the state it expects, so a claim or an outcome in between
# makes it change nothing, and the caller looks again.
CANCEL_STATE = "SELECT state, cancel_requested_at, cancel_requested_by FROM jobs WHERE id = %s"
CANCEL = f"""
WITH cancelled AS (
    UPDATE jobs SET state = 'cancelled', finished_at = {NOW}, error = %(error)s,
                    cancel_requested_at = {NOW}, cancel_requested_by = %(by)s
    WHERE id = %(id)s AND state = 'queued'
    RETURNING id, task, state
), tallied AS (
    {add_counts(_moved_from("queued", "cancelled"), str(SUBMITTER_SHARD))}
), {_announced("cancelled")}
SELECT count(*) FROM cancelled WHERE (SELECT count(*) FROM announced) >= 0
"""
# A job claimed ahead ends cancelled at once too (no worker has started it): its room in the
# limits goes back, and a waiter hears of it. Its node finds it gone when it would start it.
CANCEL_CLAIMED = f"""
WITH cancelled AS (
    UPDATE jobs SET state = 'cancelled', finished_at = {NOW}, error = %(error)s,
                    claim_token = NULL, cancel_requested_at = {NOW}, cancel_requested_by = %(by)s
    WHERE id = %(id)s AND state = 'claimed'
    RETURNING id, task, state
), {give_back_room("cancelled")}, tallied AS (
    {add_counts(_moved_from("claimed", "left_running"), str(SUBMITTER_SHARD))}
), {_announced("cancelled")}
SELECT count(*) FROM cancelled WHERE (SELECT count(*) FROM announced) >= 0
"""
REQUEST_CANCEL = f"""
UPDATE jobs SET cancel_requested_at = {NOW}, cancel_requested_by = %(by)s
WHERE id = %(id)s AND state = 'running' AND cancel_requested_at IS NULL
RETURNING id
"""
# On index jobs_cancel_requested, which holds only the running jobs being stopped.
CANCEL_REQUESTS = """
SELECT id, attempts, cancel_requested_at, cancel_requested_by FROM jobs
WHERE state = 'running' AND claimer = %s AND cancel_requested_at IS NOT NULL ORDER BY id
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

# A registration's limits (see `nodes.write_limits`). A task limited for the first time counts
# the jobs of it running now, under LOCK_JOBS (below): no statement that moves a job into or out
# of `running` is in flight then, so the count is exact, and every later one sees the row.
STORED_LIMITS = f"""
SELECT l.task, l.max_running, l.max_per_s FROM task_limits l
WHERE l.task = ANY (%s) AND {is_limited("l")}
"""
LOCK_JOBS = "LOCK TABLE jobs IN SHARE MODE"
UPSERT_LIMITS = f"""
INSERT INTO task_limits AS l (task, max_running, max_per_s, running)
SELECT u.task, u.max_running, u.max_per_s,
       (SELECT coalesce(sum(c.n), 0) FROM job_counts c WHERE c.task = u.task
                                                        AND c.state IN ('running', 'claimed'))
FROM unnest(%(tasks)s::text[], %(max_running)s::int[], %(max_per_s)s::float8[])
     AS u(task, max_running, max_per_s)
ORDER BY u.task
ON CONFLICT (task) DO UPDATE SET
    max_running = excluded.max_running, max_per_s = excluded.max_per_s,
    -- a dormant row (see `is_limited`) starts counting afresh
    running = CASE WHEN {is_limited("l")} THEN l.running ELSE excluded.running END,
    starts = CASE WHEN {is_limited("l")} THEN l.starts ELSE '{{}}' END
"""
# New limits for tasks that all have a row already: no row is created without the count above
# (a row lifted meanwhile by another registration stays lifted: that one came later).
UPDATE_LIMITS = f"""
WITH locked AS MATERIALIZED (
    SELECT l.task FROM task_limits l WHERE l.task = ANY (%(tasks)s::text[]) AND {is_limited("l")}
    ORDER BY l.task
    FOR NO KEY UPDATE
)
UPDATE task_limits l SET max_running = u.max_running, max_per_s = u.max_per_s
FROM unnest(%(tasks)s::text[], %(max_running)s::int[], %(max_per_s)s::float8[])
     AS u(task, max_running, max_per_s)
WHERE l.task = u.task AND l.task IN (SELECT task FROM locked)
"""
# Limits lifted: the rows go dormant (see `is_limited`), locked in task order first as every
# writer locks them.
CLEAR_LIMITS = """
UPDATE task_limits SET max_running = NULL, max_per_s = NULL, running = 0, starts = '{}'
WHERE task IN (SELECT task FROM task_limits WHERE task = ANY (%s) ORDER BY task FOR UPDATE)
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
      AND jobs.cancel_requested_at IS NULL
    RETURNING jobs.id, jobs.task, jobs.state
), {give_back_room("orphans")}, tallied AS (
    {add_counts(_moved_from("running", "left_running"), "%(shard)s")}
), {_announced("orphans")}
SELECT count(*) FILTER (WHERE state = 'queued') FROM orphans
WHERE (SELECT count(*) FROM announced) >= 0
"""
# Run after REQUEUE_ORPHANS: a departed node's jobs asked to cancel end cancelled, never requeued.
CANCEL_ORPHANS = f"""
WITH ended AS (
    UPDATE jobs SET state = 'cancelled', claim_token = NULL, traceback = NULL,
                    finished_at = {NOW}, error = %(error)s
    WHERE state = 'running' AND claimer = %(node)s AND cancel_requested_at IS NOT NULL
    RETURNING id, task, state
), {give_back_room("ended")}, tallied AS (
    {add_counts(_moved_from("running", "left_running"), "%(shard)s")}
), {_announced("ended")}
SELECT count(*) FROM ended WHERE (SELECT count(*) FROM announced) >= 0
"""
# A departed node's jobs claimed ahead go back to the queue as they were: none of them started.
REQUEUE_CLAIMED = f"""
WITH released AS (
    UPDATE jobs SET state = 'queued', claimer = NULL, claim_token = NULL
    WHERE state = 'claimed' AND claimer = %(node)s
    RETURNING task, state
), {give_back_room("released")}, tallied AS (
    {add_counts(_moved_from("claimed", "left_running"), "%(shard)s")}
)
SELECT count(*) FROM released
"""
SET_QUARANTINE_AFTER = "UPDATE cluster SET quarantine_after = %s WHERE id = 1"

WAKE_ALL = "SELECT pg_notify('shoal_jobs', '*')"
DONE_CHANNEL = "shoal_done"  # FINISH announces the jobs that ended here

# Each node that may own a section, with its slots: its share of the partitions follows them.
ELIGIBLE_NODES = f"SELECT id, concurrency FROM nodes WHERE {ELIGIBLE_SQL} ORDER BY id"
OWNERS = "SELECT owner FROM partitions ORDER BY partition"
HOMES = "SELECT home FROM partitions ORDER BY partition"
# Owners and homes of the changed partitions; `moved_at` where a load move (the last
# parameter true) changes the owner: the load rule's hold keeps a partition lent or given back
# where it is for a while, but a partition that changed owner as membership changed may be lent
# at once.
SET_OWNERS = f"""
UPDATE partitions p SET owner = v.owner, home = v.home,
       moved_at = CASE WHEN NOT %s OR p.owner IS NOT DISTINCT FROM v.owner THEN p.moved_at
                       ELSE {NOW} END
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
READ_TASK_LIMITS = f"""
SELECT l.task, l.max_running, l.max_per_s, l.running,
       (SELECT count(*) FROM unnest(l.starts) AS x WHERE x > {NOW} - {_rate_window_s("l")})
FROM task_limits l WHERE {is_limited("l")} ORDER BY l.task
"""

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
CLAIMED_BY_TOKENS = _held_by("%(node)s", "claim_token = ANY (%(tokens)s)")

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
# 64 jobs counted, one probe per partition through jobs_queued_partition in its order, the
# next jobs to run, so the read costs the same however long the queue is).
LOAD_PARTITIONS = f"""
SELECT owner, home, {NOW} - moved_at FROM partitions ORDER BY partition
"""
# A node's busy slots: its running jobs and those it claimed ahead, which take its next free
# workers.
LOAD_NODES = f"""
SELECT n.id, n.concurrency,
       (SELECT count(*) FROM jobs j WHERE j.state = 'running' AND j.claimer = n.id)
       + (SELECT count(*) FROM jobs j WHERE j.state = 'claimed' AND j.claimer = n.id)
FROM nodes n WHERE {ELIGIBLE_SQL}
"""
# Only jobs that the partition's owner can take count (of the tasks it registers; any job, in a
# partition without an owner): a job that waits for a node with its task is not load to move.
LOAD_BACKLOG = f"""
SELECT p.partition, b.n, b.waited FROM partitions p
LEFT JOIN nodes o ON o.id = p.owner
CROSS JOIN LATERAL (
    SELECT count(*) AS n, {NOW} - min(greatest(q.created_at, q.run_after)) AS waited
    FROM (SELECT j.created_at, j.run_after FROM jobs j
          WHERE j.partition = p.partition AND j.state = 'queued' AND NOT j.parked
            AND j.run_after <= {NOW}
            AND (o.id IS NULL OR (j.task || '') = ANY (o.tasks))  -- no statistics, as in CLAIM
          ORDER BY j.partition, j.priority DESC, j.id LIMIT 64) q
) b
WHERE b.n > 0
"""
# The same, task by task through jobs_queued_task (as CLAIM_BY_TASK), for while a backlog that
# some owner cannot take waits (LOAD_UNTAKEN), which LOAD_BACKLOG would read through.
LOAD_BACKLOG_BY_TASK = f"""
WITH queued AS MATERIALIZED (
    SELECT task FROM job_counts WHERE state = 'queued' GROUP BY task HAVING sum(n) > 0
)
SELECT p.partition, b.n, b.waited FROM partitions p
LEFT JOIN nodes o ON o.id = p.owner
CROSS JOIN LATERAL (
    SELECT count(*) AS n, {NOW} - min(greatest(h.created_at, h.run_after)) AS waited
    FROM (SELECT t.created_at, t.run_after
          FROM (SELECT task FROM queued WHERE o.id IS NULL OR task = ANY (o.tasks)) w
          CROSS JOIN LATERAL (
              SELECT j.created_at, j.run_after, j.priority, j.id FROM jobs j
              WHERE j.partition = p.partition AND j.task = w.task AND j.state = 'queued'
                AND NOT j.parked AND j.run_after <= {NOW}
              ORDER BY j.partition, j.task, j.priority DESC, j.id LIMIT 64) t
          ORDER BY t.priority DESC, t.id LIMIT 64) h
) b
WHERE b.n > 0
"""
# How many queued jobs are of a task that some eligible node does not register, with the
# partition count (for LOAD_BACKLOG_BY_TASK, as UNTAKEN_BACKLOG is for CLAIM_BY_TASK).
LOAD_UNTAKEN = f"""
SELECT coalesce(sum(c.n), 0), (SELECT partitions FROM cluster) FROM job_counts c
WHERE c.state = 'queued'
  AND EXISTS (SELECT 1 FROM nodes n WHERE {ELIGIBLE_SQL} AND (c.task || '') <> ALL (n.tasks))
"""
LOAD_MOVE_EVENT = f"""
INSERT INTO history (at, kind, epoch, owners, reason)
VALUES ({NOW}, 'load_move', %s, %s, %s)
"""
RECENT_LOAD_MOVES = f"""
SELECT count(*) FROM history WHERE kind = 'load_move' AND at >= {NOW} - 60
"""

# -- periodic schedules ---------------------------------------------------------------------------

# A new schedule, or a changed one, starts settled up to now; an unchanged one keeps its place.
DECLARE_SCHEDULE = f"""
INSERT INTO schedules AS s (name, task, cron, every_s, tz, args, kwargs, missed, declared_at,
                            fired_through)
VALUES (%(name)s, %(task)s, %(cron)s, %(every_s)s, %(tz)s, %(args)s, %(kwargs)s, %(missed)s,
        {NOW}, {NOW})
ON CONFLICT (name) DO UPDATE SET
    fired_through = CASE
        WHEN (s.task, s.cron, s.every_s, s.tz, s.args, s.kwargs, s.missed) IS DISTINCT FROM
             (excluded.task, excluded.cron, excluded.every_s, excluded.tz, excluded.args,
              excluded.kwargs, excluded.missed)
        THEN greatest(s.fired_through, excluded.fired_through) ELSE s.fired_through END,
    task = excluded.task, cron = excluded.cron, every_s = excluded.every_s, tz = excluded.tz,
    args = excluded.args, kwargs = excluded.kwargs, missed = excluded.missed,
    declared_at = excluded.declared_at
"""
READ_SCHEDULES = SCHEDULES_SQL
# The round applies only from where the caller planned it, and never ahead of the clock. The
# update locks the row: a concurrent firing waits, then finds `fired_through` moved and applies
# nothing.
ADVANCE_SCHEDULE = f"""
UPDATE schedules SET fired_through = %(through)s
WHERE name = %(name)s AND fired_through = %(expected)s AND %(through)s <= {NOW}
RETURNING 1
"""
INSERT_TICK = f"""
INSERT INTO schedule_ticks (schedule, tick, job_id, catch_up, fired_at)
VALUES (%(name)s, %(tick)s, %(job)s, %(catch_up)s, {NOW})
ON CONFLICT (schedule, tick) DO NOTHING
RETURNING 1
"""
TRIM_TICKS = """
DELETE FROM schedule_ticks WHERE schedule = %(name)s AND tick <= (
    SELECT tick FROM schedule_ticks WHERE schedule = %(name)s ORDER BY tick DESC
    LIMIT 1 OFFSET %(keep)s)
"""
LIST_TICKS = (
    "SELECT schedule, tick, job_id, catch_up, fired_at FROM schedule_ticks"
    " WHERE schedule = %s ORDER BY tick DESC LIMIT %s"
)
FORGET_TICKS = "DELETE FROM schedule_ticks WHERE schedule = %s"
FORGET_SCHEDULE = "DELETE FROM schedules WHERE name = %s"
