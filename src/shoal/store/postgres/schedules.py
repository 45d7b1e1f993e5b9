"""Periodic schedules on the PostgreSQL store: declaring them, reading them, firing their ticks.

Plain functions over a borrowed connection. A firing is one transaction that first moves the
schedule's `fired_through` from where the caller planned it (locking the row, so firings of one
schedule apply one at a time), then inserts each tick row and, only if that row went in, its job
under an id reserved for it. A firing retried after its connection broke finds the round gone if
the earlier try committed, and writes nothing twice.
"""

from __future__ import annotations

from collections.abc import Sequence

from shoal.model import ScheduledJob, ScheduleRecord, ScheduleSpec, ScheduleTick
from shoal.store import rules
from shoal.store.postgres import jobs
from shoal.store.postgres import queries as q
from shoal.store.postgres.reads import Conn
from shoal.store.postgres.reserve import SubmitIds


def declare(conn: Conn, specs: Sequence[ScheduleSpec]) -> None:
    with conn.transaction(), conn.cursor() as cur:
        # In name order, so two nodes declaring the same schedules lock their rows alike.
        ordered = sorted(specs, key=lambda s: s.name)
        cur.executemany(q.DECLARE_SCHEDULE, [rules.schedule_row(s) for s in ordered])


def read_all(conn: Conn) -> list[ScheduleRecord]:
    return [rules.schedule_record(r) for r in conn.execute(q.READ_SCHEDULES)]


def fire(
    conn: Conn,
    name: str,
    expected: float,
    fired: Sequence[ScheduledJob],
    through: float,
    url: str,
) -> list[int] | None:
    """The round of `fire_schedule`, if it still applies (see the port)."""
    with conn.transaction():
        params = {"name": name, "expected": expected, "through": through}
        if conn.execute(q.ADVANCE_SCHEDULE, params).fetchone() is None:
            return None
        ids: list[int] = []
        for firing in fired:
            [job_id] = [int(r[0]) for r in conn.execute(q.ALLOCATE_IDS, (1,))]
            tick = {"name": name, "tick": firing.tick, "job": job_id, "catch_up": firing.catch_up}
            if conn.execute(q.INSERT_TICK, tick).fetchone() is not None:
                plan = SubmitIds([job_id])
                ids += [s.job_id for s in jobs.submit(conn, False, plan, [firing.job], url)]
        conn.execute(q.TRIM_TICKS, {"name": name, "keep": rules.TICKS_KEPT})
        return ids


def forget(conn: Conn, name: str) -> bool:
    with conn.transaction():
        conn.execute(q.FORGET_TICKS, (name,))
        return conn.execute(q.FORGET_SCHEDULE, (name,)).rowcount == 1


def list_ticks(conn: Conn, name: str, limit: int) -> list[ScheduleTick]:
    return [
        ScheduleTick(str(r[0]), float(r[1]), int(r[2]), bool(r[3]), float(r[4]))
        for r in conn.execute(q.LIST_TICKS, (name, limit))
    ]
