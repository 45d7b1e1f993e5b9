"""Real nodes on PostgreSQL riding out a real failover: the primary dies (`pg_ctl stop -m
immediate`) mid-run and a synchronous standby is promoted. Nodes connect with a multi-host URL
and `target_session_attrs=read-write`, so they find the new primary by themselves. Afterwards no
job is lost, none has two recorded outcomes, and the sections still cover every partition.

The test builds its own throwaway primary and standby from the PostgreSQL binaries (never the
shared server on 5432), on free loopback ports, run as the `postgres` OS user when the test runs
as root. Locally it skips loudly without the binaries; with CI=true it fails instead.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from test_cluster import (
    all_final,
    assert_each_recorded_once,
    assert_sections_partition_everything,
    live_nodes,
    submit,
    succeeded,
    wait_live,
)

from shoal.store import open_store

from pgservers import STEP_TIMEOUT_S, Server, require_pg_binaries
from realnodes import Cluster, shoal, until

pytestmark = pytest.mark.postgres
require_pg_binaries("failover test")

LEASE_S = 10.0  # longer than the failover takes, so live nodes are not declared dead by it


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
