"""The submitter's side: an App holds a task registry and a datastore, and hands out job handles.

`@app.task` registers a plain or `async def` function under a name. Submitting validates
everything before anything is written: the task must be registered, arguments must be JSON and
under the size cap together, delays and time limits finite, retries at most MAX_RETRIES.
`build_job` is that check, shared with `shoal submit`. Jobs of one `submit_many` call go in one
transaction, all or none. A task's options also say which exceptions are retried and how long
its finished jobs are kept; the node reads them from the registry. Its cluster-wide limits
(`max_running`, `max_per_s`) travel with the node's registration to the datastore, which
enforces them (`store/limits.py`).
"""

from __future__ import annotations

import dataclasses
import getpass
import importlib
import inspect
import json
import math
import os
import socket
import sys
import time
import unicodedata
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, overload

from shoal.errors import (
    ConfigError,
    JobFailed,
    NotFound,
    PayloadError,
    ScheduleError,
    ShoalError,
    SubmitError,
    TaskDeclarationError,
    UnknownTask,
    WaitTimeout,
)
from shoal.model import CancelResult, Job, JobState, NewJob, ScheduleSpec, TaskLimit
from shoal.schedule import check_timing
from shoal.store import Store, open_store, resolve_url, rules
from shoal.store.limits import MAX_PER_S, MAX_RUNNING
from shoal.store.rules import Retention

DEFAULT_MAX_PAYLOAD_BYTES = 1_000_000
DEFAULT_RETRIES = 3
DEFAULT_BACKOFF_S = 1.0
# How long a task asked to cancel may take to stop on its own before its node stops it: enough
# to finish a step and clean up, short enough that a cancel visibly takes effect.
DEFAULT_CANCEL_GRACE_S = 10.0
# A job that failed a thousand times is failing for good; the cap also keeps attempt counts far
# from the datastores' 64-bit integer limit, which a typo such as --retries 10**20 would pass.
MAX_RETRIES = 1000
# Within a section a node claims the highest priority first, then the oldest job. A small range
# (it fits SQL's smallint, as the PostgreSQL column is) is all an ordering needs: a few levels
# (say -10, 0, 10) read better than a wide scale whose values nobody can compare.
MIN_PRIORITY = -100
MAX_PRIORITY = 100
DEFAULT_PRIORITY = 0
# A key names a piece of work ("invoice-42"), not a payload: keys over this are refused rather
# than stored, and the index on them stays small.
MAX_KEY_CHARS = 200
# Task names are what nodes register and `shoal status` shows: short text anyone can read.
MAX_TASK_NAME_CHARS = 200
# A delay names a time to start, not "never": the longest is a century, which every calendar
# the observer and the command line show can still name.
MAX_DELAY_S = 100 * 366 * 86400.0
MAX_JOB_ID = rules.MAX_JOB_ID
MAX_REQUESTER_CHARS = 200  # who asked for a cancel: a name with a host, or a ticket reference
WAIT_STEP_S = 5.0  # an awaited result is re-read at least this often, whatever it waits on


def encode_json(value: Any, what: str, max_bytes: int, single: bool = False) -> str:
    """JSON text for `value`; PayloadError if it is not JSON or is larger than `max_bytes`.
    `what` names it in messages: plural ("arguments of 'x'"), or one thing when `single`."""
    return encode_json_sized(value, what, max_bytes, single)[0]


def encode_json_sized(
    value: Any, what: str, max_bytes: int, single: bool = False
) -> tuple[str, int]:
    """`encode_json`, with the size of the text in bytes."""
    if not value and isinstance(value, list | dict):
        return ("[]", 2) if isinstance(value, list) else ("{}", 2)
    are, hold, them = ("is", "holds", "it") if single else ("are", "hold", "them")
    try:
        text = json.dumps(value, allow_nan=False, separators=(",", ":"), ensure_ascii=False)
        size = len(text.encode())
    except RecursionError:
        raise PayloadError(
            f"{what} {are} nested too deeply to encode as JSON; flatten the structure"
        ) from None
    except UnicodeEncodeError as exc:
        raise PayloadError(
            f"{what} {hold} a string that is not valid Unicode ({exc.reason}); decode bytes "
            f"before passing {them} on, or pass {them} as base64 text"
        ) from exc
    except (TypeError, ValueError) as exc:
        raise PayloadError(
            f"{what} must be JSON (str, int, float, bool, None, list, dict): {exc}"
        ) from exc
    if size > max_bytes:
        raise PayloadError(
            f"{what} {are} {size} bytes of JSON, over the {max_bytes}-byte cap; store large data "
            "elsewhere (a file, an object store) and pass a reference"
        )
    return text, size


