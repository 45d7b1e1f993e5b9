"""Every error Shoal raises, in one tree under `ShoalError`.

Adapters turn driver errors (sqlite3, psycopg) into these before they escape, so callers catch
`ShoalError` and never a driver's exception. Each message says what was wrong and what to do.
"""

from __future__ import annotations


class ShoalError(Exception):
    """The root of every error Shoal raises on purpose."""


class ConfigError(ShoalError):
    """A setting is malformed: a datastore URL, an `--app` reference, an option value."""


class AppNotLoadable(ConfigError):
    """A node's worker process could not load the app by its 'module:attribute' reference."""


class ScheduleError(ConfigError):
    """A periodic schedule is malformed: its cron expression, time zone, interval or arguments."""


class TaskDeclarationError(ConfigError, ValueError):
    """`@app.task` was given an option it cannot take (a ValueError too, as it always was)."""


class DatastoreUnavailable(ShoalError):
    """The datastore cannot be reached or refused the connection."""


class SchemaError(ShoalError):
    """The datastore has no Shoal schema, or one of another version."""


class SubmitError(ShoalError):
    """A job was refused at submit time; nothing was written."""


class UnknownTask(SubmitError):
    """No registered task has this name."""


class PayloadError(SubmitError):
    """Arguments or results that are not JSON, or that exceed the size cap."""


class NotFound(ShoalError):
    """No job or node with this id or name."""


class NodeNameTaken(ShoalError):
    """A live node already has this name."""


class IllegalTransition(ShoalError):
    """A node state change that the state machine does not allow."""


class JobFailed(ShoalError):
    """`wait()` on a job that ended failed or cancelled; carries the recorded error."""

    def __init__(self, job_id: int, state: str, error: str | None, traceback: str | None) -> None:
        self.job_id = job_id
        self.state = state
        self.error = error
        self.traceback = traceback
        super().__init__(f"job {job_id} {state}: {error or 'no error recorded'}")


class WaitTimeout(ShoalError, TimeoutError):
    """`wait()` gave up before the job finished; the job itself goes on."""


class Retry(ShoalError):
    """Raised by a task to ask for another attempt after `in_s` seconds.

    The attempt counts: past the job's last attempt it ends failed, saying so. `in_s` must be a
    finite number of seconds, 0 or more (ValueError otherwise, raised where the task raises).
    """

    def __init__(self, in_s: float = 0.0, reason: str = "") -> None:
        if not (isinstance(in_s, int | float) and 0 <= in_s < float("inf")):
            raise ValueError(f"Retry(in_s=...) takes a finite number of seconds >= 0, not {in_s!r}")
        self.in_s = float(in_s)
        self.reason = reason
        said = f": {reason}" if reason else ""
        super().__init__(f"the task asked to be retried in {self.in_s:g}s{said}")


class Cancelled(ShoalError):
    """Raised by a task that stops because its job was asked to cancel (`shoal.cancelled()`).

    The job then ends `cancelled`, never retried. Raised without a cancel request, it is an
    error like any other. A task that outlasts its cancel grace on a worker thread gets it raised
    inside it as its thread is abandoned.
    """

    def __init__(self, reason: str = "") -> None:
        self.reason = reason
        said = f": {reason}" if reason else ""
        super().__init__(f"the task stopped on a cancel request{said}")
