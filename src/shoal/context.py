"""The running job's context: what `shoal.progress()` reports to and `shoal.cancelled()` asks.

The node sets a context around each task call (in the worker thread, the asyncio task or the pool
process). Outside a job, `progress()` does nothing and `cancelled()` is False, so a task function
can be called directly in tests or scripts.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass


def _never() -> bool:
    return False


@dataclass(frozen=True)
class JobContext:
    job_id: int
    attempt: int
    report: Callable[[float, str | None], None]
    is_cancelled: Callable[[], bool] = _never  # whether the job was asked to cancel


_current: ContextVar[JobContext | None] = ContextVar("shoal_job", default=None)


def current_job() -> JobContext | None:
    """The context of the job running in this thread or task, if any."""
    return _current.get()


def progress(fraction: float, message: str | None = None) -> None:
    """Report how far the running job is, from 0.0 to 1.0, with an optional message.

    Values outside 0..1 are clamped. The node writes progress to the datastore at most a few
    times a second per job, always keeping the latest value. Raises ValueError for a fraction
    that is not a finite number.
    """
    ctx = _current.get()
    value = float(fraction)
    if not math.isfinite(value):
        raise ValueError(f"progress fraction must be a finite number, got {fraction!r}")
    if ctx is not None:
        ctx.report(min(1.0, max(0.0, value)), None if message is None else str(message)[:500])


def cancelled() -> bool:
    """Whether the running job was asked to cancel (`shoal cancel`, `JobHandle.cancel`).

    A task that checks it now and then can stop cleanly: raise `shoal.Cancelled` (or return;
    the job ends cancelled either way, its result discarded). One that does not stop within its
    `cancel_grace_s` is stopped: its worker process is killed, or its worker thread abandoned.
    The node learns of a request within a fraction of a second. False outside a job.
    """
    ctx = _current.get()
    return ctx is not None and ctx.is_cancelled()


@contextmanager
def job_context(ctx: JobContext) -> Iterator[None]:
    token = _current.set(ctx)
    try:
        yield
    finally:
        _current.reset(token)
