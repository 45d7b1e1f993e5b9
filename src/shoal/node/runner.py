"""Running one attempt of a task, wherever it runs (a worker thread or a pool process).

This is the one place that catches every exception a task raises: the error and its traceback
become the attempt's recorded outcome. The result must be JSON under the size cap; a result that
is not is a failure of the attempt, never a lost job. Nothing a task hands back can make this
code raise instead: an exception whose message cannot be read, a result nested too deeply to
encode, a progress message the datastore could not hold each end as text someone can read.
Whether a failed attempt runs again, and when, is one pure decision (`retry_decision`) from the
task's retry options; an attempt whose job was asked to cancel never does (`cancelled_outcome`).
Inside an attempt `shoal.cancelled()` asks the executor's flag; an async task's coroutine is
cancelled at its next await once the flag is up.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
import traceback
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from shoal.app import App, TaskOptions, encode_json
from shoal.context import JobContext, job_context
from shoal.errors import Cancelled, Retry, ShoalError
from shoal.model import Job, JobState, Outcome


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
    # Handed over still claimed, its start not recorded (a tiny job, see `Outcome.ran_s`).
    unrecorded: bool = False

    @classmethod
    def of(cls, job: Job, default_timeout_s: float | None = None) -> Work:
        """The work for a job the node holds; the task's own time limit applies when the job
        has none. A job still `claimed` (its start not recorded yet) runs as its next attempt."""
        timeout_s = job.timeout_s if job.timeout_s is not None else default_timeout_s
        unrecorded = job.state is JobState.CLAIMED
        attempt = job.attempts + 1 if unrecorded else job.attempts
        return cls(job.id, attempt, job.task, job.args_json, job.kwargs_json, timeout_s, unrecorded)


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
    # What the task raised: the qualified names of its exception's classes, most derived first
    # (names, not classes, so a pool process can send them). Empty when the node itself ended
    # the attempt (a time limit enforced from outside, a worker process that died).
    raised: tuple[str, ...] = ()
    retry_in_s: float | None = None  # the task raised Retry(in_s=...)


def _never() -> bool:
    return False


def execute(
    app: App,
    work: Work,
    report: Callable[[ProgressEvent], None],
    is_cancelled: Callable[[], bool] = _never,
) -> Finished:
    """Run one attempt; `is_cancelled` is what `shoal.cancelled()` asks inside it."""
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
        report(ProgressEvent(work.job_id, work.attempt, fraction, progress_text(message)))

    started = time.perf_counter()
    try:
        args = json.loads(work.args_json) if work.args_json != "[]" else []
        kwargs = json.loads(work.kwargs_json) if work.kwargs_json != "{}" else {}
        with job_context(JobContext(work.job_id, work.attempt, send, is_cancelled)):
            if task.is_async:
                call = task.fn(*args, **kwargs)
                value = asyncio.run(_run_async(call, work.timeout_s, is_cancelled))
            else:
                value = task.fn(*args, **kwargs)
    except BaseException as exc:  # the one broad catch: the attempt's outcome records it
        if isinstance(exc, TimeoutError | JobTimeout):
            error = timed_out(work.timeout_s)
        elif isinstance(exc, Cancelled):
            error = str(exc)  # "the task stopped on a cancel request": its class says no more
        elif isinstance(exc, asyncio.CancelledError) and is_cancelled():
            error = COROUTINE_CANCELLED
        else:
            error = describe(exc)
        return Finished(
            work.job_id,
            work.attempt,
            False,
            error=error,
            traceback=_format_traceback(exc),
            duration_s=time.perf_counter() - started,
            raised=exception_names(exc),
            retry_in_s=exc.in_s if isinstance(exc, Retry) else None,
        )
    return _encoded(app, work, value, time.perf_counter() - started)


def _encoded(app: App, work: Work, value: Any, duration_s: float) -> Finished:
    """The attempt's success with its result as JSON, or a final failure saying why it is not."""
    try:
        cap = app.max_payload_bytes
        result = "null" if value is None else encode_json(value, "the result", cap, single=True)
    except ShoalError as exc:
        error = str(exc)
    except BaseException as exc:  # e.g. a __str__ or a default encoder hook that raises
        error = f"the result could not be encoded as JSON: {describe(exc)}"
    else:
        return Finished(work.job_id, work.attempt, True, result_json=result, duration_s=duration_s)
    return Finished(
        work.job_id, work.attempt, False, error=error, final=True, duration_s=duration_s
    )


def timed_out(timeout_s: float | None) -> str:
    """The error of an attempt stopped at its time limit."""
    return f"timed out after {timeout_s}s"


# The ends of attempts asked to cancel that the node itself brought about; the datastore records
# each after "cancelled while running: ".
NOT_STARTED = "no worker had started it yet"


def not_stopped(grace_s: float, what: str) -> str:
    """The error of an attempt that outlasted its cancel grace and was stopped (`what`)."""
    return f"the task did not stop within {grace_s:g}s of the request; {what}"


def describe(exc: BaseException) -> str:
    """`Type: message` for an exception, even one whose `__str__` raises or never returns text."""
    name = type(exc).__name__
    try:
        return f"{name}: {exc}"
    except BaseException as inner:  # the message itself is hostile: say so instead
        return f"{name} (its message could not be read: {type(inner).__name__})"


def _format_traceback(exc: BaseException) -> str | None:
    try:
        return "".join(traceback.format_exception(exc))
    except BaseException:  # a frame or message that cannot be formatted: the error still stands
        return None


# A progress message is for people watching a job: this much is plenty, and bounds what a
# task can make the node write a few times a second.
MAX_PROGRESS_MESSAGE = 500


