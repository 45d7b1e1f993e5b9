"""Real nodes on PostgreSQL whose primary is demoted without dropping a connection: it turns
read-only on every open session (`default_transaction_read_only = on` and a reload, as an
operator or a fencing script would) and its synchronous standby is promoted. Open connections
keep answering, but every write on them fails with "cannot execute ... in a read-only
transaction"; only new connections, following `target_session_attrs=read-write`, reach the new
primary. Afterwards no job is lost, none has two recorded outcomes, the nodes kept their ids, and
none of their connections, the LISTEN one included, stays on the old primary.

The servers are the throwaway pair of tests/system/pgservers.py, never the shared one on 5432.
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
require_pg_binaries("demotion test")

LEASE_S = 10.0  # longer than the switch takes, so live nodes are not declared dead by it
NAMES = ("a", "b")


def shoal_sessions(server: Server, listening: bool = False) -> int:
    """Shoal's sessions on `server`'s database `shoal`; with `listening`, its LISTEN ones."""
    query = (
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'shoal'"
        " AND datname = 'shoal'"
    )
    if listening:
        query += " AND query LIKE 'LISTEN %'"
    [(count,)] = server.sql(query)
    assert isinstance(count, int)
    return count


@pytest.mark.timeout(120)
def test_nodes_leave_a_primary_turned_read_only_for_the_promoted_standby(
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
        for name in NAMES:
            cluster.start(name, "--concurrency", "4", lease_s=LEASE_S)
        nodes = wait_live(store, set(NAMES))
        until(lambda: shoal_sessions(primary, listening=True) == 2, what="both nodes listening")
        ids = submit(store, 800, 0.02)
        until(lambda: succeeded(store) >= 50, what="work under way")

        primary.sql("ALTER SYSTEM SET default_transaction_read_only = on")
        primary.sql("SELECT pg_reload_conf()")
        demoted_at = time.monotonic()
        # Promote only once both nodes have met the read-only sessions, so that they also find
        # no writable server for a while (libpq must refuse both under read-write).
        until(
            lambda: all("read-only transaction" in cluster.log(name) for name in NAMES),
            timeout_s=10,
            what="both nodes meeting the read-only primary",
        )
        standby.ctl("promote")
        assert succeeded(store) < len(ids), "the demotion came too late to test anything"

        more = submit(store, 100, 0.0)  # through the store's connections to the new primary
        until(lambda: all_final(store, ids + more), timeout_s=40, what="all jobs final")
        print(f"all jobs final {time.monotonic() - demoted_at:.1f}s after the demotion")
        assert_each_recorded_once(store, ids + more)
        assert_sections_partition_everything(store)
        assert all(p.poll() is None for p in cluster.processes.values()), "a node exited"
        assert live_nodes(store) == nodes, "a node was declared dead during the switch"
        # No session stays on the old primary, where no write, and so no wake-up, can come
        # from: each node listens on the new one. (This test's own store leaves first.)
        store.close()
        until(lambda: shoal_sessions(primary) == 0, timeout_s=10, what="old primary abandoned")
        until(
            lambda: shoal_sessions(standby, listening=True) == 2,
            timeout_s=10,
            what="both nodes listening on the new primary",
        )
    finally:
        cluster.stop_all()
        store.close()
