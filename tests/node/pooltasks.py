"""Tasks for worker-process tests, imported by the pools' worker processes as pooltasks:app."""

from __future__ import annotations

import os
import time

from shoal import App, Cancelled, cancelled, progress
from shoal.context import current_job

app = App()


@app.task
def nap(seconds: float) -> str:
    progress(0.0, str(os.getpid()))  # which worker runs it, for a test to signal
    time.sleep(seconds)
    return "rested"


@app.task
def patient(limit_s: float) -> str:
    """Cooperative: stops when its job is asked to cancel (or gives up after `limit_s`)."""
    progress(0.0, str(os.getpid()))
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        if cancelled():
            raise Cancelled("saw the request")
        time.sleep(0.01)
    return "never asked"


@app.task(cancel_grace_s=0.3)
def stubborn(seconds: float) -> str:
    """Not cooperative: ignores a cancel request, so its worker is stopped after the grace."""
    progress(0.0, str(os.getpid()))
    time.sleep(seconds)
    return "finished anyway"


@app.task(retries=0)
def exit_now(code: int) -> None:
    os._exit(code)


@app.task(retries=0)
def segfault() -> None:
    import ctypes

    ctypes.string_at(0)


@app.task(retries=0)
def noop() -> int:
    return 1


@app.task(retries=0)
def pid() -> int:
    return os.getpid()


@app.task(retries=0)
def relay() -> int:
    """Submits a job from inside a task: it lands in whichever datastore this app uses here."""
    return noop.submit().id


@app.task(retries=0)
def noted(path: str, seconds: float) -> None:
    """Notes in file `path` that its body began (one line: the job id), then sleeps."""
    job = current_job()
    assert job is not None
    with open(path, "a", encoding="utf-8") as f:
        f.write(f"{job.job_id}\n")
    time.sleep(seconds)
