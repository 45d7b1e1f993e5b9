"""A node's share of periodic schedules: declaring its app's schedules, firing their due ticks.

No leader: every node that declares a schedule and has its task registered looks, at each
heartbeat, whether a tick is due at the datastore's `now`, and if so fires the round that
`schedule.plan_ticks` gives — at once if the tick is its turn (it owns the tick's partition),
else once the tick is TURN_GRACE_S late, so that one node normally writes and any other stands
in for it. The datastore applies a round only from the point it was planned from, so of the
nodes that plan the same round one records it and the others find it gone; a node that dies,
pauses or restarts leaves the next round to whichever node looks next. A node fires only what
its own app declares, from the definition the datastore holds (the one last declared), with its
own task options for retries and time limits.
"""

from __future__ import annotations

import logging
from collections.abc import Collection

from shoal.app import App
from shoal.errors import ScheduleError
from shoal.model import NewJob, ScheduledJob, ScheduleRecord
from shoal.schedule import (
    MISSED_AFTER_S,
    Plan,
    Timetable,
    is_my_turn,
    plan_ticks,
    timetable_of,
)
from shoal.store import Store

log = logging.getLogger("shoal.node")


class Scheduler:
    """Fires the due ticks of `app`'s schedules; `run_once(now)` at every heartbeat."""

    def __init__(self, store: Store, app: App, missed_after_s: float = MISSED_AFTER_S) -> None:
        self.store = store
        self.app = app
        self.missed_after_s = missed_after_s
        self.declared = False
        # P as this node first read it: P only grows, so every partition below it keeps exactly
        # one owner, and all nodes that read the same P agree on whose turn a tick is.
        self.partitions: int | None = None
        self._timetables: dict[tuple[str | None, float | None, str], Timetable] = {}

    def run_once(self, now: float, section: Collection[int] | None = None) -> list[int]:
        """Declare the app's schedules (the first time, and again if one has gone missing), then
        fire every round due at datastore time `now` that is this node's turn (with `section`,
        the partitions it owns; None: every round is); returns the ids of the jobs submitted.
        Raises DatastoreUnavailable if the datastore cannot be reached (the caller tries again
        at its next heartbeat)."""
        if not self.app.schedules:
            return []
        if section is not None and self.partitions is None:
            self.partitions = self.store.read_cluster().partitions
        records = [] if not self.declared else self.store.read_schedules()
        if not self.app.schedules.keys() <= {r.spec.name for r in records}:
            # First time, or a schedule was forgotten (`shoal schedules --forget`) while this
            # app still declares it: declare again; what was missing starts at its next tick.
            self.store.declare_schedules(list(self.app.schedules.values()))
            self.declared = True
            records = self.store.read_schedules()
        submitted: list[int] = []
        for record in records:
            if record.spec.name in self.app.schedules and record.spec.task in self.app.tasks:
                submitted += self.fire_due(record, now, section)
        return submitted

    def fire_due(
        self, record: ScheduleRecord, now: float, section: Collection[int] | None = None
    ) -> list[int]:
        spec = record.spec
        try:
            timetable = self.timetable(record)
        except ScheduleError as exc:  # stored by a node of another version that accepted it
            log.warning("schedule %r cannot fire here: %s", spec.name, exc)
            return []
        plan = plan_ticks(timetable, record.fired_through, now, spec.missed, self.missed_after_s)
        if plan.through == record.fired_through:
            return []
        if not self.is_turn(spec.name, plan, now, section):
            return []
        job = self.job_of(record)
        fired = [ScheduledJob(t.at, job, t.catch_up) for t in plan.ticks]
        ids = self.store.fire_schedule(spec.name, record.fired_through, fired, plan.through)
        if ids is not None:
            self.log_round(record, plan, ids)
        return ids or []

    def is_turn(self, name: str, plan: Plan, now: float, section: Collection[int] | None) -> bool:
        """Whether this node fires `plan` now: its first tick is this node's turn, or late."""
        if section is None or not plan.ticks or not self.partitions:
            return True  # a round that only skips missed ticks writes no job: anyone may
        return is_my_turn(name, plan.ticks[0].at, now, section, self.partitions)

    def timetable(self, record: ScheduleRecord) -> Timetable:
        spec = record.spec
        key = (spec.cron, spec.every_s, spec.tz)
        if key not in self._timetables:
            self._timetables[key] = timetable_of(spec)
        return self._timetables[key]

    def job_of(self, record: ScheduleRecord) -> NewJob:
        """The job a tick submits: the stored arguments, this app's options for the task."""
        options = self.app.tasks[record.spec.task].options
        return NewJob(
            task=record.spec.task,
            args_json=record.spec.args_json,
            kwargs_json=record.spec.kwargs_json,
            max_attempts=options.retries + 1,
            timeout_s=options.timeout_s,
            priority=options.priority,
        )

    def log_round(self, record: ScheduleRecord, plan: Plan, ids: list[int]) -> None:
        name = record.spec.name
        if not plan.ticks:
            log.warning("schedule %r: skipped the ticks missed (missed='skip')", name)
        elif plan.ticks[0].catch_up and ids:
            log.warning("schedule %r: job %d catches up on the ticks missed", name, ids[0])
        for job_id in ids:
            log.debug("schedule %r submitted job %d", name, job_id)
