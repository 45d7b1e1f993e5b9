"""Tiny jobs go to the workers before their start is recorded, yet no job shows `running`, or
is charged an attempt, before a worker began it: a real node on each datastore, sampled while it
drains a backlog of tiny jobs with more claimed than it has workers. Where the tasks run in the
node's own process, every start is recorded before the job begins instead."""

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

from steered import until

JOBS = 400
WAIT_S = 60.0  # a worker process imports the app: slow on a busy machine
FAST = {"concurrency": 2, "heartbeat_s": 0.05, "lease_s": 30.0, "poll_s": 0.005}


@pytest.fixture
def hosting(store: Store) -> Iterator[Node]:
    """A node of the default pool: the tasks run in its worker process."""
    pooltasks.app.use_store(store)
    config = NodeConfig(name="hosting", **FAST)  # type: ignore[arg-type]
    node = Node(pooltasks.app, store, config, app_spec="pooltasks:app").start()
    yield node
    node.request_stop(grace_s=0.0)
    node.stop()


def begun_in(path: Path) -> set[int]:
    """The jobs whose body began, as each noted in file `path` (see `pooltasks.noted`)."""
    return {int(line) for line in path.read_text().split()} if path.exists() else set()


def test_no_tiny_job_shows_running_before_a_worker_began_it(
    store: Store, hosting: Node, tmp_path: Path
) -> None:
    noted = pooltasks.app.get_task("noted")
    path = tmp_path / "begun"
    for _ in range(20):  # the node learns its jobs are tiny (a first one may be slow to open)
        noted.submit(str(path), 0.0).wait(timeout_s=WAIT_S)
    handles = noted.submit_many([(str(path), 0.002)] * JOBS)
    most_claimed = 0
    while not all(h.state is JobState.SUCCEEDED for h in handles[-5:]):
        shown = store.list_jobs(JobFilter(state=JobState.RUNNING), limit=JOBS)
        claimed = store.list_jobs(JobFilter(state=JobState.CLAIMED), limit=JOBS)
        ran = begun_in(path)  # read after the datastore: a body that began meanwhile is in it
        unbegun = [j.id for j in shown if j.id not in ran]
        assert unbegun == [], f"jobs {unbegun} show running though no worker began them"
        most_claimed = max(most_claimed, len(claimed))
    for handle in handles:
        handle.wait(timeout_s=WAIT_S)
    assert most_claimed > 2, "the node never held more tiny jobs than it has workers"
    for handle in handles[:50]:
        job = store.read_job(handle.id)
        assert job is not None and job.attempts == 1
        assert job.started_at is not None and job.finished_at is not None
        assert job.created_at <= job.started_at <= job.finished_at


def test_a_job_taken_for_tiny_that_runs_on_shows_running(
    store: Store, hosting: Node, tmp_path: Path
) -> None:
    noted = pooltasks.app.get_task("noted")
    path = tmp_path / "begun"
    for _ in range(20):  # recent jobs took no time: the next is taken for a tiny one
        noted.submit(str(path), 0.0).wait(timeout_s=WAIT_S)
    handle = noted.submit(str(path), 3.0)
    until(lambda: handle.id in begun_in(path), "the slow job begun", WAIT_S)
    until(lambda: handle.state is JobState.RUNNING, "its start recorded while it runs", 2.0)
    job = store.read_job(handle.id)
    assert job is not None and job.attempts == 1 and job.started_at is not None
    handle.wait(timeout_s=WAIT_S)


class Begun:
    """The jobs whose body began, as each body notes it first."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._ids: set[int] = set()

    def note(self) -> None:
        job = current_job()
        assert job is not None
        with self._lock:
            self._ids.add(job.job_id)

    def ids(self) -> set[int]:
        with self._lock:
            return set(self._ids)


def test_in_the_node_s_own_process_every_start_is_recorded_first(store: Store) -> None:
    """A task there that killed its process would kill the node: a job begun unrecorded would go
    back as if it had never run, and kill node after node without ever being charged. (Tiny
    jobs start there as they are claimed, ahead of a free thread.)"""
    begun = Begun()
    app = App()
    app.use_store(store)

    @app.task(name="tiny", retries=0)
    def tiny(x: int) -> int:
        begun.note()
        time.sleep(0.002)
        return x

    node = Node(app, store, NodeConfig(name="inline", **FAST)).start()  # type: ignore[arg-type]
    try:
        tiny.submit(0).wait(timeout_s=30)
        handles = tiny.submit_many([(i,) for i in range(JOBS)])
        while not all(h.state is JobState.SUCCEEDED for h in handles[-5:]):
            ran = begun.ids()  # read before the datastore: each had begun by then
            claimed = store.list_jobs(JobFilter(state=JobState.CLAIMED), limit=JOBS)
            early = [j.id for j in claimed if j.id in ran]
            assert early == [], f"jobs {early} began before their start was recorded"
        assert [h.wait(timeout_s=30) for h in handles] == list(range(JOBS))
    finally:
        node.request_stop(grace_s=0.0)
        node.stop()
