"""Throwaway PostgreSQL servers for the system tests, built from the PostgreSQL binaries on free
ports: a lone server, or a primary with a synchronous streaming standby. Never the shared server
on 5432. When the tests run as root, initdb and the server run as the `postgres` OS user (they
refuse root). A server can be started inside a network namespace, so a test can cut it off.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

from pgutil import IN_CI
from realnodes import until

PG_BIN = Path(os.environ.get("SHOAL_TEST_PG_BIN", "/usr/lib/postgresql/15/bin"))
AS_ROOT = os.geteuid() == 0
STEP_TIMEOUT_S = 20  # deadline of every server command


def require_pg_binaries(what: str) -> None:
    """Skip the calling test module loudly without the binaries; with CI=true, fail instead."""
    if (PG_BIN / "pg_ctl").exists():
        return
    if IN_CI:
        raise RuntimeError(f"PostgreSQL binaries not found in {PG_BIN} and CI=true")
    pytest.skip(
        f"!!! PostgreSQL binaries not found in {PG_BIN} (set SHOAL_TEST_PG_BIN): {what} SKIPPED",
        allow_module_level=True,
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pg(tool: str, *args: str, netns: str | None = None) -> None:
    """Run a PostgreSQL binary as the server's OS user, inside `netns` if given; fail with its
    output."""
    command = [str(PG_BIN / tool), *args]
    if AS_ROOT:
        command = ["runuser", "-u", "postgres", "--", *command]
    if netns is not None:
        command = ["ip", "netns", "exec", netns, *command]
    done = subprocess.run(command, capture_output=True, text=True, timeout=STEP_TIMEOUT_S)
    assert done.returncode == 0, f"{tool} failed: {done.stdout}{done.stderr}"


@dataclass
class Server:
    data: Path
    port: int
    host: str = "127.0.0.1"
    netns: str | None = None  # the network namespace the server runs in, if not the test's

    @property
    def admin_url(self) -> str:
        return f"postgresql://postgres@{self.host}:{self.port}/postgres"

    def url(self, dbname: str = "shoal") -> str:
        return f"postgresql://postgres@{self.host}:{self.port}/{dbname}"

    def sql(self, statement: str) -> list[tuple[object, ...]]:
        with psycopg.connect(self.admin_url, autocommit=True, connect_timeout=5) as conn:
            cur = conn.execute(statement)
            return cur.fetchall() if cur.description else []

    def ctl(self, *args: str) -> None:
        """`pg_ctl ACTION ...` on this server, waiting (with a deadline) for it to complete."""
        pg("pg_ctl", *args, "-w", "-t", str(STEP_TIMEOUT_S), "-D", str(self.data), netns=self.netns)

    def start(self) -> None:
        self.ctl("start", "-l", str(self.data.parent / f"{self.data.name}.log"))

    def stop(self, mode: str = "fast") -> None:
        self.ctl("stop", "-m", mode)

    def is_running(self) -> bool:
        return (self.data / "postmaster.pid").exists()


def init_server(root: Path, name: str, *, clients: str = "127.0.0.1/32", **where: str) -> Server:
    """A new, running server in `root/name` with a database `shoal`, trusting `clients` (CIDR).
    `where` may give the server's `host` address and the `netns` it runs in."""
    server = Server(root / name, free_port(), **where)
    pg("initdb", "-D", str(server.data), "-U", "postgres", "--auth=trust", "--no-sync")
    (server.data / "pg_hba.conf").write_text(
        f"host all all {clients} trust\nhost replication all {clients} trust\n"
    )
    with (server.data / "postgresql.conf").open("a") as conf:
        conf.write(
            f"listen_addresses = '{server.host}'\nport = {server.port}\n"
            f"unix_socket_directories = '{root}'\nwal_level = replica\nmax_wal_senders = 4\n"
            "wal_keep_size = '64MB'\nhot_standby = on\n"
        )
    server.start()
    server.sql("CREATE DATABASE shoal")
    return server


def make_pair(root: Path) -> tuple[Server, Server]:
    """A primary and a streaming standby under `root`, replicating synchronously."""
    primary = init_server(root, "primary")
    standby = Server(root / "standby", free_port())
    # -R writes the standby's primary_conninfo; -C -S keeps the WAL it needs in a slot.
    replicate = f"-h 127.0.0.1 -p {primary.port} -U postgres -R -C -S standby -X stream -c fast"
    pg("pg_basebackup", "-D", str(standby.data), *replicate.split(), "--no-sync")
    with (standby.data / "postgresql.conf").open("a") as conf:
        conf.write(f"port = {standby.port}\n")
    standby.start()
    # Synchronous only once the standby streams (a commit would wait for it before), and set on
    # the primary alone: the promoted standby must not wait for a standby it does not have.
    primary.sql("ALTER SYSTEM SET synchronous_standby_names = '*'")
    primary.sql("SELECT pg_reload_conf()")
    until(
        lambda: primary.sql("SELECT sync_state FROM pg_stat_replication") == [("sync",)],
        timeout_s=STEP_TIMEOUT_S,
        what="the standby streaming synchronously",
    )
    return primary, standby


@contextmanager
def server_root(prefix: str) -> Iterator[Path]:
    """A directory for servers, owned by their OS user; on exit every server still running
    under it is stopped (immediately) and the directory removed."""
    root = Path(tempfile.mkdtemp(prefix=prefix))
    if AS_ROOT:
        shutil.chown(root, "postgres", "postgres")
    try:
        yield root
    finally:
        for pid_file in root.glob("*/postmaster.pid"):
            try:
                Server(pid_file.parent, 0).stop("immediate")
            except (AssertionError, subprocess.TimeoutExpired) as exc:
                print(f"could not stop {pid_file.parent}: {exc}")
        shutil.rmtree(root, ignore_errors=True)
