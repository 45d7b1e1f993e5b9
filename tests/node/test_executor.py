"""The thread executor on its own: a task blocked in C past its time limit is abandoned with
"timed out after N s", its slot is refilled, and past the cap of abandoned threads the executor
offers no free slot until they return."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from shoal.app import App
from shoal.node.executor import ABANDONED_PER_SLOT, ThreadExecutor
from shoal.node.runner import Finished, Work

from steered import until


@pytest.fixture
def blocked() -> Iterator[threading.Event]:
    event = threading.Event()
    yield event
    event.set()


def test_abandoned_threads_are_capped_and_free_their_slots_when_they_return(
    blocked: threading.Event,
) -> None:
    app = App()

    @app.task(name="stuck")
    def stuck() -> None:
        blocked.wait()  # blocked in C: the JobTimeout raised in this thread cannot land

    executor = ThreadExecutor(app, concurrency=1)
    cap = ABANDONED_PER_SLOT * 1
    reports: list[Finished] = []
    for job_id in range(1, cap + 1):
        assert executor.free_slots() == 1
        executor.submit(Work(job_id, 1, "stuck", "[]", "{}", timeout_s=0.01))
        until(lambda: reports.extend(executor.expire(time.monotonic())) or reports, "a timeout")
        assert [r.error for r in reports] == ["timed out after 0.01s"]
        reports.clear()
    assert executor.abandoned == cap
    assert executor.free_slots(prefetch=10) == 0  # past the cap: claim nothing
    blocked.set()
    until(lambda: executor.abandoned == 0, "the stuck threads to return")
    assert executor.free_slots() == 1
    executor.shutdown()


def test_work_withdrawn_and_handed_over_again_runs_once(blocked: threading.Event) -> None:
    """Work no thread had begun is withdrawn (given back after waiting too long) and the same job
    handed over again, claimed anew: its withdrawn copy, still queued, must not run as well (two
    threads freeing up at once would each take a copy)."""
    app = App()
    runs: list[int] = []

    @app.task(name="hold")
    def hold() -> None:
        blocked.wait()

    @app.task(name="count")
    def count(job_id: int) -> None:
        runs.append(job_id)
        time.sleep(0.2)

    executor = ThreadExecutor(app, concurrency=2)
    try:
        executor.submit(Work(1, 1, "hold", "[]", "{}", None))
        executor.submit(Work(2, 1, "hold", "[]", "{}", None))
        until(lambda: executor.free_slots() == 0 and not executor.unstarted_wait_s(), "busy")
        executor.submit(Work(3, 1, "count", "[3]", "{}", None))
        assert executor.take_unstarted() == [3]
        executor.submit(Work(3, 1, "count", "[3]", "{}", None))  # claimed again
        blocked.set()
        until(lambda: runs, "job 3 to run")
        time.sleep(0.4)  # a second copy, if any, has had its time
        assert runs == [3]
    finally:
        executor.shutdown()


def test_the_unstarted_wait_is_that_of_the_oldest_attempt_no_worker_has_started() -> None:
    """Asked every turn with a thousand jobs prefetched, it walks only to the first unstarted
    one: which must be the oldest, a job handed over again included (it waits anew)."""
    app = App()
    blocked = threading.Event()

    @app.task(name="hold")
    def hold() -> None:
        blocked.wait()

    executor = ThreadExecutor(app, concurrency=1)
    try:
        assert executor.unstarted_wait_s() == 0.0
        executor.submit(Work(1, 1, "hold", "[]", "{}", None))
        until(lambda: executor.free_slots() == 0 and not executor.unstarted_wait_s(), "busy")
        executor.submit(Work(2, 1, "hold", "[]", "{}", None))
        time.sleep(0.3)
        executor.submit(Work(3, 1, "hold", "[]", "{}", None))
        assert executor.unstarted_wait_s() >= 0.3  # job 2's wait, not job 3's
        assert sorted(executor.take_unstarted()) == [2, 3]
        executor.submit(Work(3, 1, "hold", "[]", "{}", None))  # handed over again
        assert executor.unstarted_wait_s() < 0.3
    finally:
        blocked.set()
        executor.shutdown()
