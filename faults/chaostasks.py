"""The tasks the fault suite's nodes run (`--app chaostasks:app`): steady work and poison.

Every steady task appends a line to a side file before it starts and before it ends, with one
`write` on a file opened O_APPEND, so lines from many processes never interleave. The suite
compares those lines, what the task bodies saw, with what the datastore recorded. The poison
tasks each do one thing a hostile or broken task does to the process that runs it.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import time
from typing import Any

from shoal import App, current_job, progress

app = App()

# Where task bodies record what they saw; set by the suite for every node it starts.
SIDE_FILE_ENV = "SHOAL_FAULTS_SIDE_FILE"
# Names a careful reader's terminal or page must show as text, never obey.
MARKUP_NAME = "<script>alert('x')</script>[bold]"
ESCAPE_NAME = "\x1b[2J\x1b[31mred\x1b[0m\x07"


def note(event: str, **fields: Any) -> None:
    """Append one record of the running job to the side file (nothing outside a job)."""
    ctx = current_job()
    path = os.environ.get(SIDE_FILE_ENV)
    if ctx is None or not path:
        return
    record = {"ev": event, "job": ctx.job_id, "attempt": ctx.attempt, "t": time.time()}
    record.update(pid=os.getpid(), ppid=os.getppid(), **fields)
    line = (json.dumps(record) + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)  # one write of a short line: appended whole, never interleaved
    finally:
        os.close(fd)


@app.task(retries=3, backoff_s=0.1)
def step(sleep_s: float, steps: int = 1, fail_attempts: int = 0) -> dict[str, int]:
    """Sleep in `steps` steps, reporting progress; fail the first `fail_attempts` attempts."""
    note("start")
    for i in range(steps):
        if steps > 1:
            progress((i + 1) / steps, f"step {i + 1} of {steps}")
        time.sleep(sleep_s / steps)
    ctx = current_job()
    attempt = ctx.attempt if ctx else 0
    if attempt <= fail_attempts:
        note("end", ok=False)
        raise RuntimeError(f"failing attempt {attempt} on purpose")
    note("end", ok=True)
    return {"job": ctx.job_id if ctx else 0, "attempt": attempt}


@app.task(retries=0)
def poison_exit() -> None:
    os._exit(1)


@app.task(retries=0)
def poison_segfault() -> None:
    ctypes.string_at(0)


@app.task(retries=0)
def poison_kill_group() -> None:
    os.killpg(0, signal.SIGKILL)  # its process group: the node's too, unless it has its own


@app.task(retries=0)
def poison_memory() -> None:
    """Allocate without bound: the node runs under `prlimit --as`, so this ends in MemoryError."""
    hoard = []
    while True:
        hoard.append(bytearray(32 * 1024 * 1024))


@app.task(retries=0, timeout_s=1.0)
def poison_c_block() -> None:
    """Block inside one C call past the time limit: no Python code runs to be interrupted."""
    ctypes.CDLL(None).sleep(4)


# Progress is written a few times a second: each hostile report is held long enough to be.
PROGRESS_HELD_S = 0.8


@app.task(retries=0)
def poison_progress_nul() -> str:
    progress(0.5, "a\x00b")
    time.sleep(PROGRESS_HELD_S)
    return "reported"


@app.task(retries=0)
def poison_progress_surrogate() -> str:
    progress(0.5, "x\ud800y")
    time.sleep(PROGRESS_HELD_S)
    return "reported"


@app.task(retries=0)
def poison_deep_result() -> list[Any]:
    deep: list[Any] = []
    for _ in range(100_000):
        deep = [deep]
    return deep


@app.task(retries=0)
def poison_nan_result() -> float:
    return float("nan")


@app.task(name=MARKUP_NAME, retries=0)
def markup_named() -> str:
    return "named"


@app.task(name=ESCAPE_NAME, retries=0)
def escape_named() -> str:
    return "named"
