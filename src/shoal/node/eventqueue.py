"""The queue a node's loop waits on: workers, wake-ups and stop requests put, one loop takes.

It is a `queue.SimpleQueue` (its put is safe from any thread and from a signal handler) whose
timed `get` cannot hang. CPython's own timed get recomputes its remaining wait after a signal
handler has run, and when the handler outlasted the timeout that remainder is negative, which
its lock takes for "no limit": the get then waits until something is put, which for an idle node
stopping on a signal is never. Here the wait is on a `threading.Lock`, whose timed acquire treats
an expired remainder as a timeout; a put rings it while a get waits.
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from typing import TypeVar

T = TypeVar("T")
# Called directly rather than through super(): a put happens for every finished job.
_put = queue.SimpleQueue.put
_get = queue.SimpleQueue.get


class EventQueue(queue.SimpleQueue[T]):
    """A SimpleQueue with a signal-proof timed get. Any number of producers, one consumer."""

    __slots__ = ("_bell", "_waiting")

    def __init__(self) -> None:
        super().__init__()
        self._bell = threading.Lock()
        self._bell.acquire()  # held: not rung
        self._waiting = False  # a timed get is waiting: a put must ring

    def put(self, item: T, block: bool = True, timeout: float | None = None) -> None:
        """Add `item`; never waits, so it may be called from a signal handler."""
        _put(self, item)
        if self._waiting:
            # Already rung (RuntimeError): the waiter looks at the queue when it wakes anyway.
            with contextlib.suppress(RuntimeError):
                self._bell.release()

    def get(self, block: bool = True, timeout: float | None = None) -> T:
        """The next item; with `timeout`, raise queue.Empty once it has passed, signals or not."""
        if not block or timeout is None:  # no deadline to get wrong
            return _get(self, block, timeout)
        deadline = time.monotonic() + timeout
        self._waiting = True
        try:
            while True:
                try:
                    return _get(self, False)
                except queue.Empty:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise
                self._bell.acquire(timeout=left)
        finally:
            self._waiting = False
