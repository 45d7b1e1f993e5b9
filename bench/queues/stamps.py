"""The side channel every system's task writes to: when its body started and ended.

Each worker process appends fixed-size records (job index, start, end) to a file of its own in
BENCH_STAMPS_DIR, one `os.write` per job on an O_APPEND descriptor, so threads and forked
children never interleave a record and the harness can read while workers write. Times are
CLOCK_MONOTONIC (`time.monotonic()` on Linux), which every process on the host shares, so the
submitter's clock and the task's compare directly. Standard library only: every peer's
virtualenv imports this file.
"""

from __future__ import annotations

import json
import os
import struct
import time
from pathlib import Path

RECORD = struct.Struct("<qdd")  # job index, body start, body end
_open: dict[int, int] = {}  # pid -> descriptor; a forked child opens its own file


def clock() -> float:
    """The clock every side reads: shared by all processes on the host."""
    return time.monotonic()


def echo(index: int) -> int:
    """The benchmark's task body for every system: note start and end, return the argument.
    If BENCH_DURATIONS names a JSON file of seconds by index, the body sleeps that long."""
    started = clock()
    time.sleep(_durations().get(str(index), 0.0))
    _write(index, started, clock())
    return index


def _durations(cache: dict[str, dict[str, float]] = {}) -> dict[str, float]:  # noqa: B006
    path = os.environ.get("BENCH_DURATIONS", "")
    if path not in cache:
        cache[path] = json.loads(Path(path).read_text()) if path else {}
    return cache[path]


def _write(index: int, started: float, ended: float) -> None:
    pid = os.getpid()
    fd = _open.get(pid)
    if fd is None:
        path = os.path.join(os.environ["BENCH_STAMPS_DIR"], f"{pid}.stamps")
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        _open[pid] = fd
    os.write(fd, RECORD.pack(index, started, ended))


def read_stamps(folder: Path) -> dict[int, tuple[float, float]]:
    """Every job index recorded in `folder`, with its first (start, end); a partial record at
    the end of a file that is still being written is left for the next read."""
    found: dict[int, tuple[float, float]] = {}
    for path in folder.glob("*.stamps"):
        data = path.read_bytes()
        whole = len(data) - len(data) % RECORD.size
        for index, started, ended in RECORD.iter_unpack(data[:whole]):
            found.setdefault(index, (started, ended))
    return found
