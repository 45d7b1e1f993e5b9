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
