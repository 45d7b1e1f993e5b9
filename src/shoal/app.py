"""The submitter's side: an App holds a task registry and a datastore, and hands out job handles.

`@app.task` registers a plain or `async def` function under a name. Submitting validates
everything before anything is written: the task must be registered, arguments must be JSON and
under the size cap together, delays and time limits finite, retries at most MAX_RETRIES.
`build_job` is that check, shared with `shoal submit`. Jobs of one `submit_many` call go in one
transaction, all or none. A task's options also say which exceptions are retried and how long
its finished jobs are kept; the node reads them from the registry.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import json
import math
import os
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, overload

from shoal.errors import (
    ConfigError,
    JobFailed,
    NotFound,
    PayloadError,
    ShoalError,
    SubmitError,
    UnknownTask,
    WaitTimeout,
)
from shoal.model import Job, JobState, NewJob
from shoal.store import Store, open_store, resolve_url, rules
from shoal.store.rules import Retention

DEFAULT_MAX_PAYLOAD_BYTES = 1_000_000
DEFAULT_RETRIES = 3
DEFAULT_BACKOFF_S = 1.0
# A job that failed a thousand times is failing for good; the cap also keeps attempt counts far
# from the datastores' 64-bit integer limit, which a typo such as --retries 10**20 would pass.
MAX_RETRIES = 1000
WAIT_STEP_S = 5.0  # an awaited result is re-read at least this often, whatever it waits on


def encode_json(value: Any, what: str, max_bytes: int) -> str:
    """JSON text for `value`; PayloadError if it is not JSON or is larger than `max_bytes`."""
    return encode_json_sized(value, what, max_bytes)[0]


def encode_json_sized(value: Any, what: str, max_bytes: int) -> tuple[str, int]:
    """`encode_json`, with the size of the text in bytes."""
    if not value and isinstance(value, list | dict):
        return ("[]", 2) if isinstance(value, list) else ("{}", 2)
    try:
        text = json.dumps(value, allow_nan=False, separators=(",", ":"), ensure_ascii=False)
        size = len(text.encode())
    except RecursionError:
        raise PayloadError(
            f"{what} are nested too deeply to encode as JSON; flatten the structure"
        ) from None
    except UnicodeEncodeError as exc:
        raise PayloadError(
            f"{what} hold a string that is not valid Unicode ({exc.reason}); decode bytes "
            "before passing them, or pass them as base64 text"
        ) from exc
    except (TypeError, ValueError) as exc:
        raise PayloadError(
            f"{what} must be JSON (str, int, float, bool, None, list, dict): {exc}"
        ) from exc
    if size > max_bytes:
        raise PayloadError(
            f"{what} are {size} bytes of JSON, over the {max_bytes}-byte cap; store large data "
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
) -> NewJob:
    """A job checked as every submitter checks it; raises SubmitError before anything is written.

    `what` names the arguments and keyword arguments in messages (`--args`, `--kwargs` on the
    command line). The size cap applies to both together. Raises SubmitError for a task name that
    is not valid Unicode (non-UTF-8 bytes), a delay or time limit that is negative or not finite,
    and retries outside 0..MAX_RETRIES; PayloadError for arguments that are not JSON or too large.
    """
    check_text(task, "the task name")
    check_schedule(retries, timeout_s, delay_s)
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
    )


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

    def __post_init__(self) -> None:
        """ValueError for a retry_on that is not exception classes, or a negative or NaN age."""
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

    def retention(self, default: Retention) -> Retention:
        """`default` with this task's own ages in place of its."""
        return dataclasses.replace(
            default,
            succeeded_s=_or(self.keep_succeeded_s, default.succeeded_s),
            failed_s=_or(self.keep_failed_s, default.failed_s),
            cancelled_s=_or(self.keep_cancelled_s, default.cancelled_s),
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
    ) -> NewJob:
        """A validated job for these arguments; raises SubmitError before anything is written.

        `retries` and `timeout_s` override the task's own for this job (`shoal submit --app`).
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
        )

    def submit(self, *args: Any, **kwargs: Any) -> JobHandle:
        """Queue one job and return its handle."""
        [job_id] = self.app.store.submit_jobs([self.new_job(args, kwargs)])
        return JobHandle(self.app.store, job_id)

    def submit_later(self, delay_s: float, *args: Any, **kwargs: Any) -> JobHandle:
        """Queue one job that no node starts before `delay_s` seconds have passed."""
        [job_id] = self.app.store.submit_jobs([self.new_job(args, kwargs, delay_s)])
        return JobHandle(self.app.store, job_id)

    def submit_many(self, items: Iterable[Sequence[Any] | Mapping[str, Any]]) -> list[JobHandle]:
        """Queue many jobs in one transaction. Each item is a tuple or list of positional
        arguments or a dict of keyword arguments. All are validated first: one bad item
        rejects the whole batch and nothing is written."""
        ids = self.app.store.submit_jobs(self.jobs_of(items))
        return [JobHandle(self.app.store, i) for i in ids]

    # The same for asyncio code: each awaits its commit without blocking the event loop (no
    # thread per call: see `Store.async_jobs`). Opening the store, on the app's first use, is
    # the one blocking step.

    async def asubmit(self, *args: Any, **kwargs: Any) -> JobHandle:
        """`submit`, awaited."""
        return (await self._asubmit([self.new_job(args, kwargs)]))[0]

    async def asubmit_later(self, delay_s: float, *args: Any, **kwargs: Any) -> JobHandle:
        """`submit_later`, awaited."""
        return (await self._asubmit([self.new_job(args, kwargs, delay_s)]))[0]

    async def asubmit_many(
        self, items: Iterable[Sequence[Any] | Mapping[str, Any]]
    ) -> list[JobHandle]:
        """`submit_many`, awaited: one transaction, all or none."""
        return await self._asubmit(self.jobs_of(items))

    async def _asubmit(self, jobs: Sequence[NewJob]) -> list[JobHandle]:
        store = self.app.store
        ids = await store.async_jobs().submit_jobs(jobs)
        return [JobHandle(store, i) for i in ids]

    def jobs_of(self, items: Iterable[Sequence[Any] | Mapping[str, Any]]) -> list[NewJob]:
        """The validated jobs of `submit_many`'s items; PayloadError naming the first bad one."""
        jobs = []
        for index, item in enumerate(items):
            try:
                if isinstance(item, Mapping):
                    jobs.append(self.new_job((), item))
                elif isinstance(item, (list, tuple)):
                    jobs.append(self.new_job(item, {}))
                else:
                    raise PayloadError(
                        f"expected a tuple of arguments or a dict of keyword arguments, "
                        f"got {type(item).__name__}"
                    )
            except PayloadError as exc:
                raise PayloadError(f"item {index} of the batch: {exc}") from None
        return jobs


