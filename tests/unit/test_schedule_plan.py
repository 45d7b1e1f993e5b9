"""The firing plan every node applies: due ticks on time get a job each, missed ones one
catch-up job or none; intervals tick on multiples of themselves; declarations are checked."""

from __future__ import annotations

import math
from collections import Counter
from datetime import timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shoal import App
from shoal.cron import parse
from shoal.errors import ScheduleError
from shoal.model import Missed
from shoal.schedule import (
    MISSED_AFTER_S,
    TURN_GRACE_S,
    Every,
    Plan,
    Tick,
    is_my_turn,
    plan_ticks,
    turn_partition,
)

T0 = 1_800_000_000.0  # a multiple of 1, 5 and 60


def test_nothing_is_due_before_the_next_tick() -> None:
    assert plan_ticks(Every(5), T0 + 0.5, T0 + 4.9, Missed.ONCE) == Plan((), T0 + 0.5)


def test_each_tick_due_on_time_gets_its_own_job() -> None:
    plan = plan_ticks(Every(1), T0 + 0.5, T0 + 3.2, Missed.ONCE)
    assert plan == Plan((Tick(T0 + 1), Tick(T0 + 2), Tick(T0 + 3)), T0 + 3)


def test_after_downtime_once_fires_one_catch_up_then_the_ticks_on_time() -> None:
    now = T0 + 100.5
    plan = plan_ticks(Every(1), T0, now, Missed.ONCE)
    catch_up, *on_time = plan.ticks
    assert catch_up == Tick(T0 + 90, catch_up=True)  # the latest tick more than 10 s late
    assert [t.at for t in on_time] == [T0 + s for s in range(91, 101)]
    assert plan.through == T0 + 100


def test_after_downtime_skip_fires_only_the_ticks_on_time() -> None:
    plan = plan_ticks(parse("* * * * *"), T0, T0 + 3600 + 5, Missed.SKIP)
    assert plan.ticks == (Tick(T0 + 3600),)
    skipped = plan_ticks(parse("* * * * *"), T0, T0 + 3600 + 30, Missed.SKIP)
    assert skipped == Plan((), T0 + 3600)  # missed: settled, with no job


def test_a_catch_up_after_years_costs_one_search_window() -> None:
    years = 5 * 365 * 86400
    plan = plan_ticks(parse("*/5 * * * *"), T0, T0 + years + 150, Missed.ONCE)
    assert plan == Plan((Tick(T0 + years, catch_up=True),), T0 + years)


def test_on_time_ticks_are_capped_per_round_and_the_rest_follow() -> None:
    first = plan_ticks(Every(1), T0, T0 + 9, Missed.ONCE, limit=4)
    assert [t.at for t in first.ticks] == [T0 + 1, T0 + 2, T0 + 3, T0 + 4]
    rest = plan_ticks(Every(1), first.through, T0 + 9, Missed.ONCE, limit=4)
    assert [t.at for t in rest.ticks] == [T0 + 5, T0 + 6, T0 + 7, T0 + 8]


@given(
    every=st.sampled_from([1.0, 2.5, 7.0, 60.0, 0.1 * 37]),
    start=st.floats(0, 4e9),
    rounds=st.lists(st.floats(0.0, 40.0), min_size=1, max_size=30),
    missed=st.sampled_from(list(Missed)),
)
def test_rounds_never_fire_a_tick_twice_nor_leave_one_on_time_unfired(
    every: float, start: float, rounds: list[float], missed: Missed
) -> None:
    timetable, through, now, fired = Every(every), start, start, []
    for step in rounds:
        now += step
        plan = plan_ticks(timetable, through, now, missed)
        assert plan.through >= through
        assert all(through < t.at <= now for t in plan.ticks)
        fired += [t.at for t in plan.ticks if not t.catch_up]
        through = plan.through
    assert len(fired) == len(set(fired))
    # Every tick between two looks no more than MISSED_AFTER_S apart was fired on time.
    if all(step <= MISSED_AFTER_S for step in rounds):
        t, expected = timetable.next_after(start), []
        while t <= through:
            expected.append(t)
            t = timetable.next_after(t)
        assert fired == expected


