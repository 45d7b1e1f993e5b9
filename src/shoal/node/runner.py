"""Running one attempt of a task, wherever it runs (a worker thread or a pool process).

This is the one place that catches every exception a task raises: the error and its traceback
become the attempt's recorded outcome. The result must be JSON under the size cap; a result that
is not is a failure of the attempt, never a lost job.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from shoal.app import App, encode_json
from shoal.context import JobContext, job_context
from shoal.errors import ShoalError
from shoal.model import Job, Outcome


class JobTimeout(ShoalError):
    """Raised inside a task that ran past its time limit."""


@dataclass(frozen=True)
class Work:
    """What a worker needs to run one attempt (picklable, for pool processes)."""

    job_id: int
    attempt: int
    task: str
    args_json: str
    kwargs_json: str
    timeout_s: float | None

    @classmethod
    def of(cls, job: Job, default_timeout_s: float | None = None) -> Work:
        """The work for a claimed job; the task's own time limit applies when the job has none."""
        timeout_s = job.timeout_s if job.timeout_s is not None else default_timeout_s
        return cls(job.id, job.attempts, job.task, job.args_json, job.kwargs_json, timeout_s)


@dataclass(frozen=True)
class ProgressEvent:
    job_id: int
    attempt: int
    fraction: float
    message: str | None


@dataclass(frozen=True)
class Finished:
    """The end of an attempt as the worker saw it. `final` failures are never retried."""

    job_id: int
    attempt: int
    ok: bool
    result_json: str | None = None
    error: str | None = None
    traceback: str | None = None
    final: bool = False
    duration_s: float = 0.0


def execute(app: App, work: Work, report: Callable[[ProgressEvent], None]) -> Finished:
    task = app.tasks.get(work.task)
    if task is None:
        known = ", ".join(sorted(app.tasks)) or "none"
        return Finished(
            work.job_id,
            work.attempt,
            False,
            error=f"unknown task {work.task!r}: this node registers {known}",
            final=True,
        )

    def send(fraction: float, message: str | None) -> None:
        report(ProgressEvent(work.job_id, work.attempt, fraction, message))

    started = time.perf_counter()
    try:
        args = json.loads(work.args_json) if work.args_json != "[]" else []
        kwargs = json.loads(work.kwargs_json) if work.kwargs_json != "{}" else {}
        with job_context(JobContext(work.job_id, work.attempt, send)):
            if task.is_async:
                value = asyncio.run(_run_async(task.fn, args, kwargs, work.timeout_s))
            else:
                value = task.fn(*args, **kwargs)
    except BaseException as exc:  # the one broad catch: the attempt's outcome records it
        if isinstance(exc, TimeoutError | JobTimeout):
            error = f"timed out after {work.timeout_s}s"
        else:
            error = f"{type(exc).__name__}: {exc}"
        return Finished(
            work.job_id,
            work.attempt,
            False,
            error=error,
            traceback=traceback.format_exc(),
            duration_s=time.perf_counter() - started,
        )
    try:
        result = (
            "null" if value is None else encode_json(value, "the result", app.max_payload_bytes)
        )
    except ShoalError as exc:
        return Finished(work.job_id, work.attempt, False, error=str(exc), final=True)
    return Finished(
        work.job_id,
        work.attempt,
        True,
        result_json=result,
        duration_s=time.perf_counter() - started,
    )


async def _run_async(
    fn: Callable[..., Any], args: list[Any], kwargs: dict[str, Any], timeout_s: float | None
) -> Any:
    return await asyncio.wait_for(fn(*args, **kwargs), timeout_s)


def outcome_for(
    finished: Finished, max_attempts: int, backoff_s: float, max_backoff_s: float
) -> Outcome:
    """Turn a worker's report into the outcome to record: success, retry later, or failed."""
    if finished.ok:
        return Outcome(finished.job_id, finished.attempt, True, result_json=finished.result_json)
    retry_in_s = None
    if not finished.final and finished.attempt < max_attempts:
        # Exponential backoff with jitter, so a burst of failures does not retry in lockstep.
        retry_in_s = min(max_backoff_s, backoff_s * 2 ** (finished.attempt - 1))
        retry_in_s *= random.uniform(0.8, 1.2)
    return Outcome(
        finished.job_id,
        finished.attempt,
        False,
        error=storable_text(finished.error),
        traceback=storable_text(finished.traceback),
        retry_in_s=retry_in_s,
    )


def storable_text(text: str | None) -> str | None:
    """`text` as every datastore can keep it: NUL characters and lone surrogates (an exception
    message may hold either) are written out as escapes instead of failing the write."""
    if text is None:
        return None
    return text.replace("\x00", "\\x00").encode("utf-8", "backslashreplace").decode("utf-8")
