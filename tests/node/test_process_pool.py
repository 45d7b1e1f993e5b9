"""The process pool on its own: what it does with its workers while the node stops."""

from __future__ import annotations

import multiprocessing
import os
import signal
from collections.abc import Iterator

import pytest

from shoal.node.procpool import ProcessExecutor
from shoal.node.runner import Finished, ProgressEvent, Work

from steered import until


@pytest.fixture
def pool() -> Iterator[ProcessExecutor]:
    executor = ProcessExecutor("pooltasks:app", 2)
    yield executor
    executor.shutdown()


def nap(job_id: int, seconds: float) -> Work:
    return Work(job_id, 1, "nap", f"[{seconds}]", "{}", None)


def workers() -> list[multiprocessing.process.BaseProcess]:
    return [p for p in multiprocessing.active_children() if p.name == "shoal-worker"]


def worker_pid(pool: ProcessExecutor) -> int:
    """The process running the nap just submitted (it reports its pid)."""
    while True:
        event = pool.events.get(timeout=30)
        if isinstance(event, ProgressEvent):
            return int(event.message or "")


def next_finished(pool: ProcessExecutor) -> Finished:
    while True:
        event = pool.events.get(timeout=30)
        if isinstance(event, Finished):
            return event


def test_a_stopping_pool_does_not_replace_a_worker_that_died(pool: ProcessExecutor) -> None:
    until(lambda: len(workers()) == 2, "two workers")
    pool.submit(nap(1, 30.0))
    assert pool.take_unstarted() == []  # the node begins to stop
    os.kill(worker_pid(pool), signal.SIGKILL)
    finished = next_finished(pool)
    assert not finished.ok and "killed by signal 9 (SIGKILL)" in (finished.error or "")
    assert len(workers()) == 1  # not replaced while stopping
    assert pool.free_slots() == 2  # the missing worker still counts as a free slot
    pool.submit(nap(2, 0.0))  # work again (a resume): the pool fills up first
    assert next_finished(pool).ok
    assert len(workers()) == 2


def test_pool_workers_ignore_a_stop_signal_sent_to_the_group(pool: ProcessExecutor) -> None:
    until(lambda: len(workers()) == 2, "two workers")
    pool.submit(nap(1, 0.5))
    worker_pid(pool)
    for process in workers():
        os.kill(process.pid, signal.SIGTERM)  # type: ignore[arg-type]
        os.kill(process.pid, signal.SIGINT)  # type: ignore[arg-type]
    assert next_finished(pool).ok
    assert len(workers()) == 2