def progress_text(message: str | None) -> str | None:
    """A progress message as the datastore will keep it: escaped as error texts are, capped."""
    if message is None:
        return None
    return storable_text(message[:MAX_PROGRESS_MESSAGE])


# How often an async task's event loop looks whether its job was asked to cancel.
CANCEL_POLL_S = 0.05
COROUTINE_CANCELLED = "the task stopped on a cancel request (its coroutine was cancelled)"


async def _run_async(
    call: Coroutine[Any, Any, Any], timeout_s: float | None, is_cancelled: Callable[[], bool]
) -> Any:
    """Await the task's coroutine under its time limit. Once its job is asked to cancel, the
    coroutine is cancelled as asyncio code expects: CancelledError at its next await."""
    main = asyncio.ensure_future(asyncio.wait_for(call, timeout_s))
    while not main.done():
        if is_cancelled():
            main.cancel()
            break
        await asyncio.wait({main}, timeout=CANCEL_POLL_S)
    return await main


def type_name(cls: type) -> str:
    """How a retry policy and a finished attempt name an exception class."""
    return f"{cls.__module__}.{cls.__qualname__}"


def exception_names(exc: BaseException) -> tuple[str, ...]:
    """The names of `exc`'s classes, most derived first. A time limit counts as TimeoutError."""
    names = tuple(type_name(c) for c in type(exc).__mro__ if c is not object)
    if isinstance(exc, JobTimeout):
        names += (type_name(TimeoutError),)
    return names


@dataclass(frozen=True)
class RetryPolicy:
    """A task's retry options, as the node applies them to each failed attempt."""

    backoff_s: float = 0.0  # the first retry's delay; each further one doubles it
    max_backoff_s: float | None = None  # the cap on that delay; None: the node's own
    retry_on: tuple[str, ...] | None = None  # exception names retried; None: every exception

    @classmethod
    def of(cls, options: TaskOptions | None) -> RetryPolicy:
        """The policy of a task's options; a job of a task this node lacks gets the default."""
        if options is None:
            return cls()
        retry_on = options.retry_on
        names = None if retry_on is None else tuple(type_name(c) for c in retry_on)
        return cls(options.backoff_s, options.max_backoff_s, names)


@dataclass(frozen=True)
class RetryDecision:
    retry_in_s: float | None  # None: the job ends failed
    why: str = ""  # appended to the recorded error when it says more than the error does


def retry_decision(
    finished: Finished,
    max_attempts: int,
    policy: RetryPolicy,
    max_backoff_s: float,
    jitter: float = 1.0,
) -> RetryDecision:
    """Whether and when a failed attempt runs again. Pure; `jitter` scales the backoff.

    A final failure (unknown task, a result that is not JSON) never retries. The task's own
    `Retry(in_s=...)` retries after exactly that delay, whatever `retry_on` says. Otherwise an
    exception retries only if one of its classes is in `retry_on` (when given); an attempt the
    node itself ended (raised nothing) always may. Every retry counts the attempt: past
    `max_attempts` the job fails, and for a `Retry` the error says no attempts were left.
    """
    last = finished.attempt >= max_attempts
    if finished.final:
        return RetryDecision(None)
    if finished.retry_in_s is not None:
        if last:
            return RetryDecision(
                None, f"; no attempts left (attempt {finished.attempt} of {max_attempts})"
            )
        return RetryDecision(finished.retry_in_s)
    unlisted = policy.retry_on is not None and not set(finished.raised) & set(policy.retry_on)
    if finished.raised and unlisted:
        return RetryDecision(None)
    if last:
        return RetryDecision(None)
    cap = max_backoff_s if policy.max_backoff_s is None else policy.max_backoff_s
    return RetryDecision(min(cap, policy.backoff_s * 2 ** (finished.attempt - 1) * jitter))


def outcome_for(
    finished: Finished,
    max_attempts: int,
    policy: RetryPolicy,
    max_backoff_s: float,
    ran_s: float | None = None,
) -> Outcome:
    """Turn a worker's report into the outcome to record: success, retry later, or failed.
    `ran_s`: set when the attempt's start was never recorded (see `Outcome.ran_s`)."""
    if finished.ok:
        return Outcome(
            finished.job_id, finished.attempt, True, result_json=finished.result_json, ran_s=ran_s
        )
    # Jitter, so a burst of failures does not retry in lockstep.
    decision = retry_decision(
        finished, max_attempts, policy, max_backoff_s, jitter=random.uniform(0.8, 1.2)
    )
    error = None if finished.error is None else finished.error + decision.why
    return Outcome(
        finished.job_id,
        finished.attempt,
        False,
        error=storable_text(error),
        traceback=storable_text(finished.traceback),
        retry_in_s=decision.retry_in_s,
        ran_s=ran_s,
    )


def cancelled_outcome(finished: Finished, ran_s: float | None = None) -> Outcome:
    """The outcome of an attempt whose job was asked to cancel: never retried, whatever it says.
    The datastore ends the job cancelled (discarding a result)."""
    return Outcome(
        finished.job_id,
        finished.attempt,
        finished.ok,
        error=storable_text(finished.error),
        traceback=storable_text(finished.traceback),
        ran_s=ran_s,
    )


def storable_text(text: str | None) -> str | None:
    """`text` as every datastore can keep it: NUL characters and lone surrogates (an exception
    message may hold either) are written out as escapes instead of failing the write."""
    if text is None:
        return None
    return text.replace("\x00", "\\x00").encode("utf-8", "backslashreplace").decode("utf-8")
