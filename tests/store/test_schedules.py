"""Conformance, periodic schedules: declaring keeps one row per name and starts new or changed
schedules at now; a firing applies only from where it was planned, never ahead of the clock,
with its job in the same transaction; two stores firing one tick at once make one job."""

from __future__ import annotations

import sqlite3
import threading
from dataclasses import replace

import pytest
from conformance import until

from shoal.model import JobFilter, JobState, Missed, NewJob, ScheduledJob, ScheduleSpec
from shoal.store import Store, open_store
from shoal.store.rules import TICKS_KEPT

SPEC = ScheduleSpec("nightly", "report", "0 3 * * *", None, "Europe/Paris", '["x"]', "{}")
BEAT = ScheduleSpec("beat", "t", None, 1.0, "UTC", "[]", '{"n":1}', Missed.SKIP)


def job(task: str = "t") -> NewJob:
    return NewJob(task, "[]", "{}", max_attempts=2)


def declared(store: Store, *specs: ScheduleSpec) -> dict[str, float]:
    """Declare `specs`; their `fired_through` by name."""
    store.declare_schedules(list(specs))
    return {r.spec.name: r.fired_through for r in store.read_schedules()}


def settled_in_the_past(store: Store, spec: ScheduleSpec) -> float:
    """Declare `spec` and wait until the datastore's clock is past its start."""
    start = declared(store, spec)[spec.name]
    until(lambda: store.now() > start + 0.05)
    return start


def test_a_new_schedule_starts_settled_at_now_with_no_firing(store: Store) -> None:
    before = store.now()
    store.declare_schedules([SPEC, BEAT])
    records = store.read_schedules()
    assert [r.spec for r in records] == [BEAT, SPEC]  # by name
    for r in records:
        assert before <= r.fired_through == r.declared_at <= store.now()
        assert (r.last_tick, r.last_job_id, r.last_job_state) == (None, None, None)


def test_redeclaring_unchanged_keeps_its_place_and_a_change_starts_afresh(store: Store) -> None:
    start = settled_in_the_past(store, SPEC)
    assert declared(store, SPEC)["nightly"] == start
    [record] = store.read_schedules()
    assert record.declared_at > start  # declared again, later
    for changed in (
        replace(SPEC, cron="0 4 * * *"),
        replace(SPEC, tz="UTC"),
        replace(SPEC, args_json='["y"]'),
        replace(SPEC, missed=Missed.SKIP),
        replace(SPEC, cron=None, every_s=60.0),
    ):
        previous = store.read_schedules()[0].fired_through
        until(lambda p=previous: store.now() > p)  # type: ignore[misc]
        assert declared(store, changed)["nightly"] > previous
        assert store.read_schedules()[0].spec == changed


def test_a_firing_records_its_ticks_and_jobs_in_one_go(store: Store) -> None:
    start = settled_in_the_past(store, BEAT)
    fired = [ScheduledJob(start + 0.01, job(), catch_up=True), ScheduledJob(start + 0.02, job())]
    ids = store.fire_schedule("beat", start, fired, start + 0.03)
    assert ids is not None and len(ids) == 2
    jobs = [store.read_job(i) for i in ids]
    assert all(j is not None and j.state is JobState.QUEUED and j.task == "t" for j in jobs)
    [record] = store.read_schedules()
    assert record.fired_through == start + 0.03
    assert (record.last_tick, record.last_job_id) == (start + 0.02, ids[1])
    assert record.last_job_state is JobState.QUEUED and not record.last_catch_up
    ticks = store.list_schedule_ticks("beat")
    assert [(t.tick, t.job_id, t.catch_up) for t in ticks] == [
        (start + 0.02, ids[1], False),
        (start + 0.01, ids[0], True),
    ]
    assert store.read_cluster().job_counts[JobState.QUEUED] == 2


def test_a_round_planned_from_a_stale_point_writes_nothing(store: Store) -> None:
    start = settled_in_the_past(store, BEAT)
    assert store.fire_schedule("beat", start, [ScheduledJob(start + 0.01, job())], start + 0.01)
    again = store.fire_schedule("beat", start, [ScheduledJob(start + 0.02, job())], start + 0.02)
    assert again is None
    assert len(store.list_jobs(JobFilter())) == 1
    assert store.fire_schedule("nobody", start, [], start + 0.01) is None


def test_a_round_ahead_of_the_datastore_clock_is_refused(store: Store) -> None:
    start = declared(store, BEAT)["beat"]
    late = start + 3600
    assert store.fire_schedule("beat", start, [ScheduledJob(late, job())], late) is None
    assert store.read_schedules()[0].fired_through == start
    assert store.list_jobs(JobFilter()) == []


def test_a_skipping_round_moves_on_without_a_job(store: Store) -> None:
    start = settled_in_the_past(store, BEAT)
    assert store.fire_schedule("beat", start, [], start + 0.01) == []
    [record] = store.read_schedules()
    assert record.fired_through == start + 0.01 and record.last_tick is None


def test_firings_outside_the_round_are_a_caller_error(store: Store) -> None:
    start = settled_in_the_past(store, BEAT)
    for fired, through in (
        ([ScheduledJob(start, job())], start + 0.01),  # not after the old point
        ([ScheduledJob(start + 0.02, job())], start + 0.01),  # after the new one
        ([ScheduledJob(start + 0.01, job()), ScheduledJob(start + 0.01, job())], start + 0.01),
    ):
        with pytest.raises(ValueError):
            store.fire_schedule("beat", start, fired, through)
    assert store.list_jobs(JobFilter()) == []


