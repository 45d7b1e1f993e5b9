"""Real `shoal` processes against a real datastore, and the polling helpers the tests share."""

from __future__ import annotations

import os
import signal
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
