"""Tasks a test steers, for real nodes run in-process.

Every attempt of a steered task waits for the test to say what it does next: report progress,
return a result or raise. So a test can hold a job running for as long as it needs a state, and
end it when it chooses, with no sleeps. `until` polls a condition with a deadline, and a
`StallingStore` freezes a node's heartbeats so that its lease runs out.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

import shoal
from shoal.app import App
from shoal.context import current_job
from shoal.model import Heartbeat, JobState
from shoal.store import Store
from shoal.store.sqlite import SqliteStore

T = TypeVar("T")


def until(condition: Callable[[], T | None], what: str, timeout_s: float = 10.0) -> T:
    """Poll `condition` until it returns something truthy; fail after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        time.sleep(0.005)  # the polling interval of a deadline wait, not a wait in itself


@dataclass(frozen=True)
class Report:
    fraction: float
    message: str | None


@dataclass(frozen=True)
class Return:
    value: Any


@dataclass(frozen=True)
class Raise:
    error: BaseException


Step = Report | Return | Raise


class Steered:
    """The steps each attempt (job id, attempt number) is told to take, in order."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._lock = threading.Lock()
        self._steps: dict[tuple[int, int], queue.SimpleQueue[Step]] = {}
        self._released = False
        self.started: set[tuple[int, int]] = set()

    def app(self, names: Iterable[str]) -> App:
        """An app whose tasks, one per name, all run as steered attempts."""
        app = App()
        app.use_store(self.store)
        for name in names:
            app.task(name=name, retries=0)(self.run)
        return app

    def run(self, *args: Any, **kwargs: Any) -> Any:
        """The body of every steered task: take steps until one ends the attempt."""
        job = current_job()
        assert job is not None, "a steered task runs only on a node"
        key = (job.job_id, job.attempt)
        steps = self._queue(key)
        with self._lock:
            self.started.add(key)
        while True:
            step = steps.get()
            if isinstance(step, Report):
                shoal.progress(step.fraction, step.message)
            elif isinstance(step, Return):
                return step.value
            else:
                raise step.error

    def have_started(self, attempts: Iterable[tuple[int, int]]) -> bool:
        """Whether a worker has begun each (job id, attempt)."""
        with self._lock:
            return self.started.issuperset(attempts)

    def started_jobs(self) -> set[int]:
        """The ids of the jobs a worker has begun an attempt of."""
        with self._lock:
            return {job_id for job_id, _ in self.started}

    def report(self, job_id: int, fraction: float, message: str | None = None) -> None:
        self._send(job_id, Report(fraction, message))

    def succeed(self, job_id: int, value: Any = None) -> None:
        self._send(job_id, Return(value))

    def fail(self, job_id: int, error: BaseException) -> None:
        self._send(job_id, Raise(error))

    def release_all(self) -> None:
        """End every attempt, started or not yet, so that no worker is left waiting."""
        with self._lock:
            self._released = True
            queues = list(self._steps.values())
        for steps in queues:
            steps.put(Return(None))

    def _send(self, job_id: int, step: Step) -> None:
        """Tell the job's current attempt (as the datastore counts them) its next step: a job
        still claimed (a tiny one may run before its start is recorded) runs its next one."""
        job = self.store.read_job(job_id)
        assert job is not None, f"no job {job_id}"
        attempt = job.attempts + 1 if job.state is JobState.CLAIMED else job.attempts
        self._queue((job_id, attempt)).put(step)

    def _queue(self, key: tuple[int, int]) -> queue.SimpleQueue[Step]:
        with self._lock:
            steps = self._steps.get(key)
            if steps is None:
                steps = self._steps[key] = queue.SimpleQueue()
                if self._released:
                    steps.put(Return(None))
            return steps


class StallingStore(SqliteStore):
    """A store whose heartbeats hang while `running` is clear: a node frozen mid-turn, whose
    lease runs out while it holds its jobs. `stall_s` bounds each hang (None: until set)."""

    def __init__(self, path: str, stall_s: float | None = 10.0) -> None:
        super().__init__(path)
        self.stall_s = stall_s
        self.running = threading.Event()
        self.running.set()

    def heartbeat(self, node_id: int, lease_s: float) -> Heartbeat | None:
        self.running.wait(self.stall_s)
        return super().heartbeat(node_id, lease_s)
