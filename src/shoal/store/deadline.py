"""How long store operations may keep retrying, set by the caller for the calls on its thread.

Each datastore retries a failing operation for a while of its own: the PostgreSQL connector
through outages for `retry_for_s`, SQLite through locks. A caller with a deadline of its own (a
node leaving within its grace period) runs its calls under a `Deadline`; the retries then give
up at the earlier of the two. The deadline may be brought forward from any thread or a signal
handler, and a retry that is under way sees it at its next attempt.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar


class Deadline:
    """A monotonic time after which store calls stop retrying; none (infinity) at first."""

    def __init__(self) -> None:
        self.at = math.inf

    def bring_forward(self, at: float) -> None:
        self.at = min(self.at, at)


_current: ContextVar[Deadline | None] = ContextVar("shoal_store_deadline", default=None)


def give_up_at() -> float:
    """The monotonic time at which the calling thread's store calls stop retrying."""
    deadline = _current.get()
    return math.inf if deadline is None else deadline.at


@contextmanager
def retrying_until(deadline: Deadline) -> Iterator[None]:
    """Run the store calls of the block under `deadline`."""
    token = _current.set(deadline)
    try:
        yield
    finally:
        _current.reset(token)
