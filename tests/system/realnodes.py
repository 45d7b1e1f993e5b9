"""Real `shoal` processes against a real datastore, and the polling helpers the tests share."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import shoal as shoal_package

HERE = Path(__file__).parent
T = TypeVar("T")


def child_env() -> dict[str, str]:
    """The environment of a spawned `shoal`: systasks.py importable, and the very `shoal` code
    this test process imported (a worktree's, say, rather than an installed copy), ahead of the
    inherited PYTHONPATH."""
    code = Path(shoal_package.__file__).parents[1]
    inherited = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    path = dict.fromkeys([str(HERE), str(code), *inherited])  # in order, without repeats
    return {**os.environ, "PYTHONPATH": os.pathsep.join(path)}


def shoal(
    *args: str, check: bool = False, timeout_s: float = 60
) -> subprocess.CompletedProcess[str]:
    """Run the `shoal` CLI as a user would, from the directory holding systasks.py."""
    return subprocess.run(
        [sys.executable, "-m", "shoal", *args],
        cwd=HERE,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=check,
        env=child_env(),
    )


def until(condition: Callable[[], T], timeout_s: float = 30.0, what: str = "condition") -> T:
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        time.sleep(0.05)


def freeze_outside_a_write(process: subprocess.Popen[bytes], url: str) -> float:
    """SIGSTOP `process` at a moment it holds no SQLite write lock; when it froze (wall time).

    One file, one writer at a time: a node frozen inside a write transaction holds the lock, and
    no other node can write (declare it dead included) until it wakes. Here the frozen node must
    not be doing that, so a freeze that caught it holding the lock is undone and tried again.
    """
    path = url.removeprefix("sqlite:///")
    for _ in range(50):
        frozen_at = time.time()
        process.send_signal(signal.SIGSTOP)
        probe = sqlite3.connect(path, timeout=0.2, isolation_level=None)
        try:
            probe.execute("BEGIN IMMEDIATE")
            probe.execute("ROLLBACK")
            return frozen_at
        except sqlite3.OperationalError:
            process.send_signal(signal.SIGCONT)
            time.sleep(0.05)
        finally:
            probe.close()
    raise AssertionError("the node held the SQLite write lock at every one of 50 freezes")


@dataclass
class Cluster:
    url: str
    log_dir: Path
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    started: list[subprocess.Popen[bytes]] = field(default_factory=list)  # all, for clean-up

    def start(
        self, name: str, *extra: str, lease_s: float = 2.0, app: str = "systasks:app"
    ) -> subprocess.Popen[bytes]:
        log = open(self.log_dir / f"{name}.log", "ab")  # noqa: SIM115 - closed with the process
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "shoal",
                "node",
                "--app",
                app,
                "--db",
                self.url,
                "--name",
                name,
                "--lease-s",
                str(lease_s),
                *extra,
            ],
            cwd=HERE,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=child_env(),
        )
        self.processes[name] = process
        self.started.append(process)
        return process

    def log(self, name: str) -> str:
        return (self.log_dir / f"{name}.log").read_text()

    def stop_all(self) -> None:
        for process in self.started:
            if process.poll() is None:
                process.send_signal(signal.SIGCONT)
                process.send_signal(signal.SIGKILL)
                process.wait(timeout=10)