def build_job(
    task: str,
    args: Sequence[Any],
    kwargs: Mapping[str, Any],
    *,
    what: tuple[str, str],
    max_payload_bytes: int,
    retries: int,
    timeout_s: float | None,
    delay_s: float,
    priority: int = DEFAULT_PRIORITY,
    key: str | None = None,
    key_window_s: float = 0.0,
) -> NewJob:
    """A job checked as every submitter checks it; raises SubmitError before anything is written.

    `what` names the arguments and keyword arguments in messages (`--args`, `--kwargs` on the
    command line). The size cap applies to both together. Raises SubmitError for a task name that
    is not valid Unicode (non-UTF-8 bytes), a delay or time limit that is negative or not finite,
    retries outside 0..MAX_RETRIES, a priority outside MIN_PRIORITY..MAX_PRIORITY, and a key
    refused by `check_key`; PayloadError for arguments that are not JSON or too large.
    """
    check_task_name(task)
    check_schedule(retries, timeout_s, delay_s)
    check_priority(priority)
    check_key(key, key_window_s)
    cap = max_payload_bytes
    args_json, args_size = encode_json_sized(list(args), what[0], cap)
    kwargs_json, kwargs_size = encode_json_sized(dict(kwargs), what[1], cap)
    if args_size + kwargs_size > cap:
        raise PayloadError(
            f"{what[0]} and {what[1]} together are {args_size + kwargs_size} bytes of JSON, "
            f"over the {cap}-byte cap"
        )
    return NewJob(
        task=task,
        args_json=args_json,
        kwargs_json=kwargs_json,
        max_attempts=retries + 1,
        timeout_s=timeout_s,
        delay_s=delay_s,
        priority=priority,
        key=key,
        key_window_s=key_window_s,
    )


def check_priority(priority: int) -> None:
    """SubmitError unless `priority` is an integer in MIN_PRIORITY..MAX_PRIORITY."""
    if not isinstance(priority, int) or isinstance(priority, bool):
        raise SubmitError(f"priority must be an integer, not {priority!r}")
    if not MIN_PRIORITY <= priority <= MAX_PRIORITY:
        raise SubmitError(
            f"priority must be between {MIN_PRIORITY} and {MAX_PRIORITY} (higher runs first), "
            f"not {priority}"
        )


def check_key(key: str | None, key_window_s: float) -> None:
    """SubmitError for a key that is not text, empty, longer than MAX_KEY_CHARS, not valid UTF-8
    or holding control characters; for a window that is negative or not finite, or given
    without a key."""
    if not (math.isfinite(key_window_s) and key_window_s >= 0):
        raise SubmitError(
            f"key_window_s must be a finite number of seconds, 0 or more, not {key_window_s}"
        )
    if key is None:
        if key_window_s:
            raise SubmitError("key_window_s needs a key: it is how long a finished job keeps it")
        return
    if not isinstance(key, str) or not key:
        raise SubmitError(f"a key must be non-empty text, not {key!r}")
    check_text(key, "the key")
    if len(key) > MAX_KEY_CHARS:
        raise SubmitError(
            f"a key must be at most {MAX_KEY_CHARS} characters, not {len(key)}; derive a short "
            "one (an id, or a hash of the parts that make the work unique)"
        )
    if any(unicodedata.category(c) == "Cc" for c in key):
        raise SubmitError(f"a key must not hold control characters: {key!r}")


def check_text(text: str, what: str, error: type[ShoalError] = SubmitError) -> None:
    """`error` if `text` holds lone surrogates: what undecodable bytes in argv turn into."""
    try:
        text.encode()
    except UnicodeEncodeError:
        shown = text.encode(errors="backslashreplace").decode()
        raise error(f"{what} '{shown}' is not valid UTF-8 text") from None


def check_schedule(retries: int, timeout_s: float | None, delay_s: float) -> None:
    """SubmitError unless 0 <= retries <= MAX_RETRIES, timeout_s > 0 and delay_s >= 0, finite."""
    if not 0 <= retries <= MAX_RETRIES:
        raise SubmitError(f"retries must be between 0 and {MAX_RETRIES}, not {retries}")
    if timeout_s is not None and not (math.isfinite(timeout_s) and timeout_s > 0):
        raise SubmitError(f"timeout_s must be a finite number of seconds above 0, not {timeout_s}")
    if not (math.isfinite(delay_s) and delay_s >= 0):
        raise SubmitError(f"delay_s must be a finite number of seconds, 0 or more, not {delay_s}")
    if delay_s > MAX_DELAY_S:
        raise SubmitError(
            f"delay_s must be at most {MAX_DELAY_S:.0f} seconds (a century), not {delay_s:g}"
        )


