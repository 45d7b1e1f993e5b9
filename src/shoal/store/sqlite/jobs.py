"""The job side of the SQLite store: submitting, cancelling, claiming, progress, finishing,
releasing, and sampling the cluster.

Plain functions over the open write transaction; each operation is one `BEGIN IMMEDIATE`
transaction whose statements are small and indexed, so the single writer holds the lock briefly.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence

from shoal import assignment
from shoal.model import (
    CancelRequest,
    CancelResult,
    Job,
    JobState,
    NewJob,
    NodeState,
    Outcome,
    ProgressUpdate,
    Submitted,
)
from shoal.store import limits, rules, texts
from shoal.store.sqlite import limits as task_limits
from shoal.store.sqlite import queries as q
from shoal.store.sqlite.nodes import add_counts, move_node
from shoal.store.sqlite.reads import count_by_state, job_from_row, oldest_queued_age


def submit(cur: sqlite3.Cursor, now: float, jobs: Sequence[NewJob]) -> list[Submitted]:
    """Insert the jobs whose key no job holds (all without a key), taking their keys; the others
    get the holder's id. Keys of the batch are distinct (`rules.collapse_keys`)."""
    partitions, first = cur.execute(q.NEXT_IDS).fetchone()
    done: list[Submitted] = []
    rows: list[tuple[object, ...]] = []
    keys: list[tuple[str, int, float]] = []
    for j in jobs:
        holder = None if j.key is None else key_holder(cur, now, j.key)
        if holder is not None:
            done.append(Submitted(holder, False))
            continue
        i = first + len(rows)
        done.append(Submitted(i, True))
        partition = assignment.partition_of(i, partitions)
        row = (i, partition, j.task, j.args_json, j.kwargs_json, j.max_attempts, j.timeout_s)
        parked = j.delay_s > rules.PARK_AFTER_S
        rows.append((*row, now + j.delay_s, now, j.priority, j.key, parked))
        if j.key is not None:
            keys.append((j.key, i, j.key_window_s))
    cur.executemany(q.SUBMIT, rows)
    cur.executemany(q.TAKE_KEY, keys)
    cur.execute(q.SET_NEXT_ID, (first + len(rows),))
    add_counts(
        cur, rules.count_submits(j.task for j, s in zip(jobs, done, strict=True) if s.created)
    )
    return done


def key_holder(cur: sqlite3.Cursor, now: float, key: str) -> int | None:
    row = cur.execute(q.KEY_HOLDER, {"key": key, "now": now}).fetchone()
    return None if row is None else int(row[0])


def cancel(cur: sqlite3.Cursor, now: float, job_id: int, by: str | None) -> CancelResult:
    """Cancel a queued job, or record the request on a running one (see `Store.cancel_job`).
    The one writer at a time sees the job as it is, so one look decides."""
    row = cur.execute(q.CANCEL_STATE, (job_id,)).fetchone()
    verdict = rules.cancel_verdict(None if row is None else row[0], bool(row and row[1]))
    params = {"now": now, "id": job_id, "by": by, "error": texts.CANCELLED_QUEUED}
    if verdict is CancelResult.CANCELLED:
        rows = cur.execute(q.CANCEL, params).fetchall()
        add_counts(cur, rules.count_moves(JobState(row[0]), rows))
    elif verdict is CancelResult.REQUESTED:
        cur.execute(q.REQUEST_CANCEL, params)
    return verdict


def cancel_requests(cur: sqlite3.Cursor, node_id: int) -> list[CancelRequest]:
    return [
        CancelRequest(int(r[0]), int(r[1]), float(r[2]), r[3])
        for r in cur.execute(q.CANCEL_REQUESTS, (node_id,)).fetchall()
    ]


