"""An every-second schedule on real nodes through a real PostgreSQL failover: the primary dies
(`pg_ctl stop -m immediate`) and its synchronous standby is promoted. Ticks due while no primary
answers are fired late, once each; none is fired twice by a firing retried after its connection
broke."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_schedules_cluster import APP, assert_each_tick_fired_once, ticks

from shoal.store import open_store

from pgservers import STEP_TIMEOUT_S, Server, require_pg_binaries
from realnodes import Cluster, shoal, until

pytestmark = pytest.mark.postgres
require_pg_binaries("schedule failover test")

LEASE_S = 10.0  # longer than the failover takes, so live nodes are not declared dead by it


@pytest.mark.timeout(120)
def test_each_tick_fires_once_through_a_failover(
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
            cluster.start(name, app=APP, lease_s=LEASE_S)
        until(lambda: len(ticks(store)) >= 3, what="ticks before the failover")
        primary.stop("immediate")
        until(
            lambda: all("retrying" in cluster.log(name) for name in ("a", "b")),
            timeout_s=10,
            what="both nodes noticing the primary is gone",
        )
        standby.ctl("promote")
        after = len(ticks(store)) + 4
        until(lambda: len(ticks(store)) >= after, timeout_s=40, what="ticks after the failover")
        assert all(p.poll() is None for p in cluster.processes.values()), "a node exited"
        assert_each_tick_fired_once(store)
    finally:
        cluster.stop_all()
        store.close()
