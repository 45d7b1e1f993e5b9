"""Tiny jobs go to the workers before their start is recorded, yet no job shows `running`, or
is charged an attempt, before a worker began it: a real node on each datastore, sampled while it
drains a backlog of tiny jobs with more claimed than it has workers."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pooltasks
import pytest

from shoal.app import App
from shoal.context import current_job
from shoal.model import JobFilter, JobState
from shoal.node import Node, NodeConfig
from shoal.store import Store
from shoal.store.sqlite import SqliteStore

from steered import until

JOBS = 400


class Begun:
    """The jobs whose body began, as each body notes it first."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._ids: set[int] = set()
        self.release = threading.Event()  # what the slow job waits for

    def note(self) -> None:
        job = current_job()
        assert job is not None
        with self._lock:
            self._ids.add(job.job_id)

    def ids(self) -> set[int]:
        with self._lock:
            return set(self._ids)


@pytest.fixture
def begun() -> Iterator[Begun]:
    noted = Begun()
    yield noted
    noted.release.set()


@pytest.fixture
def node(store: Store, begun: Begun) -> Iterator[tuple[App, Node]]:
    app = App()
    app.use_store(store)

    @app.task(name="tiny", retries=0)
    def tiny(x: int) -> int:
        begun.note()
        time.sleep(0.002)
        return x

    @app.task(name="slow", retries=0)
    def slow() -> None:
        begun.note()
        begun.release.wait(30)

    config = NodeConfig(name="a", concurrency=2, heartbeat_s=0.05, lease_s=30.0, poll_s=0.005)
    node = Node(app, store, config)
    yield app, node.start()
    begun.release.set()
    node.request_stop(grace_s=0.0)
    node.stop()


def _unbegun_but_shown_started(store: Store, begun: Begun) -> tuple[list[int], int]:
    """Jobs the datastore shows running, or charged an attempt, that no body began; and how
    many it shows claimed (held by the node, none begun as far as it records)."""
    shown = store.list_jobs(JobFilter(state=JobState.RUNNING), limit=JOBS)
    claimed = store.list_jobs(JobFilter(state=JobState.CLAIMED), limit=JOBS)
    ran = begun.ids()  # read after the datastore: a body that began meanwhile is in it
    return [j.id for j in shown if j.id not in ran], len(claimed)


def test_no_tiny_job_shows_running_before_a_worker_began_it(
    store: Store, begun: Begun, node: tuple[App, Node]
) -> None:
    app, _ = node
    tiny = app.get_task("tiny")
    tiny.submit(0).wait(timeout_s=30)  # the node learns its jobs are tiny
    handles = tiny.submit_many([(i,) for i in range(JOBS)])
    most_claimed = 0
    while not all(h.state in (JobState.SUCCEEDED, JobState.FAILED) for h in handles[-5:]):
        unbegun, claimed = _unbegun_but_shown_started(store, begun)
        assert unbegun == [], f"jobs {unbegun} show running though no worker began them"
        most_claimed = max(most_claimed, claimed)
    assert [h.wait(timeout_s=30) for h in handles] == list(range(JOBS))
    assert most_claimed > 2, "the node never held more tiny jobs than it has workers"
    for handle in handles[:50]:
        job = store.read_job(handle.id)
        assert job is not None and job.attempts == 1
        assert job.started_at is not None and job.finished_at is not None
        assert job.created_at <= job.started_at <= job.finished_at


def test_a_job_taken_for_tiny_that_runs_on_shows_running(
    store: Store, begun: Begun, node: tuple[App, Node]
) -> None:
    app, _ = node
    tiny = app.get_task("tiny")
    for i in range(20):
        tiny.submit(i).wait(timeout_s=30)  # recent jobs took 2 ms: the next is taken for tiny
    handle = app.get_task("slow").submit()
    until(lambda: handle.id in begun.ids(), "the slow job begun")
    until(lambda: handle.state is JobState.RUNNING, "its start recorded while it runs")
    job = store.read_job(handle.id)
    assert job is not None and job.attempts == 1 and job.started_at is not None
    begun.release.set()
    handle.wait(timeout_s=30)


def test_in_the_worker_process_too_no_tiny_job_shows_running_before_it_began(
    sqlite_store: SqliteStore, tmp_path: Path
) -> None:
    """The default pool: the bodies run in the node's worker process, noting in a file."""
    pooltasks.app.use_store(sqlite_store)
    config = NodeConfig(name="hosting", concurrency=2, heartbeat_s=0.05, poll_s=0.005)
    node = Node(pooltasks.app, sqlite_store, config, app_spec="pooltasks:app").start()
    try:
        noted = pooltasks.app.get_task("noted")
        path = str(tmp_path / "begun")
        noted.submit(path, 0.0).wait(timeout_s=60)  # the node learns its jobs are tiny
        handles = noted.submit_many([(path, 0.002)] * JOBS)
        most_claimed = 0
        while not all(h.state is JobState.SUCCEEDED for h in handles[-5:]):
            shown = sqlite_store.list_jobs(JobFilter(state=JobState.RUNNING), limit=JOBS)
            claimed = sqlite_store.list_jobs(JobFilter(state=JobState.CLAIMED), limit=JOBS)
            ran = {int(line) for line in Path(path).read_text().split()}
            unbegun = [j.id for j in shown if j.id not in ran]
            assert unbegun == [], f"jobs {unbegun} show running though no worker began them"
            most_claimed = max(most_claimed, len(claimed))
        for handle in handles:
            handle.wait(timeout_s=60)
        assert most_claimed > 2, "the node never held more tiny jobs than it has workers"
    finally:
        node.request_stop(grace_s=0.0)
        node.stop()