def any_claimable(cur: sqlite3.Cursor, now: float, node_id: int) -> bool:
    """Whether the node could claim a job now; jobs of tasks whose limits leave no room do not
    count, so an idle node does not take the write lock for them again and again."""
    stored = task_limits.read_limits(cur)
    room_of = task_limits.rooms(cur, now, stored) if stored else {}
    tasks = tasks_to_pick_one_by_one(cur, node_id, room_of)
    if tasks is not None:
        return bool(pick_by_task(cur, now, node_id, tasks, 1, room_of))
    if not stored:
        params = {"now": now, "node": node_id, "limit": 1}
        return cur.execute(q.ANY_CLAIMABLE, params).fetchone() is not None
    full = task_limits.full_tasks(room_of)
    looked = cur.execute(q.ANY_CLAIMABLE_WITHIN_LIMITS, {"now": now, "node": node_id, "full": full})
    return looked.fetchone() is not None


def claim(cur: sqlite3.Cursor, now: float, node_id: int, limit: int, start: int) -> list[Job]:
    """Claim the section's first runnable jobs in claim order (held to the task limits when
    some task has them); the first `start` start at once, the rest are claimed ahead. This write
    transaction is the only writer, so the room it counts for the limits is exact."""
    stored = task_limits.read_limits(cur)
    room_of = task_limits.rooms(cur, now, stored) if stored else {}
    tasks = tasks_to_pick_one_by_one(cur, node_id, room_of)
    if tasks is not None:
        candidates = pick_by_task(cur, now, node_id, tasks, limit, room_of)
        ids = limits.pick_within_limits(candidates, room_of, limit)
    elif stored:
        params = {"now": now, "node": node_id, "full": task_limits.full_tasks(room_of)}
        rows = cur.execute(q.PICK_WITHIN_LIMITS, params)
        ids = limits.pick_within_limits(((int(r[0]), str(r[1])) for r in rows), room_of, limit)
    else:
        picked = cur.execute(q.PICK, {"node": node_id, "now": now, "limit": limit})
        ids = [int(r[0]) for r in picked]
    return claim_ids(cur, now, node_id, ids, start, stored)


def tasks_to_pick_one_by_one(
    cur: sqlite3.Cursor, node_id: int, room_of: dict[str, int]
) -> list[str] | None:
    """The node's tasks with queued jobs and room (`room_of`: the limited tasks' rooms), when so
    many queued jobs are of tasks it cannot take that PICK's walk would read through them all;
    None while they are few and the walk costs no more."""
    rows = cur.execute(q.QUEUED_TASKS_OF_NODE, {"node": node_id}).fetchall()
    takes = [str(r[0]) for r in rows if r[2] and room_of.get(str(r[0]), 1) > 0]
    untaken = sum(int(r[1]) for r in rows if str(r[0]) not in takes)
    if not rows or untaken <= rules.UNTAKEN_PER_PARTITION * int(rows[0][3]):
        return None
    return sorted(takes)


def pick_by_task(
    cur: sqlite3.Cursor,
    now: float,
    node_id: int,
    tasks: Sequence[str],
    limit: int,
    room_of: dict[str, int],
) -> list[tuple[int, str]]:
    """The candidates of a claim of `limit` jobs of `tasks` in the node's section, in claim order,
    as (id, task): each task's first `limit`, or fewer to its room (`room_of`) (PICK_TASK),
    merged. The first `limit` within the limits (`limits.pick_within_limits`) are the claim's."""
    found: list[tuple[int, int, str]] = []
    for task in tasks:
        args = {
            "task": task,
            "now": now,
            "node": node_id,
            "limit": min(limit, room_of.get(task, limit)),
        }
        found += [(-int(r[2]), int(r[0]), str(r[1])) for r in cur.execute(q.PICK_TASK, args)]
    return [(job_id, task) for _, job_id, task in sorted(found)]


