"""The periodic schedules as the datastore holds them, for `shoal schedules` and `/api/schedules`.

`read_schedules_view` needs no app: nodes store every schedule they declare, so the view shows
each one's task, timing, zone, last firing (tick, job, the job's state now) and next tick from
the datastore alone, and whether any live node has the task registered to fire it. The terminal
table and the JSON document are drawn from the same values; text from the datastore reaches rich
only as `Text`, never as markup.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any
from zoneinfo import ZoneInfo

from rich.table import Table
from rich.text import Text

from shoal.errors import ScheduleError
from shoal.model import JobState, ScheduleRecord
from shoal.observer.format import format_age, format_moment, printable
from shoal.schedule import timetable_of
from shoal.store.port import Store


@dataclass(frozen=True)
class ScheduleView:
    name: str
    task: str
    cron: str | None
    every_s: float | None
    tz: str
    when: str  # the timing as people read it
    missed: str
    args: str  # the arguments as JSON text, positional then keyword
    kwargs: str
    declared_at: float
    fired_through: float
    last_tick: float | None
    last_job_id: int | None
    last_job_state: JobState | None  # None: no firing yet, or its job was pruned
    last_catch_up: bool
    next_tick: float | None  # None if this version of Shoal cannot read its timing
    has_live_node: bool  # a live node registers the task, so the next tick will fire


@dataclass(frozen=True)
class SchedulesView:
    now: float
    schedules: list[ScheduleView]


def read_schedules_view(store: Store) -> SchedulesView:
    """Every stored schedule with its last and next firing, at the datastore's now."""
    now = store.now()
    live_tasks = store.known_tasks()
    return SchedulesView(now, [schedule_view(r, live_tasks) for r in store.read_schedules()])


def schedule_view(record: ScheduleRecord, live_tasks: set[str]) -> ScheduleView:
    spec = record.spec
    try:
        next_tick: float | None = timetable_of(spec).next_after(record.fired_through)
    except ScheduleError:
        next_tick = None
    return ScheduleView(
        name=spec.name,
        task=spec.task,
        cron=spec.cron,
        every_s=spec.every_s,
        tz=spec.tz,
        when=spec.when,
        missed=spec.missed.value,
        args=spec.args_json,
        kwargs=spec.kwargs_json,
        declared_at=record.declared_at,
        fired_through=record.fired_through,
        last_tick=record.last_tick,
        last_job_id=record.last_job_id,
        last_job_state=record.last_job_state,
        last_catch_up=record.last_catch_up,
        next_tick=next_tick,
        has_live_node=spec.task in live_tasks,
    )


def schedules_document(view: SchedulesView) -> dict[str, Any]:
    """What `shoal schedules --json` prints: the view, states as their names."""
    return {
        "now": view.now,
        "schedules": [
            {**asdict(s), "last_job_state": s.last_job_state and s.last_job_state.value}
            for s in view.schedules
        ],
    }


def local_time(t: float, tz: str) -> str:
    """`t` as wall-clock time in the schedule's zone (UTC if this machine lacks the zone); in
    words if no calendar date can show it (see `format_moment`)."""
    try:
        zone = ZoneInfo(tz)
    except (KeyError, ValueError):
        zone = ZoneInfo("UTC")
    return format_moment(t, zone)


def relative(t: float, now: float) -> str:
    return f"in {format_age(t - now)}" if t >= now else f"{format_age(now - t)} ago"


def render_schedules(view: SchedulesView) -> Table:
    """One row per schedule: name, task, timing, last run (tick, job, state), next run."""
    table = Table(title="Schedules", title_justify="left", expand=True, show_edge=False)
    for column in ("name", "task", "when", "missed", "last run", "job", "next run"):
        table.add_column(column, overflow="fold")
    for s in view.schedules:
        table.add_row(
            Text(printable(s.name)),
            Text(printable(s.task)),
            Text(printable(s.when)),
            Text(s.missed),
            _last_run(s, view.now),
            _job(s),
            _next_run(s, view.now),
        )
    if not view.schedules:
        table.add_row(Text("no schedules declared yet", style="dim"), *[""] * 6)
    return table


def _last_run(s: ScheduleView, now: float) -> Text:
    if s.last_tick is None:
        return Text("never", style="dim")
    text = Text(printable(local_time(s.last_tick, s.tz)))
    text.append(f" ({relative(s.last_tick, now)})", style="dim")
    if s.last_catch_up:
        text.append(" catch-up", style="yellow")
    return text


def _job(s: ScheduleView) -> Text:
    if s.last_job_id is None:
        return Text("—", style="dim")
    state = s.last_job_state.value if s.last_job_state is not None else "pruned"
    style = "red" if s.last_job_state is JobState.FAILED else ""
    return Text.assemble(str(s.last_job_id), " ", (state, style))


def _next_run(s: ScheduleView, now: float) -> Text:
    if s.next_tick is None:
        return Text("unreadable timing", style="red")
    text = Text(printable(local_time(s.next_tick, s.tz)))
    text.append(f" ({relative(s.next_tick, now)})", style="dim")
    if not s.has_live_node:
        text.append(" no live node runs ", style="yellow")
        text.append(printable(s.task), style="yellow")
    return text
