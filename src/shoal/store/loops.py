"""One asyncio side of a store per running event loop.

asyncio objects (a psycopg async pool, futures, tasks) belong to the loop that made them, and a
process may run several loops, one after another (`asyncio.run` in a test) or at once (on
threads). A store keeps one `AsyncJobs` per loop here; a loop that ends and is collected takes its
entry with it.
"""

from __future__ import annotations

import asyncio
import threading
import weakref
from collections.abc import Callable
from typing import Generic, TypeVar

from shoal.store.port import AsyncJobs

A = TypeVar("A", bound=AsyncJobs)


class PerLoop(Generic[A]):
    def __init__(self, make: Callable[[], A]) -> None:
        self._make = make
        self._made: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, A] = (
            weakref.WeakKeyDictionary()
        )
        self._lock = threading.Lock()

    def get(self) -> A:
        """The running loop's; RuntimeError outside a running loop."""
        loop = asyncio.get_running_loop()
        with self._lock:
            made = self._made.get(loop)
            if made is None:
                made = self._made[loop] = self._make()
            return made

    async def aclose_current(self) -> None:
        loop = asyncio.get_running_loop()
        with self._lock:
            made = self._made.pop(loop, None)
        if made is not None:
            await made.aclose()


def forget_waiter(
    waiters: dict[int, set[asyncio.Event]], job_id: int, event: asyncio.Event
) -> None:
    """Drop one waiter of a job (`AsyncJobs.wait_for_end`); the job's entry goes with its last."""
    waiting = waiters.get(job_id)
    if waiting is not None:
        waiting.discard(event)
        if not waiting:
            del waiters[job_id]
