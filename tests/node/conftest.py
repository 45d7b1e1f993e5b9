"""Node fixtures: a real SQLite store, steered tasks, and real nodes started in-process.

Nodes started here run on threads (`Node.start`) or are stepped by the test itself with a
`now` it chooses; either way every started node is stopped and every attempt released at the
end of the test, so no worker is left waiting.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from shoal.app import App
from shoal.node import Node, NodeConfig
from shoal.store.sqlite import SqliteStore

from steered import Steered

PARTITIONS = 8
TASKS = ("hold", "other")
# Fast timers, so a test sees a pause or a death within a few turns; the lease stays long unless
# a test shortens it, so that no node is declared dead by accident on a busy machine.
FAST = {"heartbeat_s": 0.02, "lease_s": 30.0, "poll_s": 0.005, "progress_flush_s": 0.01}


@pytest.fixture
def db_path(tmp_path: Path) -> str:
    return str(tmp_path / "nodes.db")


@pytest.fixture
def sqlite_store(db_path: str) -> Iterator[SqliteStore]:
    store = SqliteStore(db_path)
    store.initialize(partitions=PARTITIONS)
    yield store
    store.close()


@pytest.fixture
def steered(sqlite_store: SqliteStore) -> Iterator[Steered]:
    steered = Steered(sqlite_store)
    yield steered
    steered.release_all()


@pytest.fixture
def app(steered: Steered) -> App:
    return steered.app(TASKS)


@pytest.fixture
def make_node(
    app: App, sqlite_store: SqliteStore, steered: Steered
) -> Iterator[Callable[..., Node]]:
    """Build a node (not started) with fast timers; `make_node(name, **settings)`."""
    made: list[Node] = []

    def make(name: str, store: Any = None, **settings: Any) -> Node:
        config = NodeConfig(name=name, **(FAST | settings))
        node = Node(app, store or sqlite_store, config)
        made.append(node)
        return node

    yield make
    steered.release_all()
    for node in made:
        node.request_stop(grace_s=0.0)
        node.stop()  # a second request: leave now; waits for a started node's thread
        for _ in range(100):  # a node the test stepped itself: step it out of the cluster
            if node.exit_code is not None:
                break
            node.step(time.monotonic())
