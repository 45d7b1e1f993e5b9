"""Real nodes on PostgreSQL riding out a real failover: the primary dies (`pg_ctl stop -m
immediate`) mid-run and a synchronous standby is promoted. Nodes connect with a multi-host URL
and `target_session_attrs=read-write`, so they find the new primary by themselves. Afterwards no
job is lost, none has two recorded outcomes, and the sections still cover every partition.

The test builds its own throwaway primary and standby from the PostgreSQL binaries (never the
shared server on 5432), on free loopback ports, run as the `postgres` OS user when the test runs
as root. Locally it skips loudly without the binaries; with CI=true it fails instead.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
from test_cluster import (
    all_final,
    assert_each_recorded_once,
    assert_sections_partition_everything,
    live_nodes,
    submit,
    wait_live,
)

from shoal.model import JobState
from shoal.store import Store, open_store

from pgutil import IN_CI
from realnodes import Cluster, shoal, until

pytestmark = pytest.mark.postgres

PG_BIN = Path(os.environ.get("SHOAL_TEST_PG_BIN", "/usr/lib/postgresql/15/bin"))
if not (PG_BIN / "pg_ctl").exists():
    if IN_CI:
        raise RuntimeError(f"PostgreSQL binaries not found in {PG_BIN} and CI=true")
    pytest.skip(
        f"!!! PostgreSQL binaries not found in {PG_BIN} (set SHOAL_TEST_PG_BIN): failover test "
        "SKIPPED",
        allow_module_level=True,
    )

AS_ROOT = os.geteuid() == 0  # initdb and postgres refuse root: run them as `postgres`
STEP_TIMEOUT_S = 20  # deadline of every server command
LEASE_S = 10.0  # longer than the failover takes, so live nodes are not declared dead by it
HBA = """\
host all         all 127.0.0.1/32 trust
host replication all 127.0.0.1/32 trust
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pg(tool: str, *args: str) -> None:
    """Run a PostgreSQL binary as the server's OS user; fail with its output."""
    command = [str(PG_BIN / tool), *args]
    if AS_ROOT:
        command = ["runuser", "-u", "postgres", "--", *command]
    done = subprocess.run(command, capture_output=True, text=True, timeout=STEP_TIMEOUT_S)
    assert done.returncode == 0, f"{tool} failed: {done.stdout}{done.stderr}"


@dataclass
class Server:
    data: Path
    port: int

    @property
    def admin_url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def sql(self, statement: str) -> list[tuple[object, ...]]:
        with psycopg.connect(self.admin_url, autocommit=True, connect_timeout=5) as conn:
            cur = conn.execute(statement)
            return cur.fetchall() if cur.description else []

    def ctl(self, *args: str) -> None:
        """`pg_ctl ACTION ...` on this server, waiting (with a deadline) for it to complete."""
        pg("pg_ctl", *args, "-w", "-t", str(STEP_TIMEOUT_S), "-D", str(self.data))

    def start(self) -> None:
        self.ctl("start", "-l", str(self.data.parent / f"{self.data.name}.log"))

    def stop(self, mode: str = "fast") -> None:
        self.ctl("stop", "-m", mode)

    def is_running(self) -> bool:
        return (self.data / "postmaster.pid").exists()


def make_pair(root: Path) -> tuple[Server, Server]:
    """A primary and a streaming standby under `root`, replicating synchronously."""
    primary = Server(root / "primary", free_port())
    standby = Server(root / "standby", free_port())
    pg("initdb", "-D", str(primary.data), "-U", "postgres", "--auth=trust", "--no-sync")
    (primary.data / "pg_hba.conf").write_text(HBA)
    with (primary.data / "postgresql.conf").open("a") as conf:
        conf.write(
            f"listen_addresses = '127.0.0.1'\nport = {primary.port}\n"
            f"unix_socket_directories = '{root}'\nwal_level = replica\nmax_wal_senders = 4\n"
            "wal_keep_size = '64MB'\nhot_standby = on\n"
        )
    primary.start()
    primary.sql("CREATE DATABASE shoal")
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


def succeeded(store: Store) -> int:
    return store.read_cluster().job_counts.get(JobState.SUCCEEDED, 0)


@pytest.fixture
def pg_pair() -> Iterator[tuple[Server, Server]]:
    root = Path(tempfile.mkdtemp(prefix="shoal-failover-"))
    if AS_ROOT:
        shutil.chown(root, "postgres", "postgres")
    servers = [Server(root / "primary", 0), Server(root / "standby", 0)]
    try:
        servers = list(make_pair(root))
        yield servers[0], servers[1]
    finally:
        for server in servers:
            if server.is_running():
                try:
                    server.stop("immediate")
                except (AssertionError, subprocess.TimeoutExpired) as exc:
                    print(f"could not stop {server.data}: {exc}")
        shutil.rmtree(root, ignore_errors=True)


@pytest.mark.timeout(120)
def test_nodes_follow_a_failover_to_a_promoted_standby(
    pg_pair: tuple[Server, Server], tmp_path: Path
) -> None:
    primary, standby = pg_pair
    url = (
        f"postgresql://postgres@127.0.0.1:{primary.port},127.0.0.1:{standby.port}/shoal"
        "?target_session_attrs=read-write"
    )
    out = shoal("init", "--db", url, timeout_s=STEP_TIMEOUT_S)
    assert out.returncode == 0, out.stderr
    cluster = Cluster(url, tmp_path)
    store = open_store(url)
    try:
        for name in ("a", "b"):
            cluster.start(name, "--concurrency", "4", lease_s=LEASE_S)
        nodes = wait_live(store, {"a", "b"})
        ids = submit(store, 800, 0.02)
        until(lambda: succeeded(store) >= 50, what="work under way")

        primary.stop("immediate")
        failed_over_at = time.monotonic()
        # Promote only once both nodes are retrying, so that they also meet the standby while it
        # is still read-only (libpq must refuse it under target_session_attrs=read-write).
        until(
            lambda: all("retrying" in cluster.log(name) for name in ("a", "b")),
            timeout_s=10,
            what="both nodes noticing the primary is gone",
        )
        standby.ctl("promote")
        assert succeeded(store) < len(ids), "the failover came too late to test anything"

        more = submit(store, 100, 0.0)  # through the store's connections to the new primary
        until(lambda: all_final(store, ids + more), timeout_s=40, what="all jobs final")
        print(f"all jobs final {time.monotonic() - failed_over_at:.1f}s after the failover")
        assert_each_recorded_once(store, ids + more)
        assert_sections_partition_everything(store)
        assert all(p.poll() is None for p in cluster.processes.values()), "a node exited"
        assert live_nodes(store) == nodes, "a node was declared dead during the failover"
    finally:
        cluster.stop_all()
        store.close()
