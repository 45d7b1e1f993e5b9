"""Task limits on the SQLite store: the room each limited task has, and what a claim records.

Plain functions over the open transaction, following the rules of `store.limits`. SQLite lets one
writer in at a time, so a claim's write transaction is already the cluster-wide serialisation
that PostgreSQL gets from a row lock: the running jobs are counted from the job counters inside
it, exactly, and no count is stored.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from collections import Counter
from collections.abc import Iterable

from shoal.model import TaskLimit, TaskLimitUse
from shoal.store import limits, texts
from shoal.store.port import NewNode
from shoal.store.sqlite import queries as q

log = logging.getLogger("shoal.store.sqlite")
Stored = dict[str, tuple[TaskLimit, tuple[float, ...]]]  # task -> (its limits, recent starts)


def read_limits(cur: sqlite3.Cursor) -> Stored:
    return {
        str(r[0]): (TaskLimit(str(r[0]), r[1], r[2]), tuple(json.loads(r[3])))
        for r in cur.execute(q.READ_LIMITS)
    }


def running_by_task(cur: sqlite3.Cursor, tasks: Iterable[str]) -> dict[str, int]:
    rows = cur.execute(q.RUNNING_BY_TASK, (json.dumps(sorted(tasks)),)).fetchall()
    return {str(r[0]): int(r[1]) for r in rows}


def rooms(cur: sqlite3.Cursor, now: float, stored: Stored) -> dict[str, int]:
    """How many more jobs of each limited task may start at `now`."""
    running = running_by_task(cur, stored)
    out = {}
    for task, (limit, starts) in stored.items():
        room = limits.room(limit, running.get(task, 0), starts, now)
        out[task] = 0 if room is None else room
    return out


def full_tasks(room_of: dict[str, int]) -> str:
    """The tasks with no room, as the JSON array the claim's statements take."""
    return json.dumps(sorted(task for task, room in room_of.items() if room <= 0))


def record_starts(cur: sqlite3.Cursor, now: float, stored: Stored, tasks: Iterable[str]) -> None:
    """Note the starts of the claimed jobs (`tasks`, one per job) of rate-limited tasks."""
    for task, n in sorted(Counter(t for t in tasks if t in stored).items()):
        limit, starts = stored[task]
        if limit.max_per_s is not None:
            kept = limits.record_starts(starts, now, n, limit.max_per_s)
            cur.execute(q.SET_STARTS, (json.dumps(kept), task))


def write_limits(cur: sqlite3.Cursor, new: NewNode) -> None:
    """Make the node's declared limits the cluster's (the latest registration wins)."""
    limited, cleared = limits.declared(new.tasks, new.limits)
    stored = {task: limit for task, (limit, _) in read_limits(cur).items()}
    changed = limits.changes(stored, limited, cleared)
    cur.executemany(q.UPSERT_LIMIT, [(lim.task, lim.max_running, lim.max_per_s) for lim in limited])
    cur.executemany(q.CLEAR_LIMIT, [(task,) for task in cleared])
    for task, before, after in changed:
        log.info("%s", texts.limits_changed(task, before, after, new.name))


def read_task_limits(cur: sqlite3.Cursor, now: float) -> list[TaskLimitUse]:
    stored = read_limits(cur)
    running = running_by_task(cur, stored)
    return [
        TaskLimitUse(
            limit,
            running.get(task, 0),
            0 if limit.max_per_s is None else limits.recent_starts(starts, now, limit.max_per_s),
        )
        for task, (limit, starts) in stored.items()
    ]
