"""The asyncio side of the SQLite store: one shared thread for the file, one shared poller.

`sqlite3` only blocks: a commit waits for the disk, a write for the file's lock. Run in the
event loop, that would stall every coroutine for milliseconds; a thread per call (or
`asyncio.to_thread`, a pool of them) would have each call commit alone. So each store has one
thread, `FileThread`, that runs every async call on its file: a coroutine queues its call and
awaits a future the thread resolves. Submits queued together are written as one transaction,
the group commit of `batcher` for coroutines, each call still all or none.

Waiting for results: nodes on SQLite send no finish notification a submitter could hear, so one
poller per event loop reads every awaited job in one pass of the thread, every POLL_S while any
is awaited, and wakes the waiters of those that ended: a few indexed reads per tick whatever the
number of waiters, and nothing at all while none waits.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import queue
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from shoal.model import Job, NewJob
from shoal.store.loops import forget_waiter
from shoal.store.port import AsyncJobs

POLL_S = 0.01  # how often awaited jobs are read while any is awaited


@dataclass
class _Call:
    run: Callable[[], Any] | None  # None: a submit, written with the others queued
    jobs: Sequence[NewJob]
    future: asyncio.Future[Any]
    loop: asyncio.AbstractEventLoop


class FileThread:
    """The one thread that runs a store's async calls; started on first use, a daemon."""

    def __init__(self, submit: Callable[[Sequence[NewJob]], list[int]]) -> None:
        self._submit = submit
        self._todo: queue.SimpleQueue[_Call | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def call(self, run: Callable[[], Any]) -> asyncio.Future[Any]:
        return self._queue(run, ())

    def submit(self, jobs: Sequence[NewJob]) -> asyncio.Future[Any]:
        return self._queue(None, jobs)

    def _queue(self, run: Callable[[], Any] | None, jobs: Sequence[NewJob]) -> asyncio.Future[Any]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._work, name="shoal-sqlite-async", daemon=True
                )
                self._thread.start()
        self._todo.put(_Call(run, jobs, future, loop))
        return future

    def _work(self) -> None:
        while (first := self._todo.get()) is not None:
            calls = [first]
            with contextlib.suppress(queue.Empty):
                while True:
                    more = self._todo.get_nowait()
                    if more is None:
                        self._todo.put(None)  # stop once these are done
                        break
                    calls.append(more)
            submits = [c for c in calls if c.run is None]
            if submits:
                self._write_submits(submits)
            for call in calls:
                if call.run is not None:
                    _settle(call, call.run)

    def _write_submits(self, calls: list[_Call]) -> None:
        """All queued submits in one transaction; each caller gets its own ids."""
        try:
            ids = self._submit([job for call in calls for job in call.jobs])
        except BaseException as exc:
            for call in calls:
                _resolve(call, None, exc)
            return
        start = 0
        for call in calls:
            _resolve(call, ids[start : start + len(call.jobs)], None)
            start += len(call.jobs)

    def stop(self) -> None:
        with self._lock:
            if self._thread is not None:
                self._todo.put(None)
                self._thread = None


def _settle(call: _Call, run: Callable[[], Any]) -> None:
    try:
        value = run()
    except BaseException as exc:
        _resolve(call, None, exc)
    else:
        _resolve(call, value, None)


def _resolve(call: _Call, value: Any, error: BaseException | None) -> None:
    def settle() -> None:
        if call.future.done():
            return  # its caller gave up waiting (cancelled)
        if error is not None:
            call.future.set_exception(error)
        else:
            call.future.set_result(value)

    with contextlib.suppress(RuntimeError):  # the loop has closed: nobody waits any more
        call.loop.call_soon_threadsafe(settle)


class SqliteAsyncJobs(AsyncJobs):
    """Submits, reads and result waits of one event loop, through the store's FileThread."""

    def __init__(self, thread: FileThread, read_job: Callable[[int], Job | None]) -> None:
        self._thread = thread
        self._read_job = read_job
        self._waiters: dict[int, set[asyncio.Event]] = {}
        self._poller: asyncio.Task[None] | None = None

    async def submit_jobs(self, jobs: Sequence[NewJob]) -> list[int]:
        if not jobs:
            return []
        ids: list[int] = await self._thread.submit(jobs)
        return ids

    async def read_job(self, job_id: int) -> Job | None:
        job: Job | None = await self._thread.call(lambda: self._read_job(job_id))
        return job

    async def wait_for_end(self, job_id: int, timeout_s: float) -> None:
        event = asyncio.Event()
        self._waiters.setdefault(job_id, set()).add(event)
        if self._poller is None or self._poller.done():
            self._poller = asyncio.get_running_loop().create_task(self._poll())
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(event.wait(), timeout_s)
        finally:
            forget_waiter(self._waiters, job_id, event)

    async def _poll(self) -> None:
        """While any job is awaited: read them all in one pass, wake those that ended."""
        while self._waiters:
            ids = list(self._waiters)
            try:
                ended = await self._thread.call(functools.partial(self._ended, ids))
            except Exception:
                ended = ids  # the datastore is in trouble: let the waiters meet it themselves
            for job_id in ended:
                for event in self._waiters.get(job_id, ()):
                    event.set()
            await asyncio.sleep(POLL_S)

    def _ended(self, ids: list[int]) -> list[int]:
        """Those of `ids` that reached a final state or do not exist (on the file thread)."""
        ended = []
        for job_id in ids:
            job = self._read_job(job_id)
            if job is None or job.state.is_final:
                ended.append(job_id)
        return ended

    async def aclose(self) -> None:
        if self._poller is not None:
            self._poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._poller
            self._poller = None