@dataclass(frozen=True)
class Progress:
    fraction: float
    message: str | None


class JobHandle:
    """A job by id. Every property reads the datastore afresh."""

    def __init__(self, store: Store, job_id: int) -> None:
        self.store = store
        self.id = job_id

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

    def wait(self, timeout_s: float | None = None) -> Any:
        """Block until the job ends; return its result.

        Raises JobFailed (with the error and traceback) if it failed or was cancelled, and
        WaitTimeout if `timeout_s` passes first (the job itself goes on).
        """
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
        self.max_payload_bytes = max_payload_bytes
        self.retention = Retention() if retention is None else retention
        self.tasks: dict[str, Task] = {}
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
    ) -> Task | Callable[[Callable[..., Any]], Task]:
        """Register a function as a task: `@app.task` or `@app.task(name=..., retries=...)`.

        The name defaults to the function's name. `retries` is how many times a failed attempt is
        retried, with exponential backoff from `backoff_s` capped at `max_backoff_s` (default:
        the node's `max_backoff_s`); `retry_on` limits retries to these exception types (and
        their subclasses), others fail at once. `timeout_s` stops an attempt that runs longer.
        `keep_*_s` override the app's retention for this task's finished jobs (`math.inf`: for
        ever). Raises ValueError if the name is already registered, for retries outside
        0..MAX_RETRIES, a time limit that is not a finite number above 0, a `retry_on` that is
        not exception classes, and a negative delay or age.
        """

        def register(f: Callable[..., Any]) -> Task:
            classes = (retry_on,) if isinstance(retry_on, type) else retry_on
            options = TaskOptions(
                name or f.__name__,
                retries,
                timeout_s,
                backoff_s,
                None if classes is None else tuple(classes),
                max_backoff_s,
                keep_succeeded_s,
                keep_failed_s,
                keep_cancelled_s,
            )
            try:
                check_schedule(retries, timeout_s, 0.0)
            except SubmitError as exc:
                raise ValueError(str(exc)) from None
            if options.name in self.tasks:
                raise ValueError(f"a task named {options.name!r} is already registered")
            task = Task(self, f, options)
            self.tasks[options.name] = task
            return task

        return register(fn) if fn is not None else register

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
        """A handle for an existing job; raises NotFound if there is none with this id."""
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