def check_task_name(name: object, error: type[ShoalError] = SubmitError) -> None:
    """`error` for a task name that is not text of 1 to MAX_TASK_NAME_CHARS characters, is not
    valid UTF-8 or holds a NUL (no datastore stores one). Other control characters are data
    like any other: every view, and the node's log, shows them escaped."""
    if not isinstance(name, str) or not name:
        raise error(f"a task name must be non-empty text, not {name!r}")
    check_text(name, "the task name", error)
    if len(name) > MAX_TASK_NAME_CHARS:
        raise error(
            f"a task name must be at most {MAX_TASK_NAME_CHARS} characters, not {len(name)}"
        )
    if "\x00" in name:
        raise error(f"a task name must not hold a NUL character: {name!r}")


def check_requester(by: object) -> None:
    """SubmitError for a cancel's `by` that is not text of 1 to MAX_REQUESTER_CHARS printable
    characters (it is recorded on the job and shown wherever the job is)."""
    if not isinstance(by, str) or not 0 < len(by) <= MAX_REQUESTER_CHARS:
        raise SubmitError(f"by must be text of 1 to {MAX_REQUESTER_CHARS} characters")
    check_text(by, "by")
    if "\x00" in by:
        raise SubmitError(f"by must not hold a NUL character: {by!r}")


@dataclass(frozen=True)
class TaskOptions:
    name: str
    retries: int = DEFAULT_RETRIES
    timeout_s: float | None = None
    backoff_s: float = DEFAULT_BACKOFF_S
    retry_on: tuple[type[BaseException], ...] | None = None  # None: every exception retries
    max_backoff_s: float | None = None  # None: the node's cap
    # How long this task's finished jobs are kept, per state; None: the app's retention.
    keep_succeeded_s: float | None = None
    keep_failed_s: float | None = None
    keep_cancelled_s: float | None = None
    # How long an attempt asked to cancel may run on before its node stops it.
    cancel_grace_s: float = DEFAULT_CANCEL_GRACE_S
    priority: int = DEFAULT_PRIORITY  # of its jobs, unless a submit gives its own
    # Cluster-wide limits, kept by the datastore (see `store/limits.py`); None: no limit.
    max_running: int | None = None
    max_per_s: float | None = None

    def __post_init__(self) -> None:
        """ValueError for a retry_on that is not exception classes, a negative or NaN age, or a
        limit that is not a number above 0 (TaskDeclarationError, a ValueError, for those)."""
        check_limits(self.name, self.max_running, self.max_per_s)
        if self.retry_on is not None and not all(
            isinstance(c, type) and issubclass(c, BaseException) for c in self.retry_on
        ):
            raise ValueError(f"retry_on must be exception classes, not {self.retry_on!r}")
        for what in (
            "backoff_s",
            "max_backoff_s",
            "keep_succeeded_s",
            "keep_failed_s",
            "keep_cancelled_s",
        ):
            value = getattr(self, what)
            if value is not None and not value >= 0:  # NaN fails too
                raise ValueError(f"{what} must be seconds >= 0, not {value}")
        grace_s = self.cancel_grace_s
        if not (isinstance(grace_s, int | float) and 0 <= grace_s < math.inf):
            raise ValueError(f"cancel_grace_s must be finite seconds >= 0, not {grace_s}")

    @property
    def limit(self) -> TaskLimit | None:
        """The task's limits as the datastore keeps them; None if it has none."""
        if self.max_running is None and self.max_per_s is None:
            return None
        rate = None if self.max_per_s is None else float(self.max_per_s)
        return TaskLimit(self.name, self.max_running, rate)

    def retention(self, default: Retention) -> Retention:
        """`default` with this task's own ages in place of its."""
        return dataclasses.replace(
            default,
            succeeded_s=_or(self.keep_succeeded_s, default.succeeded_s),
            failed_s=_or(self.keep_failed_s, default.failed_s),
            cancelled_s=_or(self.keep_cancelled_s, default.cancelled_s),
        )


def check_limits(task: str, max_running: object, max_per_s: object) -> None:
    """TaskDeclarationError unless each limit is None or a number in its range: `max_running`
    a whole number from 1 to MAX_RUNNING, `max_per_s` a finite number above 0, at most
    MAX_PER_S."""
    if max_running is not None and not (
        isinstance(max_running, int)
        and not isinstance(max_running, bool)
        and 1 <= max_running <= MAX_RUNNING
    ):
        raise TaskDeclarationError(
            f"task {task!r}: max_running must be a whole number from 1 to {MAX_RUNNING} "
            f"(how many of its jobs may run at once across the cluster), not {max_running!r}; "
            "leave it out for no limit"
        )
    if max_per_s is not None and not (
        isinstance(max_per_s, int | float)
        and not isinstance(max_per_s, bool)
        and 0 < max_per_s <= MAX_PER_S  # NaN fails too
    ):
        raise TaskDeclarationError(
            f"task {task!r}: max_per_s must be a number of starts per second above 0 and at "
            f"most {MAX_PER_S:g} (0.5 is one start every 2 seconds), not {max_per_s!r}; "
            "leave it out for no limit"
        )


