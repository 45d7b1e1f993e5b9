"""Helpers shared by the storage conformance suite (tests/store/test_*.py).

The suite is written once and run against every adapter: each test gets a fresh, initialised
datastore (P = 128) through the `store` fixture, parametrised over SQLite and PostgreSQL. Lease
expiry is exercised with short leases and a poll with a deadline, never a fixed sleep.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from shoal.model import NewJob, NodeRecord, NodeState
from shoal.store import Store

P = 128


def new_jobs(n: int, task: str = "t", **kw: object) -> list[NewJob]:
    return [NewJob(task, f"[{i}]", "{}", **kw) for i in range(n)]  # type: ignore[arg-type]


def start_node(
    store: Store, name: str, lease_s: float = 30.0, tasks: Sequence[str] = ("t",)
) -> NodeRecord:
    """A node in `waiting`; it claims only jobs of `tasks`."""
    node = store.register_node(name, "host", 1, 4, tasks, lease_s)
    assert store.set_node_state(node.id, NodeState.INITIALIZING, NodeState.WAITING)
    found = store.read_node(node.id)
    assert found is not None
    return found


def until(condition: Callable[[], object], timeout_s: float = 10.0) -> object:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError("condition not met before the deadline")


def owners_of(store: Store) -> tuple[int | None, ...]:
    return store.read_cluster().owners
