"""Cancelling running jobs on real in-process nodes: a cooperative task stops when it sees
`shoal.cancelled()`; one that does not is stopped after its cancel grace (its worker process
killed, or its worker thread abandoned), and either way the job ends cancelled, never succeeded.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Iterator

import pooltasks
import pytest

import shoal
from conftest import FAST
from shoal.app import App, JobHandle
from shoal.errors import NotFound
from shoal.model import CancelResult, Job, JobState, NewJob
from shoal.node import Node, NodeConfig
from shoal.node.runner import COROUTINE_CANCELLED
from shoal.store.sqlite import SqliteStore
from shoal.store.texts import CANCEL_FINISHED_ANYWAY, CANCELLED_RUNNING

from steered import until

STOPPED = CANCELLED_RUNNING + "the task stopped on a cancel request"


@pytest.fixture
def release() -> Iterator[threading.Event]:
    """Set at the end of each test: lets every task below return, abandoned ones included."""
    event = threading.Event()
    yield event
    event.set()


@pytest.fixture
def cancel_app(sqlite_store: SqliteStore, release: threading.Event) -> App:
    app = App()
    app.use_store(sqlite_store)

    @app.task(retries=3)
    def cooperative() -> str:
        while not release.wait(0.005):
            if shoal.cancelled():
                raise shoal.Cancelled()
        return "released"

    @app.task(retries=3)
    def returns_when_asked() -> str:
        while not shoal.cancelled() and not release.wait(0.005):
            pass
        return "stopped early"

    @app.task(retries=3, cancel_grace_s=0.2)
    def deaf() -> str:
        release.wait()  # blocked in C: an exception raised in its thread waits until it returns
        return "done"

    @app.task(retries=3)
    async def sleepy() -> str:
        await asyncio.sleep(60)
        return "woke"

    @app.task
    def quick() -> int:
        return 7

    return app


@pytest.fixture
def node(cancel_app: App, sqlite_store: SqliteStore) -> Iterator[Node]:
    started = Node(cancel_app, sqlite_store, NodeConfig(name="n", concurrency=1, **FAST)).start()
    yield started
    started.request_stop(grace_s=0.0)
    started.stop()


def started_job(
    store: SqliteStore, task: str, args: str = "[]", node: Node | None = None
) -> JobHandle:
    """A job shown running; on a `node` of threads, also begun by a thread (a start is
    recorded just before the thread takes the job: a cancel between the two withdraws it)."""
    [job_id] = store.submit_jobs([NewJob(task, args, "{}", max_attempts=4)])
    handle = JobHandle(store, job_id)
    until(lambda: handle.state is JobState.RUNNING, f"job {job_id} running")
    if node is not None:
        until(
            lambda: node.loop is not None and job_id in node.loop.executor.begun_for(0.0),
            f"job {job_id} begun by a thread",
        )
    return handle


def ended(handle: JobHandle, timeout_s: float = 5.0) -> Job:
    return until(
        lambda: (job := handle.refresh()).state.is_final and job, "the job to end", timeout_s
    )


def test_a_cooperative_task_stops_and_its_job_ends_cancelled_promptly(
    node: Node, sqlite_store: SqliteStore
) -> None:
    handle = started_job(sqlite_store, "cooperative", node=node)
    asked = time.monotonic()
    assert handle.cancel(by="tester") is CancelResult.REQUESTED
    job = ended(handle)
    assert time.monotonic() - asked < 2.0
    assert job.state is JobState.CANCELLED and job.attempts == 1
    assert job.error == STOPPED and job.cancel_requested_by == "tester"
    assert "Cancelled" in (job.traceback or "")
    assert handle.cancel() is CancelResult.FINISHED  # nothing more to do
    with pytest.raises(shoal.JobFailed, match="cancelled"):
        handle.wait(timeout_s=1)


def test_a_task_that_returns_after_the_request_never_succeeds(
    node: Node, sqlite_store: SqliteStore
) -> None:
    handle = started_job(sqlite_store, "returns_when_asked", node=node)
    assert handle.cancel()
    job = ended(handle)
    assert job.state is JobState.CANCELLED and job.result is None
    assert job.error == CANCELLED_RUNNING + CANCEL_FINISHED_ANYWAY


def test_an_async_task_is_cancelled_at_its_next_await(
    node: Node, sqlite_store: SqliteStore
) -> None:
    handle = started_job(sqlite_store, "sleepy", node=node)
    asked = time.monotonic()
    assert handle.cancel()
    job = ended(handle)
    assert time.monotonic() - asked < 2.0
    assert job.state is JobState.CANCELLED and job.error == CANCELLED_RUNNING + COROUTINE_CANCELLED


def test_a_thread_that_ignores_the_request_is_abandoned_after_its_grace(
    node: Node, sqlite_store: SqliteStore, release: threading.Event
) -> None:
    handle = started_job(sqlite_store, "deaf", node=node)
    asked = time.monotonic()
    assert handle.cancel()
    job = ended(handle)
    assert 0.2 <= time.monotonic() - asked < 3.0
    assert job.state is JobState.CANCELLED and job.attempts == 1
    assert job.error == (
        CANCELLED_RUNNING + "the task did not stop within 0.2s of the request; its worker thread "
        "was abandoned (a thread cannot be killed)"
    )
    assert node.loop is not None
    executor = node.loop.executor
    assert getattr(executor, "abandoned", 0) == 1
    # The slot was replaced: the node goes on running jobs while the abandoned thread lingers.
    [quick] = sqlite_store.submit_jobs([NewJob("quick", "[]", "{}")])
    assert JobHandle(sqlite_store, quick).wait(timeout_s=5) == 7
    release.set()
    until(lambda: getattr(executor, "abandoned", 1) == 0, "the abandoned thread to return")


def test_a_prefetched_job_no_worker_started_is_cancelled_at_once(
    node: Node, sqlite_store: SqliteStore, release: threading.Event
) -> None:
    busy = started_job(sqlite_store, "cooperative", node=node)
    [job_id] = sqlite_store.submit_jobs([NewJob("quick", "[]", "{}")])
    waiting = JobHandle(sqlite_store, job_id)
    # The one worker is busy; whether the node claimed the quick job ahead or not, a cancel
    # ends it cancelled without it ever running.
    assert waiting.cancel()
    job = ended(waiting)
    assert job.state is JobState.CANCELLED and job.result is None
    assert busy.state is JobState.RUNNING
    release.set()
    assert ended(busy).state is JobState.SUCCEEDED


def test_cancel_of_an_unknown_job_raises_not_found(sqlite_store: SqliteStore) -> None:
    with pytest.raises(NotFound, match="no job with id 12345"):
        JobHandle(sqlite_store, 12345).cancel()


def test_a_cancel_grace_must_be_finite_seconds() -> None:
    app = App()
    for bad in (-1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="cancel_grace_s"):
            app.task(name=f"t{bad}", cancel_grace_s=bad)(lambda: None)


# -- the process pool ---------------------------------------------------------------------------


@pytest.fixture
def pool_node(sqlite_store: SqliteStore) -> Iterator[Node]:
    config = NodeConfig(name="p", concurrency=1, pool="process", **FAST)
    started = Node(pooltasks.app, sqlite_store, config, app_spec="pooltasks:app").start()
    yield started
    started.request_stop(grace_s=0.0)
    started.stop()


def worker_pid(handle: JobHandle) -> int:
    """The worker process running the job (the task reports its pid as progress)."""
    return int(until(lambda: handle.refresh().progress_message, "the worker's pid", 30.0))


def is_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_a_cooperative_task_in_a_worker_process_stops_and_keeps_its_worker(
    pool_node: Node, sqlite_store: SqliteStore
) -> None:
    handle = started_job(sqlite_store, "patient", "[60]")
    pid = worker_pid(handle)
    asked = time.monotonic()
    assert handle.cancel()
    job = ended(handle)
    assert time.monotonic() - asked < 2.0
    assert job.state is JobState.CANCELLED
    assert job.error == STOPPED + ": saw the request"
    assert is_alive(pid)  # it stopped by itself: its worker goes on
    again = started_job(sqlite_store, "patient", "[0.5]")  # long enough to report its pid
    assert worker_pid(again) == pid
    assert ended(again).state is JobState.SUCCEEDED


def test_a_worker_process_that_ignores_the_request_is_killed_after_its_grace(
    pool_node: Node, sqlite_store: SqliteStore
) -> None:
    handle = started_job(sqlite_store, "stubborn", "[60]")
    pid = worker_pid(handle)
    asked = time.monotonic()
    assert handle.cancel()
    job = ended(handle)
    assert 0.3 <= time.monotonic() - asked < 3.0
    assert job.state is JobState.CANCELLED and job.attempts == 1
    assert job.error == (
        CANCELLED_RUNNING + "the task did not stop within 0.3s of the request; its worker "
        "process was killed"
    )
    until(lambda: not is_alive(pid), "the killed worker to be gone")
    again = started_job(sqlite_store, "stubborn", "[0.5]")  # long enough to report its pid
    assert worker_pid(again) != pid  # a replacement worker runs it
    assert ended(again, 30.0).state is JobState.SUCCEEDED
