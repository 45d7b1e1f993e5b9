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
from shoal.model import Job, JobState, NewJob, NodeState, Outcome, ProgressUpdate
from shoal.store import rules
from shoal.store.sqlite import queries as q
from shoal.store.sqlite.nodes import add_counts, move_node
from shoal.store.sqlite.reads import count_by_state, job_from_row, oldest_queued_age


def submit(cur: sqlite3.Cursor, now: float, jobs: Sequence[NewJob]) -> list[int]:
    partitions, first = cur.execute(q.NEXT_IDS).fetchone()
    ids = list(range(first, first + len(jobs)))
    cur.executemany(
        q.SUBMIT,
        [
            (
                i,
                assignment.partition_of(i, partitions),
                j.task,
                j.args_json,
                j.kwargs_json,
                j.max_attempts,
                j.timeout_s,
                now + j.delay_s,
                now,
            )
            for i, j in zip(ids, jobs, strict=True)
        ],
    )
    cur.execute(q.SET_NEXT_ID, (first + len(jobs),))
    add_counts(cur, rules.count_submits(j.task for j in jobs))
    return ids


def cancel(cur: sqlite3.Cursor, now: float, job_id: int) -> bool:
    rows = cur.execute(q.CANCEL, {"now": now, "id": job_id}).fetchall()
    add_counts(cur, rules.count_moves(JobState.QUEUED, rows))
    return len(rows) == 1


def any_claimable(cur: sqlite3.Cursor, now: float, node_id: int) -> bool:
    return (
        cur.execute(q.ANY_CLAIMABLE, {"now": now, "node": node_id, "limit": 1}).fetchone()
        is not None
    )


def claim(cur: sqlite3.Cursor, now: float, node_id: int, limit: int) -> list[Job]:
    rows = cur.execute(q.CLAIM, {"node": node_id, "now": now, "limit": limit}).fetchall()
    if rows:
        move_node(cur, now, node_id, NodeState.WAITING, NodeState.WORKING)
        add_counts(cur, rules.count_moves(JobState.QUEUED, [(r["task"], r["state"]) for r in rows]))
    return sorted((job_from_row(r) for r in rows), key=lambda j: j.id)


def stranded_ids(cur: sqlite3.Cursor, now: float, node_id: int, limit: int) -> list[int]:
    """The oldest runnable jobs, at most `limit`, that wait for a task their owner lacks and
    this node registers (see `Store.claim_stranded`)."""
    mine = cur.execute(q.ELIGIBLE_TASKS, (node_id,)).fetchone()
    if mine is None:
        return []
    owners = {int(r[0]): json.loads(r[1]) for r in cur.execute(q.OWNER_TASKS)}
    found: list[int] = []
    for owner, task in rules.stranded_tasks(node_id, json.loads(mine[0]), owners):
        args = {"task": task, "now": now, "owner": owner, "limit": limit}
        found += [int(r[0]) for r in cur.execute(q.STRANDED, args)]
    return sorted(found)[:limit]


def claim_stranded(cur: sqlite3.Cursor, now: float, node_id: int, limit: int) -> list[Job]:
    ids = stranded_ids(cur, now, node_id, limit)
    if not ids:
        return []
    args = {"node": node_id, "now": now, "ids": json.dumps(ids)}
    rows = cur.execute(q.CLAIM_STRANDED, args).fetchall()
    if rows:
        move_node(cur, now, node_id, NodeState.WAITING, NodeState.WORKING)
        add_counts(cur, rules.count_moves(JobState.QUEUED, [(r["task"], r["state"]) for r in rows]))
    return sorted((job_from_row(r) for r in rows), key=lambda j: j.id)


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
    for o in outcomes:
        row = cur.execute(
            q.FINISH,
            {
                "ok": o.succeeded,
                "result": o.result_json,
                "error": o.error,
                "traceback": o.traceback,
                "retry_in_s": o.retry_in_s,
                "now": now,
                "id": o.job_id,
                "node": node_id,
                "attempt": o.attempt,
            },
        ).fetchone()
        applied.append(row is not None)
        if row is not None:
            finished.append((row[0], row[1]))
    add_counts(cur, rules.count_moves(JobState.RUNNING, finished))
    done = sum(applied)
    failed = sum(1 for o, ok in zip(outcomes, applied, strict=True) if ok and not o.succeeded)
    if done:
        cur.execute(q.COUNT_FINISHES, (done, failed, node_id))
    return applied


def release(cur: sqlite3.Cursor, now: float, node_id: int, job_ids: Sequence[int]) -> int:
    released = []
    for job_id in job_ids:
        released += cur.execute(q.RELEASE, {"now": now, "id": job_id, "node": node_id}).fetchall()
    add_counts(cur, rules.count_moves(JobState.RUNNING, released))
    return len(released)


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
