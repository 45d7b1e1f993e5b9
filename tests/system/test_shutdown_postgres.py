"""Stopping a real node while its PostgreSQL server is down: leaving still ends within the grace
period plus a small margin, and a second SIGTERM ends it at once. Runs on a throwaway server
(tests/system/pgservers.py), which the tests stop."""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_shutdown import Group, live, started

from shoal.model import NewJob
from shoal.store import open_store

from pgservers import Server, init_server, require_pg_binaries, server_root
from realnodes import until

require_pg_binaries("stopping nodes while PostgreSQL is down")

MARGIN_S = 8.0  # the node's margin for its last writes, and the process's own backstop


@pytest.fixture
def server() -> Iterator[Server]:
    with server_root("shoal-shutdown-") as root:
        yield init_server(root, "lone")


@pytest.fixture
def group(server: Server, tmp_path: Path) -> Iterator[Group]:
    store = open_store(server.url())
    store.initialize()
    store.close()
    g = Group(server.url(), tmp_path)
    yield g
    g.kill_all()


def running_then_cut_off(group: Group, server: Server, grace_s: float) -> subprocess.Popen[bytes]:
    """A node running two long jobs, then its datastore stopped under it."""
    node = group.start("a", "--concurrency", "2", "--grace-s", str(grace_s))
    store = open_store(group.url)
    until(lambda: live(store, "a"), what="node a live")
    ids = store.submit_jobs([NewJob("work", f"[{i}, 60]", "{}") for i in (1, 2)])
    until(lambda: started(store, ids), what="both jobs running")
    store.close()
    server.stop("immediate")
    return node


def test_sigterm_while_postgres_is_down_leaves_within_the_grace_period(
    group: Group, server: Server
) -> None:
    node = running_then_cut_off(group, server, grace_s=3.0)
    began = time.monotonic()
    node.send_signal(signal.SIGTERM)
    assert node.wait(timeout=60) == 0  # the node gave up by itself, not the last resort
    assert time.monotonic() - began < 3.0 + MARGIN_S, group.log("a")
    assert "the lease will expire instead" in group.log("a")


def test_a_second_sigterm_leaves_at_once_while_postgres_is_down(
    group: Group, server: Server
) -> None:
    node = running_then_cut_off(group, server, grace_s=60.0)
    node.send_signal(signal.SIGTERM)
    until(lambda: "stop signal" in group.log("a"), what="the first signal seen")
    began = time.monotonic()
    node.send_signal(signal.SIGTERM)
    node.wait(timeout=60)
    assert time.monotonic() - began < 3.0, group.log("a")