def claim_ids(
    cur: sqlite3.Cursor,
    now: float,
    node_id: int,
    ids: Sequence[int],
    start: int,
    stored: task_limits.Stored,
) -> list[Job]:
    """Claim the jobs `ids` (in claim order): the first `start` start at once, the rest are
    claimed ahead; counted, their starts noted for the limits, and the node moved waiting ->
    working with its first claim."""
    if not ids:
        return []
    rows: list[sqlite3.Row] = []
    for statement, part in ((q.CLAIM_IDS, ids[:start]), (q.CLAIM_AHEAD_IDS, ids[start:])):
        if part:
            args = {"node": node_id, "now": now, "ids": json.dumps(list(part))}
            rows += cur.execute(statement, args).fetchall()
    if rows:
        move_node(cur, now, node_id, NodeState.WAITING, NodeState.WORKING)
        add_counts(cur, rules.count_moves(JobState.QUEUED, [(r["task"], r["state"]) for r in rows]))
        if stored:
            task_limits.record_starts(cur, now, stored, (str(r["task"]) for r in rows))
    return sorted((job_from_row(r) for r in rows), key=rules.claim_order)


def start_claimed(
    cur: sqlite3.Cursor, now: float, node_id: int, job_ids: Sequence[int]
) -> list[Job]:
    """Start those of the node's jobs claimed ahead that it still holds; returns every job of
    `job_ids` running here now (see `Store.start_jobs`)."""
    args = {"node": node_id, "now": now, "ids": json.dumps(list(job_ids))}
    before = cur.execute(q.STARTED_HERE, args).fetchall()
    rows = cur.execute(q.START_CLAIMED, args).fetchall()
    add_counts(cur, rules.count_moves(JobState.CLAIMED, [(r["task"], r["state"]) for r in rows]))
    return sorted((job_from_row(r) for r in [*before, *rows]), key=rules.claim_order)


def record_begun(
    cur: sqlite3.Cursor, now: float, node_id: int, begun: Sequence[tuple[int, int]]
) -> int:
    args = {"node": node_id, "now": now, "begun": json.dumps([list(b) for b in begun])}
    rows = [(r[0], r[1]) for r in cur.execute(q.RECORD_BEGUN, args)]
    add_counts(cur, rules.count_moves(JobState.CLAIMED, rows))
    return len(rows)


def stranded_ids(cur: sqlite3.Cursor, now: float, node_id: int, limit: int) -> list[int]:
    """The first runnable jobs in claim order, at most `limit` (and at most each limited task's
    room), that wait for a task their owner lacks and this node registers (see
    `Store.claim_stranded`)."""
    mine = cur.execute(q.ELIGIBLE_TASKS, (node_id,)).fetchone()
    if mine is None:
        return []
    owners = {int(r[0]): json.loads(r[1]) for r in cur.execute(q.OWNER_TASKS)}
    found: list[tuple[int, int, str]] = []
    for owner, task in rules.stranded_tasks(node_id, json.loads(mine[0]), owners):
        args = {"task": task, "now": now, "owner": owner, "limit": limit}
        found += [(-int(r[2]), int(r[0]), str(r[1])) for r in cur.execute(q.STRANDED, args)]
    candidates = [(job_id, task) for _, job_id, task in sorted(found)]
    stored = task_limits.read_limits(cur)
    rooms = task_limits.rooms(cur, now, stored) if stored else {}
    return limits.pick_within_limits(candidates, rooms, limit)


def claim_stranded(
    cur: sqlite3.Cursor, now: float, node_id: int, limit: int, start: int
) -> list[Job]:
    ids = stranded_ids(cur, now, node_id, limit)
    return claim_ids(cur, now, node_id, ids, start, task_limits.read_limits(cur))


def record_progress(cur: sqlite3.Cursor, node_id: int, updates: Sequence[ProgressUpdate]) -> int:
    cur.executemany(
        q.PROGRESS, [(u.fraction, u.message, u.job_id, node_id, u.attempt) for u in updates]
    )
    return int(cur.rowcount)


