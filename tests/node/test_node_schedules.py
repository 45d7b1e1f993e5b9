"""Periodic schedules on real in-process nodes: every node may fire, each tick fires once, a node
that leaves hands the next ticks to the others, and missed ticks follow the schedule's policy."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from shoal.app import App
from shoal.model import JobFilter, JobState
from shoal.node import Node, NodeConfig
from shoal.node.schedules import Scheduler
from shoal.schedule import TURN_GRACE_S, Every, turn_partition
from shoal.store import Store
from shoal.store.sqlite import SqliteStore

# Fast timers (as tests/node/conftest.py has them), with a lease no busy machine outlasts.
FAST = {"heartbeat_s": 0.02, "lease_s": 30.0, "poll_s": 0.005, "progress_flush_s": 0.01}


def wait_for(condition: object, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not met before the deadline"
        time.sleep(0.02)


def beat_app(store: Store, **schedule: object) -> App:
    app = App(store.url_for_display)
    app.use_store(store)

    @app.task(retries=0)
    def beat(label: str) -> str:
        return label

    app.schedule(beat, args=["x"], **schedule)  # type: ignore[arg-type]
    return app


@pytest.fixture
def stores(tmp_path: Path) -> Iterator[list[SqliteStore]]:
    path = str(tmp_path / "sched.db")
    first = SqliteStore(path)
    first.initialize(partitions=8)
    made = [first, *(SqliteStore(path) for _ in range(2))]
    yield made
    for s in made:
        s.close()


def fired_ticks(store: Store) -> list[float]:
    return sorted(t.tick for t in store.list_schedule_ticks("beat", limit=10_000))


def test_three_nodes_fire_each_tick_once_and_the_rest_go_on_when_one_leaves(
    stores: list[SqliteStore],
) -> None:
    nodes = [
        Node(beat_app(s, every_s=1), s, NodeConfig(name=f"n{i}", **FAST)).start()
        for i, s in enumerate(stores)
    ]
    try:
        wait_for(lambda: len(fired_ticks(stores[0])) >= 2)
        nodes[0].stop(grace_s=0)
        left_at = stores[0].now()
        wait_for(lambda: fired_ticks(stores[0])[-1] >= left_at + 2)
    finally:
        for node in nodes:
            node.stop(grace_s=0)
    ticks = fired_ticks(stores[0])
    assert ticks == [ticks[0] + i for i in range(len(ticks))]  # every second, none twice
    records = stores[0].list_schedule_ticks("beat", limit=10_000)
    jobs = stores[0].list_jobs(JobFilter(task="beat"), limit=10_000)
    assert sorted(r.job_id for r in records) == sorted(j.id for j in jobs)
    assert all(j.args == ["x"] and j.max_attempts == 1 for j in jobs)
    assert {j.state for j in jobs} <= {JobState.SUCCEEDED, JobState.QUEUED, JobState.RUNNING}


def start_long_ago(store: Store, app: App, seconds: float) -> float:
    """Declare the app's schedules and wait `seconds` of datastore time."""
    scheduler = Scheduler(store, app, missed_after_s=0.5)
    assert scheduler.run_once(store.now()) == []  # declares; nothing is due yet
    start = store.read_schedules()[0].fired_through
    wait_for(lambda: store.now() > start + seconds)
    return start


def test_missed_once_fires_one_catch_up_job_then_the_ticks_on_time(
    stores: list[SqliteStore],
) -> None:
    store = stores[0]
    app = beat_app(store, every_s=1, missed="once")
    start_long_ago(store, app, 3.0)
    ids = Scheduler(store, app, missed_after_s=0.5).run_once(store.now())
    ticks = store.list_schedule_ticks("beat")
    assert len(ids) == len(ticks) and 1 <= len(ids) <= 2
    assert ticks[-1].catch_up and not any(t.catch_up for t in ticks[:-1])


def test_missed_skip_fires_no_catch_up(stores: list[SqliteStore]) -> None:
    store = stores[0]
    app = beat_app(store, every_s=1, missed="skip")
    start = start_long_ago(store, app, 3.0)
    ids = Scheduler(store, app, missed_after_s=0.5).run_once(store.now())
    assert len(ids) <= 1  # at most the tick still on time
    assert not any(t.catch_up for t in store.list_schedule_ticks("beat"))
    assert store.read_schedules()[0].fired_through >= start + 2


def test_a_node_without_the_task_or_the_declaration_fires_nothing(
    stores: list[SqliteStore],
) -> None:
    store = stores[0]
    declaring = beat_app(store, every_s=1)
    start_long_ago(store, declaring, 1.5)
    other = App(store.url_for_display)
    other.use_store(store)

    @other.task
    def beat(label: str) -> str:  # the task, but not the schedule
        return label

    assert Scheduler(store, other).run_once(store.now()) == []
    assert store.list_schedule_ticks("beat") == []
    assert Scheduler(store, declaring).run_once(store.now())


def test_a_node_asked_to_pause_leaves_the_ticks_to_others(stores: list[SqliteStore]) -> None:
    store = stores[0]
    node = Node(beat_app(store, every_s=1), store, NodeConfig(name="p", **FAST)).start()
    try:
        wait_for(lambda: len(fired_ticks(store)) >= 1)
        store.request_pause("p", True)
        wait_for(lambda: store.read_cluster().nodes[0].state.value == "paused")
        paused_at = store.now()
        count = len(fired_ticks(store))
        wait_for(lambda: store.now() > paused_at + 2.2)
        assert len(fired_ticks(store)) <= count + 1  # at most a heartbeat already under way
        store.request_pause("p", False)
        wait_for(lambda: len(fired_ticks(store)) >= count + 2)
    finally:
        node.stop(grace_s=0)


def test_a_schedule_forgotten_while_still_declared_comes_back_as_new(
    stores: list[SqliteStore],
) -> None:
    store = stores[0]
    app = beat_app(store, every_s=1)
    scheduler = Scheduler(store, app)
    scheduler.run_once(store.now())
    first = store.read_schedules()[0].fired_through
    assert store.forget_schedule("beat")
    wait_for(lambda: store.now() > first + 0.01)
    scheduler.run_once(store.now())
    [record] = store.read_schedules()
    assert record.spec == app.schedules["beat"] and record.fired_through > first


def test_a_tick_is_first_its_partition_owners_then_anyones_once_late(
    stores: list[SqliteStore],
) -> None:
    store = stores[0]
    app = beat_app(store, every_s=1)
    owner, other = Scheduler(store, app), Scheduler(store, app)
    owner.run_once(store.now(), ())  # declares; nothing is due
    partitions = store.read_cluster().partitions
    tick = Every(1).next_after(store.read_schedules()[0].fired_through)
    turn = turn_partition("beat", tick, partitions)
    everyone_else = [p for p in range(partitions) if p != turn]
    wait_for(lambda: store.now() >= tick)
    now = store.now()
    assert now - tick < TURN_GRACE_S, "the machine is too slow for this test"
    assert other.run_once(now, everyone_else) == []
    assert len(owner.run_once(now, [turn])) >= 1
    late = Every(1).next_after(store.read_schedules()[0].fired_through)
    wait_for(lambda: store.now() >= late + TURN_GRACE_S)
    assert other.run_once(store.now(), []) != []  # a node owning nothing stands in once late
    fired = fired_ticks(store)
    assert fired == [fired[0] + i for i in range(len(fired))]
