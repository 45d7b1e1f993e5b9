"""Periodic schedules on the SQLite store: declaring them, reading them, firing their ticks.

Plain functions over the open write transaction. A firing moves the schedule's `fired_through`
only from where the caller planned it, and inserts each tick row before its job under the file's
single write lock, so of two nodes firing one tick the second finds the round gone and writes
nothing.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

from shoal.model import ScheduledJob, ScheduleRecord, ScheduleSpec, ScheduleTick
from shoal.store import rules
from shoal.store.sqlite import jobs
from shoal.store.sqlite import queries as q


def declare(cur: sqlite3.Cursor, now: float, specs: Sequence[ScheduleSpec]) -> None:
    cur.executemany(q.DECLARE_SCHEDULE, [{**rules.schedule_row(s), "now": now} for s in specs])


def read_all(cur: sqlite3.Cursor) -> list[ScheduleRecord]:
    return [rules.schedule_record(tuple(r)) for r in cur.execute(q.READ_SCHEDULES)]


def fire(
    cur: sqlite3.Cursor,
    now: float,
    name: str,
    expected: float,
    fired: Sequence[ScheduledJob],
    through: float,
) -> list[int] | None:
    """The round of `fire_schedule`, if it still applies (see the port)."""
    moved = cur.execute(
        q.ADVANCE_SCHEDULE, {"name": name, "expected": expected, "through": through, "now": now}
    )
    if moved.rowcount != 1:
        return None
    ids: list[int] = []
    for firing in fired:
        # The next job id is this transaction's to give: the file has one writer at a time.
        job_id = int(cur.execute(q.NEXT_IDS).fetchone()[1])
        params = {"name": name, "tick": firing.tick, "job": job_id, "now": now}
        if cur.execute(q.INSERT_TICK, {**params, "catch_up": firing.catch_up}).rowcount == 1:
            ids += [s.job_id for s in jobs.submit(cur, now, [firing.job])]
    cur.execute(q.TRIM_TICKS, {"name": name, "keep": rules.TICKS_KEPT})
    return ids


def forget(cur: sqlite3.Cursor, name: str) -> bool:
    cur.execute(q.FORGET_TICKS, (name,))
    return cur.execute(q.FORGET_SCHEDULE, (name,)).rowcount == 1


def list_ticks(cur: sqlite3.Cursor, name: str, limit: int) -> list[ScheduleTick]:
    return [
        ScheduleTick(str(r[0]), float(r[1]), int(r[2]), bool(r[3]), float(r[4]))
        for r in cur.execute(q.LIST_TICKS, (name, limit))
    ]
