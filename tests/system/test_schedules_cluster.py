"""Periodic schedules on real node processes: three nodes, an every-second schedule, one node
SIGKILLed, another frozen (SIGSTOP, on PostgreSQL) for longer than its lease, then one paused
(`shoal pause`): every tick of the run fires exactly once, with one job each, and `shoal
schedules` reports it from the datastore alone."""

from __future__ import annotations

import itertools
import json
import signal

from shoal.model import JobFilter, JobState, NodeState
from shoal.schedule import MISSED_AFTER_S
from shoal.store import Store, open_store

from realnodes import Cluster, shoal, until

APP = "schedtasks:app"


def ticks(store: Store) -> list[float]:
    return sorted(t.tick for t in store.list_schedule_ticks("beat", limit=10_000))


def more_ticks(store: Store, count: int, what: str) -> None:
    """Wait until `count` more ticks have fired than have now."""
    goal = len(ticks(store)) + count
    until(lambda: len(ticks(store)) >= goal, timeout_s=30, what=what)


def live(store: Store) -> set[str]:
    return {n.name for n in store.read_cluster().nodes if n.state is not NodeState.DEAD}


def state_of(store: Store, name: str) -> NodeState | None:
    found = [n.state for n in store.read_cluster().nodes if n.name == name]
    return found[-1] if found else None


def assert_each_tick_fired_once(store: Store) -> None:
    """Every second from the first tick to the last fired once, each with its own job made
    within the on-time margin (a catch-up firing stands for the seconds before it), and every job
    of the task belongs to exactly one tick."""
    fired = sorted(store.list_schedule_ticks("beat", limit=10_000), key=lambda t: t.tick)
    for before, tick in itertools.pairwise(fired):
        assert tick.tick == before.tick + 1 or tick.catch_up, f"a gap before {tick}"
    jobs = store.list_jobs(JobFilter(task="beat"), limit=10_000)
    assert sorted(j.id for j in jobs) == sorted(t.job_id for t in fired)  # one job per tick
    tick_of = {t.job_id: t for t in fired}
    for job in jobs:
        tick = tick_of[job.id]
        assert tick.catch_up or 0 <= job.created_at - tick.tick < MISSED_AFTER_S, job
    done = [j for j in jobs if j.state is JobState.SUCCEEDED]
    assert all(j.result == j.id for j in done)


def test_every_tick_fires_once_through_a_kill_a_freeze_and_a_pause(cluster: Cluster) -> None:
    store = open_store(cluster.url)
    for name in ("a", "b", "c"):
        cluster.start(name, app=APP)
    until(lambda: live(store) >= {"a", "b", "c"}, what="three live nodes")
    more_ticks(store, 3, "ticks with three nodes")
    cluster.processes["b"].send_signal(signal.SIGKILL)
    more_ticks(store, 3, "ticks after b was killed")
    # On SQLite a node frozen inside a write transaction keeps the file's write lock, and every
    # other node waits on it until it runs again (one writer at a time is SQLite's nature), so
    # only the PostgreSQL run freezes a node.
    if not cluster.url.startswith("sqlite"):
        cluster.processes["c"].send_signal(signal.SIGSTOP)
        until(lambda: "c" not in live(store), timeout_s=15, what="frozen c declared dead")
        more_ticks(store, 2, "ticks while c is frozen")
        cluster.processes["c"].send_signal(signal.SIGCONT)
        until(lambda: "c" in live(store), timeout_s=15, what="c back as a new node")
        more_ticks(store, 3, "ticks after c came back")
    shoal("pause", "a", "--db", cluster.url, check=True)
    until(lambda: state_of(store, "a") is NodeState.PAUSED, timeout_s=15, what="a paused")
    more_ticks(store, 3, "ticks while a is paused")
    shoal("resume", "a", "--db", cluster.url, check=True)
    resumed = (NodeState.WAITING, NodeState.WORKING)
    until(lambda: state_of(store, "a") in resumed, timeout_s=15, what="a resumed")
    more_ticks(store, 2, "ticks after a resumed")
    for name in ("a", "c"):
        cluster.processes[name].send_signal(signal.SIGTERM)
    for name in ("a", "c"):
        assert cluster.processes[name].wait(timeout=60) == 0, cluster.log(name)

    assert_each_tick_fired_once(store)
    fired = store.list_schedule_ticks("beat", limit=10_000)
    assert not any(t.catch_up for t in fired)  # no tick was ever missed for long
    seconds = sorted(t.tick for t in fired)
    jobs = store.list_jobs(JobFilter(task="beat"), limit=10_000)
    assert sum(j.state is JobState.SUCCEEDED for j in jobs) >= len(jobs) - 3  # ran, too

    shown = shoal("schedules", "--db", cluster.url, "--json", check=True)
    [beat] = json.loads(shown.stdout)["schedules"]
    assert (beat["name"], beat["task"], beat["every_s"]) == ("beat", "beat", 1.0)
    assert beat["last_tick"] == seconds[-1] and beat["last_job_id"] == max(j.id for j in jobs)
    table = shoal("schedules", "--db", cluster.url, check=True).stdout
    assert "beat" in table and "every 1s" in table
