"""A real node on each datastore starts a job the moment it is submitted, and asyncio submitters
get their results without a thread per call.

The node's fallback poll is set far longer than the deadlines here, so a job that starts in time
was started by a wake-up (NOTIFY on PostgreSQL, the doorbell on SQLite), not found by a poll.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest

from shoal import App
from shoal.app import JobHandle
from shoal.errors import JobFailed, NotFound, WaitTimeout
from shoal.model import JobState, NodeState
from shoal.node import Node, NodeConfig
from shoal.store import open_store

SLOW_POLL = {"notified_poll_s": 30.0, "poll_s": 30.0, "lease_s": 120.0, "idle_grace_s": 0.05}


@pytest.fixture
def app(db_url: str) -> Iterator[App]:
    app = App(db_url)

    @app.task(retries=0)
    def add(a: int, b: int) -> int:
        return a + b

    @app.task(retries=0)
    def fail() -> None:
        raise ValueError("no good")

    yield app
    app.close()


@pytest.fixture
def node(app: App, db_url: str) -> Iterator[Node]:
    store = open_store(db_url)
    node = Node(app, store, NodeConfig(name="woken", **SLOW_POLL)).start()  # type: ignore[arg-type]
    deadline = time.monotonic() + 20
    while node.state is not NodeState.WAITING and time.monotonic() < deadline:
        time.sleep(0.01)
    assert node.state is NodeState.WAITING
    yield node
    node.request_stop(grace_s=0)
    node.stop()
    store.close()


def finished_within(app: App, job_id: int, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        job = app.store.read_job(job_id)
        if job is not None and job.state is JobState.SUCCEEDED:
            return True
        time.sleep(0.005)
    return False


def test_an_idle_node_starts_each_submitted_job_at_once(app: App, node: Node) -> None:
    for i in range(5):
        handle = app.submit("add", i, 1)
        assert finished_within(app, handle.id, 5.0), f"job {i} waited for the poll"
        time.sleep(0.1)  # idle again before the next


def test_async_submit_and_result_on_a_running_node(app: App, node: Node) -> None:
    add, fail = app.tasks["add"], app.tasks["fail"]

    async def main() -> tuple[list[int], JobState, str]:
        try:
            handles = await asyncio.gather(*(add.asubmit(i, 10) for i in range(20)))
            results = await asyncio.gather(*(h.aresult(timeout_s=20) for h in handles))
            failing = await fail.asubmit()
            state = await failing.await_state(timeout_s=20)
            with pytest.raises(JobFailed) as failed:
                await failing.aresult(timeout_s=5)
            return results, state, str(failed.value)
        finally:
            await app.aclose()

    results, state, failure = asyncio.run(main())
    assert results == [i + 10 for i in range(20)]
    assert state is JobState.FAILED
    assert "no good" in failure


def test_async_result_times_out_and_a_missing_job_is_not_found(app: App) -> None:
    add = app.tasks["add"]

    async def main() -> None:
        try:
            handle = await add.asubmit(1, 2)  # no node runs: it stays queued
            started = time.monotonic()
            with pytest.raises(WaitTimeout, match="still queued"):
                await handle.aresult(timeout_s=0.3)
            assert time.monotonic() - started < 5
            with pytest.raises(NotFound):
                await JobHandle(app.store, handle.id + 999).arefresh()
            many = await add.asubmit_many([(1, 1), {"a": 2, "b": 2}])
            assert [h.id for h in many] == [handle.id + 1, handle.id + 2]
            later = await add.asubmit_later(60, 3, 3)
            job = await later.arefresh()
            assert job.state is JobState.QUEUED and job.run_after > job.created_at + 50
        finally:
            await app.aclose()

    asyncio.run(main())
