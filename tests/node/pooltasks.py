"""Tasks for worker-process tests, imported by the pools' worker processes as pooltasks:app."""

from __future__ import annotations

import os
import time

from shoal import App, progress

app = App()


@app.task
def nap(seconds: float) -> str:
    progress(0.0, str(os.getpid()))  # which worker runs it, for a test to signal
    time.sleep(seconds)
    return "rested"


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
