"""Real `shoal node` processes and the datastores they share, for the fault suite; all bounded.

A datastore is a fresh SQLite file or a throwaway PostgreSQL server built from the PostgreSQL
binaries on a free port (never the shared server on 5432), so the suite may restart it or kill
its connections. Nodes are child processes logging to their own files; every one the suite
starts is remembered, so none outlives it, and one that exits when the suite did not stop it is
counted as an unexpected exit. Every wait has a deadline.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import chaostasks
import psycopg

import shoal as shoal_package
from shoal.store import Store, open_store

HERE = Path(__file__).parent
PG_BIN = Path(os.environ.get("SHOAL_TEST_PG_BIN", "/usr/lib/postgresql/15/bin"))
AS_ROOT = os.geteuid() == 0
STEP_TIMEOUT_S = 20  # deadline of every server command
T = TypeVar("T")


class FaultSuiteError(Exception):
    """The suite itself could not go on (a server would not start, a wait ran out)."""


def until(check: Callable[[], T | None], timeout_s: float, what: str, every_s: float = 0.1) -> T:
    """Poll `check` until it returns something truthy; FaultSuiteError after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise FaultSuiteError(f"timed out after {timeout_s:.0f}s waiting for {what}")
        time.sleep(every_s)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pg(tool: str, *args: str) -> None:
    """Run a PostgreSQL binary as the server's OS user (the server refuses root)."""
    command = [str(PG_BIN / tool), *args]
    if AS_ROOT:
        command = ["runuser", "-u", "postgres", "--", *command]
    done = subprocess.run(command, capture_output=True, text=True, timeout=STEP_TIMEOUT_S)
    if done.returncode != 0:
        raise FaultSuiteError(f"{tool} failed: {done.stdout}{done.stderr}")


@dataclass
class PgServer:
    """A throwaway server in its own directory, with a database `shoal`."""

    data: Path
    port: int

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/shoal"

    def sql(self, statement: str) -> list[tuple[object, ...]]:
        admin = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        with psycopg.connect(admin, autocommit=True, connect_timeout=5) as conn:
            cur = conn.execute(statement)
            return cur.fetchall() if cur.description else []

    def ctl(self, *args: str) -> None:
        pg("pg_ctl", *args, "-w", "-t", str(STEP_TIMEOUT_S), "-D", str(self.data))

    def start(self) -> None:
        self.ctl("start", "-l", str(self.data.parent / "server.log"))

    def stop(self, mode: str) -> None:
        self.ctl("stop", "-m", mode)

    def restart(self, mode: str) -> None:
        """Stop in `mode` (fast: clients told; immediate: a crash, recovered from WAL), start."""
        self.stop(mode)
        self.start()

    def terminate_connections(self) -> int:
        """pg_terminate_backend on every client of `shoal`; how many were terminated."""
        rows = self.sql(
            "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE datname = 'shoal' AND pid <> pg_backend_pid()"
        )
        count = rows[0][0]
        return count if isinstance(count, int) else 0


def start_pg_server(root: Path) -> PgServer:
    if not (PG_BIN / "pg_ctl").exists():
        raise FaultSuiteError(f"PostgreSQL binaries not found in {PG_BIN} (set SHOAL_TEST_PG_BIN)")
    if AS_ROOT:
        shutil.chown(root, "postgres", "postgres")
    server = PgServer(root / "data", free_port())
    pg("initdb", "-D", str(server.data), "-U", "postgres", "--auth=trust", "--no-sync")
    (server.data / "pg_hba.conf").write_text("host all all 127.0.0.1/32 trust\n")
    with (server.data / "postgresql.conf").open("a") as conf:
        conf.write(
            f"listen_addresses = '127.0.0.1'\nport = {server.port}\n"
            f"unix_socket_directories = '{root}'\nfsync = off\nmax_connections = 200\n"
        )
    server.start()
    server.sql("CREATE DATABASE shoal")
    return server


@dataclass
class Datastore:
    """A fresh, initialised datastore: its URL, and the server behind it for PostgreSQL."""

    kind: str
    url: str
    root: Path
    server: PgServer | None = None

    def open(self) -> Store:
        return open_store(self.url)

    def close(self) -> None:
        if self.server is not None and (self.server.data / "postmaster.pid").exists():
            try:
                self.server.stop("immediate")
            except (FaultSuiteError, subprocess.TimeoutExpired) as exc:
                print(f"could not stop the server in {self.server.data}: {exc}")
        shutil.rmtree(self.root, ignore_errors=True)


