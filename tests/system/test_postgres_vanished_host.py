"""Real nodes on PostgreSQL whose host vanishes without a TCP reset (power loss, a network
partition) and comes back. The server runs inside a network namespace (tests/system/netns.py)
whose link is set down mid-run: nothing closes the nodes' connections, packets are just
dropped. The nodes must notice within the keepalive / tcp_user_timeout window rather than after
minutes of retransmission, and once the link is back every job finishes, none twice.

The outage outlasts that window but not the lease, so this tests the case where the nodes
keep their ids: nobody is declared dead. (An outage past the lease is the SIGSTOP case of
test_cluster.py: the node is declared dead and registers again.)
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from datetime import datetime
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

from netns import Host, vanishing_host
from pgservers import STEP_TIMEOUT_S, Server, init_server, require_pg_binaries, server_root
from realnodes import Cluster, shoal, until

pytestmark = pytest.mark.postgres
require_pg_binaries("vanished-host test")

OUTAGE_S = 24.0  # past tcp_user_timeout (15 s) and the keepalive window (10 s + 3 x 3 s)
DETECT_WITHIN_S = 20.0  # the user timeout plus a retry's backoff and a log line
LEASE_S = 60.0  # longer than the outage and the reconnection after it: nobody is declared dead
NOTICED = re.compile(r"^(\S+ \S+) WARNING .* unavailable \(", re.MULTILINE)


@pytest.fixture
def host() -> Iterator[Host]:
    with vanishing_host() as made:
        yield made


@pytest.fixture
def server(host: Host) -> Iterator[Server]:
    with server_root("shoal-vanish-") as root:
        yield init_server(
            root, "db", host=host.address, netns=host.netns, clients=f"{host.peer}/32"
        )


def noticed_after(log: str, since: float) -> float | None:
    """Seconds from `since` (wall clock) to the first datastore failure the node logged after it."""
    for stamp in NOTICED.findall(log):
        at = datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S,%f").timestamp()
        if at >= since:
            return at - since
    return None


def noticed_by_all(cluster: Cluster, names: tuple[str, ...], since: float) -> dict[str, float]:
    """Each node's delay in noticing, once all have noticed; empty until then."""
    found = {n: d for n in names if (d := noticed_after(cluster.log(n), since)) is not None}
    return found if len(found) == len(names) else {}


@pytest.mark.timeout(120)
def test_nodes_notice_a_silently_vanished_host_and_lose_nothing_when_it_returns(
    host: Host, server: Server, tmp_path: Path
) -> None:
    url = server.url()
    out = shoal("init", "--db", url, timeout_s=STEP_TIMEOUT_S)
    assert out.returncode == 0, out.stderr
    cluster = Cluster(url, tmp_path)
    store = open_store(url)
    names = ("a", "b")
    try:
        for name in names:
            cluster.start(name, "--concurrency", "4", lease_s=LEASE_S)
        nodes = wait_live(store, set(names))
        ids = submit(store, 800, 0.02)
        until(lambda: succeeded(store) >= 50, what="work under way")
        assert succeeded(store) < len(ids) - 200, "the outage would come too late"

        cut_at = time.time()
        host.cut()
        noticed = until(
            lambda: noticed_by_all(cluster, names, cut_at),
            timeout_s=DETECT_WITHIN_S,
            what="both nodes noticing the vanished host",
        )
        print("noticed after", {n: f"{s:.1f}s" for n, s in noticed.items()})
        # The outage itself is the scenario, not a wait for a condition.
        time.sleep(max(0.0, cut_at + OUTAGE_S - time.time()))
        host.restore()

        more = submit(store, 100, 0.0)  # through the test's own connections, recovered too
        until(lambda: all_final(store, ids + more), timeout_s=45, what="all jobs final")
        print(f"all jobs final {time.time() - cut_at - OUTAGE_S:.1f}s after the link returned")
        assert_each_recorded_once(store, ids + more)
        assert_sections_partition_everything(store)
        assert all(p.poll() is None for p in cluster.processes.values()), "a node exited"
        assert live_nodes(store) == nodes, "a node was declared dead during the outage"
    finally:
        cluster.stop_all()
        store.close()
