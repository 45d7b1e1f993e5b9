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
    succeeded,
    wait_live,
)

from shoal.model import JobState
from shoal.store import Store, open_store

from pgutil import ADMIN_URL, fresh_pg_database, pg_available
from realnodes import Cluster, until

# Every other test shares this server: `make test` runs these after them, alone.
pytestmark = [pytest.mark.postgres, pytest.mark.restarts_shared_postgres]

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


def test_outcomes_the_datastore_lost_are_recorded_again(pg_cluster: Cluster) -> None:
    """What a failover to an asynchronous standby can do: the last commits are gone.

    Simulated on one server by rolling two jobs back by hand (counters included), as the lost
    commits would have: a finished job is `running` again under the node that finished it, and a
    job the node never received is `running` under it. Terminating the node's connections is
    the interruption a failover also is; the node then records the outcome it remembers again
    and releases the job it never had, which it then runs.
    """
    from systasks import app

    store = open_store(pg_cluster.url)
    pg_cluster.start("a", lease_s=float(LEASE_S))
    wait_live(store, {"a"})
    [node] = [n for n in store.read_cluster().nodes if n.name == "a" and n.is_live]
    app.use_store(store)
    finished = app.tasks["work"].submit(4)
    assert finished.wait(timeout_s=30) == 8
    never_had = app.tasks["work"].submit_later(3600, 5)
    with psycopg.connect(pg_cluster.url, autocommit=True) as conn, conn.transaction():
        conn.execute(
            "UPDATE jobs SET state = 'running', result = NULL, finished_at = NULL, progress = 0"
            " WHERE id = %s",
            (finished.id,),
        )
        conn.execute(
            "UPDATE jobs SET state = 'running', claimer = %s, attempts = 1, started_at = 0"
            " WHERE id = %s",
            (node.id, never_had.id),
        )
        for state, delta in (("succeeded", -1), ("queued", -1), ("running", 2)):
            conn.execute(
                "INSERT INTO job_counts (shard, task, state, n) VALUES (0, 'work', %s, %s)"
                " ON CONFLICT (shard, task, state) DO UPDATE SET n = job_counts.n + excluded.n",
                (state, delta),
            )
    assert store.running_attempts(node.id) == [(finished.id, 1), (never_had.id, 1)]
    assert terminate_shoal_connections(pg_cluster.url.rsplit("/", 1)[1]) > 0

    assert never_had.wait(timeout_s=30) == 10
    recorded = until(lambda: (job := finished.refresh()).state is JobState.SUCCEEDED and job)
    assert recorded.result == 8 and recorded.attempts == 1
    assert never_had.refresh().attempts == 1
    counts = store.read_cluster().job_counts
    assert counts.get(JobState.SUCCEEDED) == 2 and not counts.get(JobState.RUNNING)
    log = pg_cluster.log("a")
    assert "lost 1 outcomes" in log and "released 1 jobs" in log
