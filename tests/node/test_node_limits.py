"""A real node in-process with a limited task: it runs no more than the limit, runs other tasks
past a backlog of the limited one, and does not keep taking the write lock for jobs it may not
start."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from shoal.app import App
from shoal.model import JobFilter, JobState
from shoal.node import Node, NodeConfig
from shoal.store.sqlite import SqliteStore
from shoal.store.sqlite import jobs as sqlite_jobs

from steered import until


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteStore]:
    s = SqliteStore(str(tmp_path / "limits.db"))
    s.initialize(partitions=8)
    yield s
    s.close()


def test_a_node_waits_for_room_without_claiming_in_vain(
    store: SqliteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    opened = threading.Event()
    app = App()
    app.use_store(store)

    @app.task(max_running=1)
    def gated(n: int) -> int:
        opened.wait(10)
        return n

    @app.task
    def free(n: int) -> int:
        return n

    write_claims = [0]
    real_claim = sqlite_jobs.claim

    def counted(*args: Any) -> Any:
        write_claims[0] += 1
        return real_claim(*args)

    monkeypatch.setattr(sqlite_jobs, "claim", counted)
    config = NodeConfig(name="n", concurrency=4, heartbeat_s=0.02, poll_s=0.005, lease_s=30.0)
    node = Node(app, store, config).start()
    try:
        gated.submit_many([(i,) for i in range(5)])
        free.submit_many([(i,) for i in range(3)])
        running = JobFilter(state=JobState.RUNNING, task="gated")
        until(
            lambda: store.count_jobs_by_task().get(("free", JobState.SUCCEEDED)) == 3,
            "the free jobs done past the gated backlog",
        )
        assert len(store.list_jobs(running)) == 1
        before = write_claims[0]
        seen = [0]

        def idle_looks() -> bool:  # the node looks every 5 ms; count 100 of its turns
            seen[0] += 1
            assert len(store.list_jobs(running)) == 1
            return seen[0] >= 100

        until(idle_looks, "a hundred looks at the datastore")
        assert write_claims[0] - before <= 2  # not one write transaction per look
        opened.set()
        until(
            lambda: store.count_jobs_by_task().get(("gated", JobState.SUCCEEDED)) == 5,
            "every gated job done, one at a time",
        )
        assert store.read_task_limits()[0].running == 0
    finally:
        opened.set()
        node.stop(grace_s=0.0)
