"""Group commit for submits: threads of one process that submit at the same time share a commit.

A commit costs a disk sync (milliseconds), and a datastore writes one transaction at a time per
row it counts in (SQLite: one at a time per file), so submitters on many threads that each commit
alone queue behind each other's syncs. Here a submit queues its jobs and then either leads or
waits. The leader writes every call queued so far as one transaction (one statement, one commit),
gives each caller its own ids, passes the lead to the first call that queued while it wrote, and
returns. A lone submitter leads at once. Threads that submit in a loop come back from a shared
write together: the first back leads, and waits (at most GATHER_S, about a millisecond) for the
others of the write before, so that they share one commit again rather than two.

Durability and atomicity are those of one call alone: a caller returns only once the transaction
holding its jobs has committed, and a transaction that fails fails every call in it with nothing
written for any, so each call is still all or none. `AsyncSubmitBatcher` does the same for the
coroutines of one event loop: the first to submit writes what is queued while the others await.
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from shoal.model import NewJob

# At most this many jobs go in one shared transaction; a call with more goes alone, since it
# already fills a commit (`submit_many` is the bulk path).
MAX_SHARED_JOBS = 500
# Callers that come straight back: a leader whose previous transaction held the calls of k
# threads, and ended at most COMEBACK_S ago, waits up to GATHER_S for k calls to queue before it
# writes. Threads that submit in a loop otherwise split into a lone leader and the rest (1, k,
# 1, k...: two commits where one would do). A lone submitter, or one whose last transaction
# was its alone, never waits.
COMEBACK_S = 0.001
GATHER_S = 0.001

T = TypeVar("T")  # what a write returns for each job (its id, or what it became)


@dataclass
class _Call(Generic[T]):
    jobs: Sequence[NewJob]
    done: threading.Event = field(default_factory=threading.Event)
    ids: list[T] | None = None
    error: BaseException | None = None
    lead: bool = False  # handed the lead: this call's thread writes the next transaction

    def outcome(self) -> list[T]:
        if self.error is not None:
            raise self.error
        assert self.ids is not None
        return self.ids


class SubmitBatcher(Generic[T]):
    """Shares commits between concurrent `submit` calls. `write` inserts jobs in one transaction
    and returns, in order, what each became (its id, or a `Submitted`)."""

    def __init__(self, write: Callable[[Sequence[NewJob]], list[T]]) -> None:
        self._write = write
        self._lock = threading.Lock()
        self._queued = threading.Condition(self._lock)
        self._queue: deque[_Call[T]] = deque()
        self._leading = False
        self._last_calls = 0  # calls in the latest transaction
        self._last_end = -math.inf  # when it ended (monotonic)

    def submit(self, jobs: Sequence[NewJob]) -> list[T]:
        """The ids of `jobs`, once the transaction holding them has committed; raises what
        writing that transaction raised."""
        if len(jobs) >= MAX_SHARED_JOBS:
            return self._write(jobs)
        call: _Call[T] = _Call(jobs)
        with self._lock:
            self._queue.append(call)
            if not self._leading:
                self._leading = call.lead = True
            else:
                self._queued.notify()
        if not call.lead:
            call.done.wait()
        if call.lead:
            self._lead()
        return call.outcome()

    def _lead(self) -> None:
        """Write the queued calls (this leader's own first) as one transaction, then hand over."""
        with self._lock:
            self._gather()
            batch = [self._queue.popleft()]
            size = len(batch[0].jobs)
            while self._queue and size + len(self._queue[0].jobs) <= MAX_SHARED_JOBS:
                size += len(self._queue[0].jobs)
                batch.append(self._queue.popleft())
        try:
            ids = self._write([job for call in batch for job in call.jobs])
        except BaseException as exc:
            for index, call in enumerate(batch):
                call.error = exc if index == 0 else _copy(exc)
        else:
            start = 0
            for call in batch:
                call.ids = ids[start : start + len(call.jobs)]
                start += len(call.jobs)
        finally:
            self._hand_over(batch)

    def _gather(self) -> None:
        """Wait (holding the lead, not the lock) for the callers of the latest transaction to
        queue again, if they are coming straight back; at most GATHER_S."""
        now = time.monotonic()
        expected = self._last_calls if now - self._last_end <= COMEBACK_S else 1
        until = now + GATHER_S
        while len(self._queue) < expected and (left := until - time.monotonic()) > 0:
            self._queued.wait(left)

    def _hand_over(self, batch: list[_Call[T]]) -> None:
        with self._lock:
            self._last_calls, self._last_end = len(batch), time.monotonic()
            if self._queue:
                following = self._queue[0]
                following.lead = True
                following.done.set()
            else:
                self._leading = False
        for call in batch[1:]:
            call.lead = False
            call.done.set()


def _copy(exc: BaseException) -> BaseException:
    """An exception like `exc` for another thread to raise (each raise writes its own traceback
    into the exception), caused by `exc`; `exc` itself when it cannot be made again."""
    try:
        again = type(exc)(*exc.args)
    except Exception:
        return exc
    again.__cause__ = exc
    return again


class AsyncSubmitBatcher:
    """`SubmitBatcher` for the coroutines of one event loop: while one transaction is being
    written, the submits awaited meanwhile queue, and the next transaction writes them all."""

    def __init__(self, write: Callable[[Sequence[NewJob]], Awaitable[list[int]]]) -> None:
        self._write = write
        self._queue: deque[tuple[Sequence[NewJob], asyncio.Future[list[int]]]] = deque()
        self._leader: asyncio.Task[None] | None = None

    async def submit(self, jobs: Sequence[NewJob]) -> list[int]:
        if len(jobs) >= MAX_SHARED_JOBS:
            return await self._write(jobs)
        future: asyncio.Future[list[int]] = asyncio.get_running_loop().create_future()
        self._queue.append((jobs, future))
        if self._leader is None or self._leader.done():
            self._leader = asyncio.get_running_loop().create_task(self._lead())
        # Shielded: a caller that stops waiting does not cancel the transaction of the others
        # (its own jobs may be written all the same, as a cancelled blocking call's may be).
        return await asyncio.shield(future)

    async def _lead(self) -> None:
        while self._queue:
            batch = [self._queue.popleft()]
            size = len(batch[0][0])
            while self._queue and size + len(self._queue[0][0]) <= MAX_SHARED_JOBS:
                size += len(self._queue[0][0])
                batch.append(self._queue.popleft())
            try:
                ids = await self._write([job for jobs, _ in batch for job in jobs])
            except Exception as exc:
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            start = 0
            for jobs, future in batch:
                if not future.done():
                    future.set_result(ids[start : start + len(jobs)])
                start += len(jobs)