def new_datastore(kind: str) -> Datastore:
    root = Path(tempfile.mkdtemp(prefix=f"shoal-faults-{kind}-"))
    if kind == "sqlite":
        store = Datastore(kind, f"sqlite:///{root / 'shoal.db'}", root)
    elif kind == "postgres":
        server = start_pg_server(root)
        store = Datastore(kind, server.url, root, server)
    else:
        raise FaultSuiteError(f"unknown datastore {kind!r}: sqlite or postgres")
    opened = store.open()
    try:
        opened.initialize()
    finally:
        opened.close()
    return store


def child_env(side_file: Path) -> dict[str, str]:
    """A node's environment: chaostasks importable, this very `shoal` code first on the path."""
    code = Path(shoal_package.__file__).parents[1]
    inherited = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    path = dict.fromkeys([str(HERE), str(code), *inherited])
    return {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(path),
        chaostasks.SIDE_FILE_ENV: str(side_file),
    }


@dataclass
class NodeProcess:
    name: str
    pool: str
    process: subprocess.Popen[bytes]
    log: Path
    stopped_on_purpose: bool = False


@dataclass(frozen=True)
class UnexpectedExit:
    name: str
    code: int
    log_tail: str


@dataclass
class Nodes:
    """The suite's node processes on one datastore. `reap` finds the ones that died unbidden."""

    url: str
    log_dir: Path
    side_file: Path
    lease_s: float
    concurrency: int = 4
    memory_limit_bytes: int | None = None  # run each node under `prlimit --as`
    running: list[NodeProcess] = field(default_factory=list)
    everyone: list[NodeProcess] = field(default_factory=list)
    exits: list[UnexpectedExit] = field(default_factory=list)
    serial: int = 0

    def start(self, pool: str, name: str | None = None) -> NodeProcess:
        self.serial += 1
        name = name or f"n{self.serial}-{pool}"
        argv = [sys.executable, "-m", "shoal", "node", "--app", "chaostasks:app"]
        argv += ["--db", self.url, "--name", name, "--pool", pool]
        argv += ["--lease-s", str(self.lease_s), "--concurrency", str(self.concurrency)]
        argv += ["--grace-s", "5"]
        if self.memory_limit_bytes is not None:
            argv = ["prlimit", f"--as={self.memory_limit_bytes}", "--", *argv]
        log = self.log_dir / f"node-{self.serial}.log"
        with open(log, "ab") as out:
            # Each node leads a process group of its own, as under a service manager: a task that
            # signals its group must not reach this suite, whatever it does to the node.
            process = subprocess.Popen(
                argv,
                cwd=HERE,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=child_env(self.side_file),
                start_new_session=True,
            )
        node = NodeProcess(name, pool, process, log)
        self.running.append(node)
        self.everyone.append(node)
        return node

    def reap(self) -> list[NodeProcess]:
        """Forget nodes that have exited; those the suite did not stop count as unexpected."""
        gone = [n for n in self.running if n.process.poll() is not None]
        for node in gone:
            self.running.remove(node)
            if not node.stopped_on_purpose:
                code = node.process.returncode
                self.exits.append(UnexpectedExit(node.name, code, tail(node.log)))
        return [n for n in gone if not n.stopped_on_purpose]

    def kill(self, node: NodeProcess) -> None:
        node.stopped_on_purpose = True
        node.process.send_signal(signal.SIGKILL)
        node.process.wait(timeout=10)
        self.running.remove(node)

    def stop_all(self, timeout_s: float = 20.0) -> None:
        """SIGTERM (after SIGCONT) every running node; SIGKILL those still there at the end."""
        self.reap()
        for node in self.running:
            node.stopped_on_purpose = True
            node.process.send_signal(signal.SIGCONT)
            node.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        for node in self.running:
            try:
                node.process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                node.process.kill()
                node.process.wait(10)
        self.running = []

    def kill_everything(self) -> None:
        """The last resort on the way out: no node of this run survives it."""
        for node in self.everyone:
            if node.process.poll() is None:
                node.process.send_signal(signal.SIGCONT)
                node.process.kill()
                node.process.wait(10)


def tail(path: Path, width: int = 160) -> str:
    """The last line of a log, cut to `width`, with control characters escaped."""
    try:
        lines = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return "(no log)"
    last = ascii(lines[-1])[1:-1] if lines else "(empty log)"
    return last if len(last) <= width else last[: width - 1] + "…"