def finish(
    cur: sqlite3.Cursor, now: float, node_id: int, outcomes: Sequence[Outcome]
) -> list[bool]:
    applied = []
    finished: list[tuple[str, str]] = []
    begun: list[tuple[str, str]] = []  # ended still claimed: their start never recorded
    for o in outcomes:
        params = {
            "ok": o.succeeded,
            "result": o.result_json,
            "error": o.error,
            "traceback": o.traceback,
            "retry_in_s": o.retry_in_s,
            "now": now,
            "id": o.job_id,
            "node": node_id,
            "attempt": o.attempt,
            "head": texts.CANCELLED_RUNNING,
            "anyway": texts.CANCEL_FINISHED_ANYWAY,
            "ran_s": o.ran_s,
            "park_after_s": rules.PARK_AFTER_S,
        }
        if o.ran_s is not None:  # claimed, unless an earlier start of it was recorded after all
            row = cur.execute(q.FINISH_UNRECORDED, params).fetchone()
            if row is not None:
                applied.append(True)
                begun.append((row[0], row[1]))
                continue
        row = cur.execute(q.FINISH, params).fetchone()
        if row is None:  # asked to cancel, or no longer held
            row = cur.execute(q.FINISH_CANCELLED, params).fetchone()
        applied.append(row is not None)
        if row is not None:
            finished.append((row[0], row[1]))
    add_counts(cur, rules.count_moves(JobState.CLAIMED, begun))
    add_counts(cur, rules.count_moves(JobState.RUNNING, finished))
    ended = [*begun, *finished]
    failed = sum(1 for _, state in ended if state != JobState.SUCCEEDED.value)
    if ended:
        cur.execute(q.COUNT_FINISHES, (len(ended), failed, node_id))
    return applied


def release(cur: sqlite3.Cursor, now: float, node_id: int, job_ids: Sequence[int]) -> int:
    released = []
    error = texts.CANCELLED_RUNNING + texts.CANCEL_NODE_STOPPED
    ahead = []
    for job_id in job_ids:
        params = {"now": now, "id": job_id, "node": node_id, "error": error}
        released += cur.execute(q.RELEASE, params).fetchall()
        released += cur.execute(q.RELEASE_CANCELLED, params).fetchall()
        ahead += cur.execute(q.RELEASE_CLAIMED, params).fetchall()
    add_counts(cur, rules.count_moves(JobState.RUNNING, released))
    add_counts(cur, rules.count_moves(JobState.CLAIMED, ahead))
    return len(released) + len(ahead)


def last_started(cur: sqlite3.Cursor, node_id: int) -> list[int]:
    return [int(r[0]) for r in cur.execute(q.LAST_STARTED, {"node": node_id})]


def running_attempts(cur: sqlite3.Cursor, node_id: int) -> list[tuple[int, int]]:
    rows = cur.execute(q.RUNNING_ATTEMPTS, (node_id,)).fetchall()
    return [(int(r[0]), int(r[1])) for r in rows]


def has_sample(cur: sqlite3.Cursor, bucket: int) -> bool:
    return cur.execute(q.SAMPLE_EXISTS, (bucket,)).fetchone() is not None


def record_sample(cur: sqlite3.Cursor, now: float, interval_s: float) -> bool:
    """Write the sample of the bucket `now` falls in; `at` is the bucket's end and the finish
    counts cover the bucket before it."""
    bucket = int(now // interval_s)
    end = bucket * interval_s
    finished = dict(cur.execute(q.FINISHED_BETWEEN, (end - interval_s, end)).fetchall())
    counted = count_by_state(cur)
    cur.execute(
        q.SAMPLE,
        (
            bucket,
            end,
            interval_s,
            counted[JobState.QUEUED],
            counted[JobState.RUNNING],
            finished.get(JobState.SUCCEEDED.value, 0),
            finished.get(JobState.FAILED.value, 0),
            cur.execute(q.LIVE_NODES).fetchone()[0],
            oldest_queued_age(cur, now),
        ),
    )
    return cur.rowcount == 1