def test_the_last_job_state_follows_the_job_and_pruned_jobs_leave_none(store: Store) -> None:
    start = settled_in_the_past(store, BEAT)
    [job_id] = store.fire_schedule("beat", start, [ScheduledJob(start + 0.01, job())], start + 0.01)
    assert store.cancel_job(job_id)
    assert store.read_schedules()[0].last_job_state is JobState.CANCELLED


def test_old_tick_rows_are_trimmed_to_the_latest_kept(store: Store) -> None:
    start = settled_in_the_past(store, BEAT)
    step = 0.04 / (TICKS_KEPT + 5)
    through = start
    for batch in range(3):
        ticks = [through + step * (i + 1) for i in range((TICKS_KEPT + 5) // 3 + 1)]
        fired = [ScheduledJob(t, job()) for t in ticks]
        assert store.fire_schedule("beat", through, fired, ticks[-1]) is not None, batch
        through = ticks[-1]
    kept = store.list_schedule_ticks("beat", limit=10 * TICKS_KEPT)
    assert len(kept) == TICKS_KEPT and kept[0].tick == through
    assert len(store.list_jobs(JobFilter(), limit=10 * TICKS_KEPT)) == 3 * len(ticks)


def test_two_stores_firing_the_same_tick_at_once_make_one_job(db_url: str) -> None:
    stores = [open_store(db_url) for _ in range(4)]
    try:
        start = settled_in_the_past(stores[0], BEAT)
        tick = start + 0.01
        for round_ in range(10):  # each round: every store fires the same tick at once
            barrier = threading.Barrier(len(stores))
            results: list[list[int] | None] = []

            def fire(
                s: Store,
                barrier: threading.Barrier,
                results: list[list[int] | None],
                t: float,
                through: float,
            ) -> None:
                barrier.wait()
                results.append(s.fire_schedule("beat", through, [ScheduledJob(t, job())], t))

            threads = [
                threading.Thread(target=fire, args=(s, barrier, results, tick, start))
                for s in stores
            ]
            for th in threads:
                th.start()
            for th in threads:
                th.join()
            winners = [r for r in results if r is not None]
            assert len(results) == len(stores) and len(winners) == 1, round_
            assert len(winners[0]) == 1
            start, tick = tick, tick + 0.001
            until(lambda t=start: stores[0].now() > t + 0.001)  # type: ignore[misc]
        assert len(stores[0].list_jobs(JobFilter(), limit=100)) == 10
        assert len(stores[0].list_schedule_ticks("beat")) == 10
    finally:
        for s in stores:
            s.close()


def test_nodes_declaring_at_once_keep_one_row(db_url: str) -> None:
    stores = [open_store(db_url) for _ in range(3)]
    try:
        barrier = threading.Barrier(len(stores))

        def declare(s: Store) -> None:
            barrier.wait()
            s.declare_schedules([SPEC, BEAT])

        threads = [threading.Thread(target=declare, args=(s,)) for s in stores]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        assert [r.spec.name for r in stores[0].read_schedules()] == ["beat", "nightly"]
    finally:
        for s in stores:
            s.close()


def rewind(db_url: str, name: str, to: float) -> None:
    """Move a schedule's `fired_through` back behind Shoal's back (a restored backup, say)."""
    sql = "UPDATE schedules SET fired_through = {} WHERE name = {}"
    if db_url.startswith("sqlite:"):
        with sqlite3.connect(db_url.removeprefix("sqlite:///")) as conn:
            conn.execute(sql.format("?", "?"), (to, name))
        return
    import psycopg

    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(sql.format("%s", "%s"), (to, name))  # type: ignore[arg-type]


def test_a_tick_already_recorded_never_gets_a_second_job(db_url: str) -> None:
    store = open_store(db_url)
    try:
        start = settled_in_the_past(store, BEAT)
        tick = start + 0.01
        [first] = store.fire_schedule("beat", start, [ScheduledJob(tick, job())], tick) or [0]
        rewind(db_url, "beat", start)
        again = store.fire_schedule("beat", start, [ScheduledJob(tick, job())], tick)
        assert again == []  # the round applied, but the tick's key let no second job in
        assert [j.id for j in store.list_jobs(JobFilter())] == [first]
        assert [t.job_id for t in store.list_schedule_ticks("beat")] == [first]
        assert store.read_cluster().job_counts[JobState.QUEUED] == 1
    finally:
        store.close()


def test_forgetting_a_schedule_deletes_it_and_its_ticks_but_not_its_jobs(store: Store) -> None:
    start = settled_in_the_past(store, BEAT)
    store.declare_schedules([SPEC])
    [job_id] = store.fire_schedule("beat", start, [ScheduledJob(start + 0.01, job())], start + 0.01)
    assert store.forget_schedule("beat")
    assert [r.spec.name for r in store.read_schedules()] == ["nightly"]
    assert store.list_schedule_ticks("beat") == []
    assert store.read_job(job_id) is not None
    assert not store.forget_schedule("beat")
    again = declared(store, BEAT)["beat"]
    assert again > start + 0.01  # declared anew: it starts at now
