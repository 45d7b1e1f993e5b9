"""Real nodes on PostgreSQL riding out the datastore going away: a server restart (fast and
immediate) and every connection terminated, mid-run. Afterwards no job is lost and none has two
recorded outcomes.

These restart the local PostgreSQL server, so they run only against 127.0.0.1 with
`pg_ctlcluster` present (the CI machine); elsewhere they skip with a loud reason.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from test_cluster import (
    all_final,
    assert_each_recorded_once,
    assert_sections_partition_everything,
    submit,
    wait_live,
)

from shoal.model import JobState
from shoal.store import Store, open_store

from pgutil import ADMIN_URL, fresh_pg_database, pg_available
from realnodes import Cluster, until

pytestmark = pytest.mark.postgres

if not pg_available():  # with CI=true pg_available raises instead: CI never skips these
    pytest.skip(
        "!!! PostgreSQL is not reachable on 127.0.0.1:5432: PostgreSQL tests SKIPPED",
        allow_module_level=True,
    )

LEASE_S = "10"  # longer than a restart takes, so live nodes are not declared dead by it


def restart_postgres(mode: str) -> None:
    versions = sorted(p.name for p in Path("/etc/postgresql").iterdir())
    if not versions or shutil.which("pg_ctlcluster") is None:
        pytest.skip("!!! pg_ctlcluster not found: cannot restart PostgreSQL here")
    subprocess.run(
        ["pg_ctlcluster", "--skip-systemctl-redirect", versions[-1], "main", "restart", "-m", mode],
        check=True,
        capture_output=True,
        timeout=120,
    )


def terminate_shoal_connections(dbname: str) -> int:
    with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s"
            " AND application_name = 'shoal'",
            (dbname,),
        ).fetchall()
    return len(rows)


@pytest.fixture
def pg_cluster(tmp_path: Path) -> Iterator[Cluster]:
    with fresh_pg_database() as url:
        store = open_store(url)
        store.initialize()
        store.close()
        cluster = Cluster(url, tmp_path)
        try:
            yield cluster
        finally:
            cluster.stop_all()


def succeeded(store: Store) -> int:
    return store.read_cluster().job_counts.get(JobState.SUCCEEDED, 0)


def start_two_nodes_with_work(cluster: Cluster) -> tuple[Store, list[int]]:
    store = open_store(cluster.url)
    for name in ("a", "b"):
        cluster.start(name, "--concurrency", "4", lease_s=float(LEASE_S))
    wait_live(store, {"a", "b"})
    ids = submit(store, 1500, 0.02)
    until(lambda: succeeded(store) >= 50, what="work under way")
    return store, ids


def finish_and_check(cluster: Cluster, store: Store, ids: list[int]) -> None:
    more = submit(store, 100, 0.0)  # submitted after the outage, through a reconnected store
    until(lambda: all_final(store, ids + more), timeout_s=180, what="all jobs final")
    assert_each_recorded_once(store, ids + more)
    assert_sections_partition_everything(store)
    assert all(p.poll() is None for p in cluster.processes.values()), "a node exited"


@pytest.mark.parametrize("mode", ["fast", "immediate"])
def test_nodes_ride_out_a_postgres_restart(pg_cluster: Cluster, mode: str) -> None:
    store, ids = start_two_nodes_with_work(pg_cluster)
    restart_postgres(mode)
    assert not all_final(store, ids), "the restart came too late to test anything"
    finish_and_check(pg_cluster, store, ids)
    assert "retrying" in pg_cluster.log("a") + pg_cluster.log("b")


def test_nodes_ride_out_terminated_connections(pg_cluster: Cluster) -> None:
    store, ids = start_two_nodes_with_work(pg_cluster)
    dbname = pg_cluster.url.rsplit("/", 1)[1]
    for _ in range(3):
        done = succeeded(store)
        assert terminate_shoal_connections(dbname) > 0
        until(lambda d=done: succeeded(store) > d + 20, what="progress after terminating")
    finish_and_check(pg_cluster, store, ids)