@given(st.floats(-1e10, 1e10), st.sampled_from([1.0, 3.0, 0.7, 86400.0, 1e-3 * 1234]))
def test_interval_ticks_are_the_next_multiple_strictly_after(t: float, every: float) -> None:
    tick = Every(every).next_after(t)
    assert tick > t
    k = round(tick / every)
    assert tick == k * every and (k - 1) * every <= t


def test_declaring_checks_everything_before_anything_is_kept() -> None:
    app = App("sqlite:///unused.db")

    @app.task
    def report(day: str, detail: bool = False) -> None: ...

    cases = [
        ({"cron": "*/5 * * *"}, "has 4 fields"),
        ({"cron": "* * * * *", "tz": "Nowhere/City"}, "unknown time zone"),
        ({"every_s": 0.5}, "every_s must be between"),
        ({"every_s": math.nan}, "every_s must be between"),
        ({"every_s": 10, "tz": "UTC"}, "no zone"),
        ({}, "exactly one of"),
        ({"cron": "* * * * *", "every_s": 5}, "exactly one of"),
        ({"every_s": 5, "args": ["mon", 1, 2]}, "bad arguments"),
        ({"every_s": 5, "args": [{1, 2}]}, "must be JSON"),
        ({"every_s": 5, "args": ["mon"], "missed": "always"}, "'once' or 'skip'"),
    ]
    for options, complaint in cases:
        with pytest.raises(ScheduleError, match=complaint):
            app.schedule(report, **options)  # type: ignore[arg-type]
    assert app.schedules == {}
    with pytest.raises(ScheduleError, match="not a task of this app"):
        app.schedule("missing", every_s=5)
    spec = app.schedule(report, cron="0 9 * * mon", args=["mon"], tz="Europe/Paris")
    assert (spec.name, spec.tz, spec.args_json, spec.missed) == (
        "report",
        "Europe/Paris",
        '["mon"]',
        Missed.ONCE,
    )
    with pytest.raises(ScheduleError, match="already declared"):
        app.schedule(report, every_s=60, args=["tue"])
    app.schedule("report", every_s=60, args=["tue"], name="report-often", missed="skip")
    assert sorted(app.schedules) == ["report", "report-often"]


def test_a_task_declared_with_a_bad_schedule_is_not_registered() -> None:
    app = App("sqlite:///unused.db")
    with pytest.raises(ScheduleError):

        @app.task(schedule="every minute")
        def tick() -> None: ...

    assert app.tasks == {} and app.schedules == {}

    @app.task(schedule=30)
    def beat() -> None: ...

    assert app.schedules["beat"].every_s == 30.0 and app.schedules["beat"].task == "beat"
    spec = app.schedule(beat, every_s=timedelta(hours=1), name="hourly")
    assert spec.every_s == 3600.0 and spec.when == "every 3600s"


@given(st.text(min_size=1, max_size=20), st.floats(0, 4e9), st.integers(1, 512))
def test_each_tick_is_the_turn_of_exactly_one_partition_owner_until_it_is_late(
    name: str, tick: float, partitions: int
) -> None:
    sections = [range(i, partitions, 3) for i in range(3)]  # three nodes share the partitions
    on_time = [is_my_turn(name, tick, tick + 0.5, s, partitions) for s in sections]
    assert on_time.count(True) == 1
    late = tick + TURN_GRACE_S + 0.01
    assert all(is_my_turn(name, tick, late, s, partitions) for s in [*sections, ()])


def test_turns_spread_over_the_partitions() -> None:
    owners = Counter(turn_partition("beat", float(t), 8) for t in range(800))
    assert len(owners) == 8 and max(owners.values()) < 2 * min(owners.values())
