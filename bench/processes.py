"""Starting and stopping the benchmark's worker processes, and one-shot commands, all bounded.

Every wait has a deadline: a stuck worker or command becomes an error for that run, never a
hung benchmark. Workers are stopped by SIGTERM and, if they linger, SIGKILL, by their own PIDs.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


class BenchError(Exception):
    """A run could not be completed or verified; the message says why."""


class Workers:
    """A group of long-running processes, each logging to its own file in a fresh folder."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = Path(tempfile.mkdtemp(prefix="run-", dir=log_dir))
        self.procs: list[tuple[subprocess.Popen[bytes], Path]] = []

    def start(self, name: str, argv: Sequence[str], env: dict[str, str], cwd: Path) -> None:
        log_path = self.log_dir / f"{name}.log"
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(
                list(argv), stdout=log, stderr=subprocess.STDOUT, env=env, cwd=cwd
            )
        self.procs.append((proc, log_path))

    @property
    def pids(self) -> list[int]:
        return [proc.pid for proc, _ in self.procs]

    def check_alive(self) -> None:
        """Raise BenchError, with the tail of its log, if any worker has exited."""
        for proc, log_path in self.procs:
            if proc.poll() is not None:
                raise BenchError(
                    f"worker {log_path.stem} exited with code {proc.returncode}: {_tail(log_path)}"
                )

    def all_logged(self, text: str) -> bool | None:
        """True once every worker's log contains `text` (for `wait_for`); None before."""
        self.check_alive()
        logs = [log_path.read_text(errors="replace") for _, log_path in self.procs]
        return True if all(text in log for log in logs) else None

    def stop(self, timeout_s: float = 30.0) -> None:
        for proc, _ in self.procs:
            if proc.poll() is None:
                proc.terminate()
        deadline = time.monotonic() + timeout_s
        for proc, _ in self.procs:
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        self.procs = []


def _tail(path: Path, lines: int = 3) -> str:
    try:
        text = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return "(no log)"
    return " | ".join(text[-lines:]) or "(empty log)"


def wait_for(what: str, check: Callable[[], T | None], timeout_s: float, every_s: float) -> T:
    """Call `check` until it returns something other than None; BenchError after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if value is not None:
            return value
        if time.monotonic() > deadline:
            raise BenchError(f"timed out after {timeout_s:.0f}s waiting for {what}")
        time.sleep(every_s)


def run_json(argv: Sequence[str], env: dict[str, str], cwd: Path, timeout_s: float) -> Any:
    """Run a one-shot command and parse the JSON it prints last; BenchError if it fails."""
    try:
        done = subprocess.run(
            list(argv), capture_output=True, env=env, cwd=cwd, timeout=timeout_s, check=False
        )
    except subprocess.TimeoutExpired:
        raise BenchError(f"{' '.join(argv[-3:])} took over {timeout_s:.0f}s") from None
    if done.returncode != 0:
        last = (done.stderr or done.stdout).decode(errors="replace").strip().splitlines()[-1:]
        raise BenchError(f"{' '.join(argv[-3:])} failed ({done.returncode}): {' '.join(last)}")
    return json.loads(done.stdout.decode().strip().splitlines()[-1])


def describe_failure(exc: Exception) -> str:
    """One line for a failed run; unexpected errors keep their type and origin."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if isinstance(exc, BenchError):
        return text
    where = traceback.extract_tb(exc.__traceback__)[-1]
    return f"{type(exc).__name__}: {text} ({Path(where.filename).name}:{where.lineno})"


def progress(message: str) -> None:
    """A progress line on stderr, so the table on stdout stays clean."""
    print(message, file=sys.stderr, flush=True)