def _or(value: float | None, default: float) -> float:
    return default if value is None else value


class Task:
    """A registered function. Call it to run it here; `submit` to run it on the cluster."""

    def __init__(self, app: App, fn: Callable[..., Any], options: TaskOptions) -> None:
        self.app = app
        self.fn = fn
        self.options = options
        self.is_async = inspect.iscoroutinefunction(fn)
        try:  # worked out once: submitting checks every job's arguments against it
            self.signature: inspect.Signature | None = inspect.signature(fn)
        except (TypeError, ValueError):  # some builtins have none; the node reports bad calls
            self.signature = None
        self.__doc__ = fn.__doc__
        self.__name__ = getattr(fn, "__name__", options.name)

    @property
    def name(self) -> str:
        return self.options.name

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.fn(*args, **kwargs)

    def __repr__(self) -> str:
        return f"<Task {self.name}>"

    def new_job(
        self,
        args: Sequence[Any],
        kwargs: Mapping[str, Any],
        delay_s: float = 0.0,
        *,
        retries: int | None = None,
        timeout_s: float | None = None,
        priority: int | None = None,
        key: str | None = None,
        key_window_s: float = 0.0,
    ) -> NewJob:
        """A validated job for these arguments; raises SubmitError before anything is written.

        `retries`, `timeout_s` and `priority` override the task's own for this job.
        """
        try:
            if self.signature is not None:
                self.signature.bind(*args, **kwargs)
        except TypeError as exc:
            raise PayloadError(f"bad arguments for task {self.name!r}: {exc}") from None
        return build_job(
            self.name,
            args,
            kwargs,
            what=(f"arguments of {self.name!r}", f"keyword arguments of {self.name!r}"),
            max_payload_bytes=self.app.max_payload_bytes,
            retries=self.options.retries if retries is None else retries,
            timeout_s=self.options.timeout_s if timeout_s is None else timeout_s,
            delay_s=delay_s,
            priority=self.options.priority if priority is None else priority,
            key=key,
            key_window_s=key_window_s,
        )

    def submit(self, *args: Any, **kwargs: Any) -> JobHandle:
        """Queue one job and return its handle."""
        return self._submit([self.new_job(args, kwargs)])[0]

    def submit_later(self, delay_s: float, *args: Any, **kwargs: Any) -> JobHandle:
        """Queue one job that no node starts before `delay_s` seconds have passed."""
        return self._submit([self.new_job(args, kwargs, delay_s)])[0]

    def submit_with(
        self,
        args: Sequence[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        *,
        priority: int | None = None,
        key: str | None = None,
        key_window_s: float = 0.0,
        delay_s: float = 0.0,
    ) -> JobHandle:
        """Queue one job with options of its own; return its handle.

        `priority` (MIN_PRIORITY..MAX_PRIORITY, default the task's): within a section, higher
        runs first. `key`: while a job with this key is queued or running, or finished less than
        its `key_window_s` ago, no job is created and the handle is that job's
        (`handle.created` is False); the arguments and options given here are then unused.
        Raises SubmitError (PayloadError for the arguments) before anything is written.
        """
        new = self.new_job(
            args, kwargs or {}, delay_s, priority=priority, key=key, key_window_s=key_window_s
        )
        return self._submit([new])[0]

    def submit_many(
        self,
        items: Iterable[Sequence[Any] | Mapping[str, Any]],
        *,
        priority: int | None = None,
        keys: Sequence[str | None] | None = None,
        key_window_s: float = 0.0,
    ) -> list[JobHandle]:
        """Queue many jobs in one transaction. Each item is a tuple or list of positional
        arguments or a dict of keyword arguments. All are validated first: one bad item
        rejects the whole batch and nothing is written.

        `priority` applies to every job of the batch. `keys`, one per item (None: no key), work
        as in `submit_with`; items of the batch with the same key make one job, and every one
        of their handles points at it (only the first, if any, has `created` True).
        """
        return self._submit(self.jobs_of(items, priority, keys, key_window_s))

    def _submit(self, jobs: Sequence[NewJob]) -> list[JobHandle]:
        return [
            JobHandle(self.app.store, s.job_id, created=s.created)
            for s in self.app.store.submit(jobs)
        ]

    # The same for asyncio code: each awaits its commit without blocking the event loop (no
    # thread per call: see `Store.async_jobs`). Opening the store, on the app's first use, is
    # the one blocking step. Keys are for the blocking calls (`submit_with`, `submit_many`).

    async def asubmit(self, *args: Any, **kwargs: Any) -> JobHandle:
        """`submit`, awaited."""
        return (await self._asubmit([self.new_job(args, kwargs)]))[0]

    async def asubmit_later(self, delay_s: float, *args: Any, **kwargs: Any) -> JobHandle:
        """`submit_later`, awaited."""
        return (await self._asubmit([self.new_job(args, kwargs, delay_s)]))[0]

    async def asubmit_many(
        self, items: Iterable[Sequence[Any] | Mapping[str, Any]], *, priority: int | None = None
    ) -> list[JobHandle]:
        """`submit_many`, awaited: one transaction, all or none."""
        return await self._asubmit(self.jobs_of(items, priority))

    async def _asubmit(self, jobs: Sequence[NewJob]) -> list[JobHandle]:
        store = self.app.store
        ids = await store.async_jobs().submit_jobs(jobs)
        return [JobHandle(store, i, created=True) for i in ids]

    def jobs_of(
        self,
        items: Iterable[Sequence[Any] | Mapping[str, Any]],
        priority: int | None = None,
        keys: Sequence[str | None] | None = None,
        key_window_s: float = 0.0,
    ) -> list[NewJob]:
        """The validated jobs of `submit_many`'s items; SubmitError (PayloadError for the
        arguments) naming the first bad one."""
        items = list(items)
        if priority is not None:
            check_priority(priority)  # once for the batch, not as a fault of its first item
        if keys is not None and len(keys) != len(items):
            raise SubmitError(f"{len(keys)} keys for {len(items)} items: give one key per item")
        jobs = []
        for index, item in enumerate(items):
            key = None if keys is None else keys[index]
            try:
                if isinstance(item, Mapping):
                    args: Sequence[Any] = ()
                    kwargs: Mapping[str, Any] = item
                elif isinstance(item, (list, tuple)):
                    args, kwargs = item, {}
                else:
                    raise PayloadError(
                        f"expected a tuple of arguments or a dict of keyword arguments, "
                        f"got {type(item).__name__}"
                    )
                jobs.append(
                    self.new_job(
                        args, kwargs, priority=priority, key=key, key_window_s=key_window_s
                    )
                )
            except SubmitError as exc:
                raise type(exc)(f"item {index} of the batch: {exc}") from None
        return jobs


@dataclass(frozen=True)
class Progress:
    fraction: float
    message: str | None


class JobHandle:
    """A job by id. Every property reads the datastore afresh.

    `created` says what the submit that returned the handle did: True if it queued a new job,
    False if it found a job already holding its key (and for handles from `App.job`).
    """

    def __init__(self, store: Store, job_id: int, *, created: bool = False) -> None:
        self.store = store
        self.id = job_id
        self.created = created

    def __repr__(self) -> str:
        return f"<JobHandle {self.id}>"

    def refresh(self) -> Job:
        job = self.store.read_job(self.id)
        if job is None:
            raise NotFound(f"no job with id {self.id}")
        return job

    @property
    def state(self) -> JobState:
        return self.refresh().state

    @property
    def progress(self) -> Progress:
        job = self.refresh()
        return Progress(job.progress, job.progress_message)

    @property
    def result(self) -> Any:
        """The result if the job succeeded, else None."""
        job = self.refresh()
        return job.result if job.state is JobState.SUCCEEDED else None

    @property
    def error(self) -> str | None:
        return self.refresh().error

    def cancel(self, by: str | None = None) -> CancelResult:
        """Cancel the job; `by` is recorded as who asked (default: this user and host).

        A queued job ends cancelled at once (CANCELLED). A running one is asked to stop
        (REQUESTED, or ALREADY_REQUESTED): its task sees `shoal.cancelled()` turn True, and the
        job ends cancelled when the attempt ends, or when its node stops it after the task's
        `cancel_grace_s`; never succeeded, never retried. A job that has already ended is left
        as it is (FINISHED). The result is True as a bool when the job was changed. Raises
        NotFound if there is no job with this id.
        """
        if by is not None:
            check_requester(by)
        result = self.store.cancel_job(self.id, by or requester())
        if result is CancelResult.NOT_FOUND:
            raise NotFound(f"no job with id {self.id}")
        return result

    def wait(self, timeout_s: float | None = None) -> Any:
        """Block until the job ends; return its result.

        Raises JobFailed (with the error and traceback) if it failed or was cancelled, and
        WaitTimeout if `timeout_s` passes first (the job itself goes on).
        """
        timeout_s = check_wait(timeout_s)
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        delay = 0.01
        while True:
            job = self.refresh()
            if job.state is JobState.SUCCEEDED:
                return job.result
            if job.state.is_final:
                raise JobFailed(job.id, job.state.value, job.error, job.traceback)
            if deadline is not None and time.monotonic() >= deadline:
                raise WaitTimeout(
                    f"job {self.id} still {job.state.value} after {timeout_s}s "
                    f"(attempt {job.attempts} of {job.max_attempts})"
                )
            pause = delay if deadline is None else min(delay, max(0.0, deadline - time.monotonic()))
            time.sleep(pause)
            delay = min(delay * 1.5, 0.25)

    # -- asyncio ------------------------------------------------------------------------------

    async def arefresh(self) -> Job:
        """`refresh`, awaited."""
        job = None
        if rules.could_be_job_id(self.id):
            job = await self.store.async_jobs().read_job(self.id)
        if job is None:
            raise NotFound(f"no job with id {self.id}")
        return job

    async def await_state(self, timeout_s: float | None = None) -> JobState:
        """Wait, without blocking the event loop, until the job ends; return its final state.

        Raises WaitTimeout if `timeout_s` passes first (the job itself goes on), NotFound if
        there is no such job. On PostgreSQL the end is heard by LISTEN, not polled for.
        """
        return (await self._await_end(timeout_s)).state

    async def aresult(self, timeout_s: float | None = None) -> Any:
        """`wait`, awaited: the result once the job ends; JobFailed if it failed or was
        cancelled, WaitTimeout if `timeout_s` passes first."""
        job = await self._await_end(timeout_s)
        if job.state is JobState.SUCCEEDED:
            return job.result
        raise JobFailed(job.id, job.state.value, job.error, job.traceback)

    async def _await_end(self, timeout_s: float | None) -> Job:
        jobs = self.store.async_jobs()
        timeout_s = check_wait(timeout_s)
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            job = await self.arefresh()
            if job.state.is_final:
                return job
            left = WAIT_STEP_S if deadline is None else deadline - time.monotonic()
            if left <= 0:
                raise WaitTimeout(
                    f"job {self.id} still {job.state.value} after {timeout_s}s "
                    f"(attempt {job.attempts} of {job.max_attempts})"
                )
            await jobs.wait_for_end(self.id, min(left, WAIT_STEP_S))


def check_wait(timeout_s: float | None) -> float | None:
    """A wait's time limit, None for none (math.inf is none too); ValueError for one that is
    not a number of seconds, 0 or more."""
    if timeout_s is not None and not (
        isinstance(timeout_s, int | float) and not isinstance(timeout_s, bool) and timeout_s >= 0
    ):
        raise ValueError(f"timeout_s must be a number of seconds, 0 or more, not {timeout_s!r}")
    return None if timeout_s == math.inf else timeout_s


def requester() -> str:
    """Who asks for a cancel, as the job records it: user@host."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no user name for this uid (a container, say)
        user = f"uid {os.getuid()}"
    return f"{user}@{socket.gethostname()}"


class App:
    """A task registry bound to a datastore.

    The datastore URL comes from `db`, else the SHOAL_DB environment variable, else
    `sqlite:///shoal.db`. The store opens on first use. `retention` is how long finished jobs
    and history are kept for every task without ages of its own; the nodes running this app
    prune by it.
    """

    def __init__(
        self,
        db: str | None = None,
        *,
        max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES,
        retention: Retention | None = None,
    ) -> None:
        self.db_url = resolve_url(db)
        if isinstance(max_payload_bytes, bool) or not (
            isinstance(max_payload_bytes, int) and max_payload_bytes >= 1
        ):
            raise ConfigError(
                f"max_payload_bytes must be a whole number of bytes, 1 or more, not "
                f"{max_payload_bytes!r}"
            )
        self.max_payload_bytes = max_payload_bytes
        self.retention = Retention() if retention is None else retention
        self.tasks: dict[str, Task] = {}
        self.schedules: dict[str, ScheduleSpec] = {}
        self._store: Store | None = None

    @property
    def store(self) -> Store:
        if self._store is None:
            self._store = open_store(self.db_url)
        return self._store

    def use_store(self, store: Store) -> None:
        """Bind the app to an already-open store (the CLI does this for --db)."""
        self._store = store

    def close(self) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None

    async def aclose(self) -> None:
        """Close what the asyncio calls of the running event loop opened (a PostgreSQL async
        pool, its LISTEN connection); call it before the loop ends. The store stays open."""
        if self._store is not None:
            await self._store.aclose_async()

    @overload
    def task(self, fn: Callable[..., Any]) -> Task: ...

    @overload
    def task(
        self,
        *,
        name: str | None = ...,
        retries: int = ...,
        timeout_s: float | None = ...,
        backoff_s: float = ...,
        retry_on: type[BaseException] | tuple[type[BaseException], ...] | None = ...,
        max_backoff_s: float | None = ...,
        keep_succeeded_s: float | None = ...,
        keep_failed_s: float | None = ...,
        keep_cancelled_s: float | None = ...,
        cancel_grace_s: float = ...,
        priority: int = ...,
        schedule: str | float | timedelta | None = ...,
        max_running: int | None = ...,
        max_per_s: float | None = ...,
    ) -> Callable[[Callable[..., Any]], Task]: ...

    def task(
        self,
        fn: Callable[..., Any] | None = None,
        *,
        name: str | None = None,
        retries: int = DEFAULT_RETRIES,
        timeout_s: float | None = None,
        backoff_s: float = DEFAULT_BACKOFF_S,
        retry_on: type[BaseException] | tuple[type[BaseException], ...] | None = None,
        max_backoff_s: float | None = None,
        keep_succeeded_s: float | None = None,
        keep_failed_s: float | None = None,
        keep_cancelled_s: float | None = None,
        cancel_grace_s: float = DEFAULT_CANCEL_GRACE_S,
        priority: int = DEFAULT_PRIORITY,
        schedule: str | float | timedelta | None = None,
        max_running: int | None = None,
        max_per_s: float | None = None,
    ) -> Task | Callable[[Callable[..., Any]], Task]:
        """Register a function as a task: `@app.task` or `@app.task(name=..., retries=...)`.

        The name defaults to the function's name. `retries` is how many times a failed attempt is
        retried, with exponential backoff from `backoff_s` capped at `max_backoff_s` (default:
        the node's `max_backoff_s`); `retry_on` limits retries to these exception types (and
        their subclasses), others fail at once. `timeout_s` stops an attempt that runs longer.
        `keep_*_s` override the app's retention for this task's finished jobs (`math.inf`: for
        ever). `cancel_grace_s` is how long an attempt asked to cancel may run on before its node
        stops it (see `shoal.cancelled`). `priority` (MIN_PRIORITY..MAX_PRIORITY, default 0)
        orders this task's jobs within a section, higher first; `submit_with` and `submit_many`
        can override it per job. `schedule` also runs the task periodically with no arguments:
        a cron expression (in UTC) or an interval (seconds or a timedelta), as
        `app.schedule(task, cron=...)` or `every_s=...`. Raises ValueError if the name is already
        registered, for retries outside 0..MAX_RETRIES, a priority outside its range, a time
        limit that is not a finite number above 0, a `retry_on` that is not exception classes,
        and a negative delay, age or grace; ScheduleError for a malformed `schedule`.
        `max_running` caps how many of its jobs run at once across the cluster, and `max_per_s`
        how many start per second; the datastore enforces both, whatever the number of nodes
        (see the README's "Concurrency and rate limits").

        The errors other than ScheduleError are TaskDeclarationError (a ShoalError and a
        ValueError); a limit that is not a number in its range is one too.
        """

        def register(f: Callable[..., Any]) -> Task:
            classes = (retry_on,) if isinstance(retry_on, type) else retry_on
            try:
                check_task_name(f.__name__ if name is None else name, TaskDeclarationError)
                options = TaskOptions(
                    f.__name__ if name is None else name,
                    retries,
                    timeout_s,
                    backoff_s,
                    None if classes is None else tuple(classes),
                    max_backoff_s,
                    keep_succeeded_s,
                    keep_failed_s,
                    keep_cancelled_s,
                    cancel_grace_s,
                    priority,
                    max_running,
                    max_per_s,
                )
                check_schedule(retries, timeout_s, 0.0)
                check_priority(priority)
            except (SubmitError, ValueError) as exc:
                if isinstance(exc, TaskDeclarationError):
                    raise
                raise TaskDeclarationError(str(exc)) from None
            if options.name in self.tasks:
                raise TaskDeclarationError(f"a task named {options.name!r} is already registered")
            task = Task(self, f, options)
            if schedule is not None:  # checked before the task is registered: all or nothing
                self._check_schedule_name(options.name)
                spec = self._schedule_spec(task, options.name, schedule)
            self.tasks[options.name] = task
            if schedule is not None:
                self.schedules[spec.name] = spec
            return task

        return register(fn) if fn is not None else register

    def schedule(
        self,
        task: Task | str,
        *,
        cron: str | None = None,
        every_s: float | timedelta | None = None,
        args: Sequence[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        tz: str | None = None,
        missed: str = "once",
        name: str | None = None,
    ) -> ScheduleSpec:
        """Run `task` (a registered task or its name) periodically, with these arguments.

        The timing is a cron expression (`cron="*/5 * * * *"`, evaluated in `tz`, an IANA zone,
        UTC by default) or a fixed interval (`every_s=30` or a `timedelta`: every multiple of
        30 s since the epoch). Whichever live node with the task registered sees a tick due
        first submits its job; the datastore records each tick once, so the cluster fires it
        exactly once. A new schedule starts with its next tick. `missed` says what happens to
        ticks that no node could fire in time (the whole cluster was down): `"once"` submits one
        catch-up job for them, `"skip"` none. `name` (default: the task's name) identifies the
        schedule in the datastore; a second schedule of one task needs its own.

        Raises ScheduleError, before anything is declared, for an unknown task, a name already
        used, a cron expression or zone that is malformed, an interval under MIN_EVERY_S, and
        arguments that do not fit the task or are not JSON.
        """
        found = self.tasks.get(task) if isinstance(task, str) else task
        if not isinstance(found, Task) or self.tasks.get(found.name) is not found:
            known = ", ".join(sorted(self.tasks)) or "none"
            raise ScheduleError(
                f"cannot schedule {task!r}: it is not a task of this app (registered: {known}); "
                "register it with @app.task first"
            )
        label = found.name if name is None else name
        self._check_schedule_name(label)
        spec = self._schedule_spec(found, label, (cron, every_s), args, kwargs or {}, tz, missed)
        self.schedules[spec.name] = spec
        return spec

    def _check_schedule_name(self, name: str) -> None:
        if not isinstance(name, str) or not 1 <= len(name) <= 200:
            raise ScheduleError(f"a schedule name must be 1 to 200 characters, not {name!r}")
        check_text(name, "the schedule name", ScheduleError)
        if "\x00" in name:
            raise ScheduleError(f"a schedule name must not hold a NUL character: {name!r}")
        if name in self.schedules:
            raise ScheduleError(
                f"a schedule named {name!r} is already declared; give this one name='...'"
            )

    def _schedule_spec(
        self,
        task: Task,
        name: str,
        timing: str | float | timedelta | tuple[str | None, float | timedelta | None],
        args: Sequence[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        tz: str | None = None,
        missed: str = "once",
    ) -> ScheduleSpec:
        """The checked declaration; `timing` is (cron, every_s), or one of them (`schedule=`)."""
        if isinstance(timing, tuple):
            cron, every_s = timing
        elif isinstance(timing, str):
            cron, every_s = timing, None
        else:
            cron, every_s = None, timing
        if isinstance(every_s, timedelta):
            every_s = every_s.total_seconds()
        zone, policy = check_timing(cron, every_s, tz, missed)
        try:
            job = task.new_job(args, kwargs or {})
        except SubmitError as exc:
            raise ScheduleError(f"schedule {name!r}: {exc}") from None
        every = None if every_s is None else float(every_s)
        return ScheduleSpec(
            name, task.name, cron, every, zone, job.args_json, job.kwargs_json, policy
        )

    def task_limits(self) -> list[TaskLimit]:
        """The limits of every task that declares any, by task name."""
        found = (t.options.limit for _, t in sorted(self.tasks.items()))
        return [limit for limit in found if limit is not None]

    def get_task(self, name: str) -> Task:
        try:
            return self.tasks[name]
        except KeyError:
            known = ", ".join(sorted(self.tasks)) or "none"
            raise UnknownTask(f"unknown task {name!r}; this app registers: {known}") from None

    def submit(self, task_name: str, *args: Any, **kwargs: Any) -> JobHandle:
        """Queue a job of a task by name."""
        return self.get_task(task_name).submit(*args, **kwargs)

    def job(self, job_id: int) -> JobHandle:
        """A handle for an existing job; raises NotFound if there is none with this id, and
        TypeError for an id that is not an int."""
        if isinstance(job_id, bool) or not isinstance(job_id, int):
            raise TypeError(f"a job id is an int, not {type(job_id).__name__} {job_id!r}")
        if not 0 < job_id <= MAX_JOB_ID:
            raise NotFound(f"no job with id {job_id}")
        handle = JobHandle(self.store, job_id)
        handle.refresh()
        return handle


def load_app(spec: str) -> App:
    """Import 'module:attribute' (attribute defaults to 'app') and check it is an App."""
    module_name, _, attr = spec.partition(":")
    attr = attr or "app"
    if not module_name:
        raise ConfigError(f"--app {spec!r}: expected 'module:attribute', e.g. mytasks:app")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:
        raise ConfigError(
            f"cannot import {module_name!r} for --app: {type(exc).__name__}: {exc}. Run from the "
            "directory that holds it, or add that directory to PYTHONPATH."
        ) from None
    app = getattr(module, attr, None)
    if not isinstance(app, App):
        raise ConfigError(f"{module_name}.{attr} is not a shoal.App (got {type(app).__name__})")
    return app
