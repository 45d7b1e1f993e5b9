"""Task kinds on real nodes: async tasks, time limits, progress, and the process pool."""

from __future__ import annotations

from pathlib import Path

import pytest

from shoal import App, JobFailed
from shoal.model import NodeState
from shoal.store import open_store

from realnodes import Cluster, until


def started_app(cluster: Cluster, *extra: str) -> App:
    from systasks import app

    cluster.start("a", *extra)
    store = open_store(cluster.url)
    until(lambda: any(n.state is NodeState.WAITING for n in store.read_cluster().nodes))
    app.use_store(store)
    return app


@pytest.mark.parametrize("pool", ["thread", "process"])
def test_async_and_plain_tasks_run_in_each_pool(cluster: Cluster, pool: str) -> None:
    app = started_app(cluster, "--pool", pool)
    assert app.tasks["double_async"].submit(21).wait(timeout_s=30) == 42
    assert app.tasks["burn"].submit(1000).wait(timeout_s=30) == sum(i * i for i in range(1000))


@pytest.mark.parametrize("pool", ["thread", "process"])
def test_hung_task_is_stopped_retried_then_failed(cluster: Cluster, pool: str) -> None:
    app = started_app(cluster, "--pool", pool)
    handle = app.tasks["hang"].submit()
    with pytest.raises(JobFailed, match=r"timed out after 0\.3s"):
        handle.wait(timeout_s=30)
    assert handle.refresh().attempts == 2
    # The node still has its full capacity after stopping hung attempts.
    assert app.tasks["double_async"].submit(1).wait(timeout_s=30) == 2


def test_progress_is_visible_while_the_job_runs(cluster: Cluster) -> None:
    app = started_app(cluster)
    handle = app.tasks["stepped"].submit(10, 0.15)
    seen = until(
        lambda: (p := handle.progress).fraction > 0 and handle.state.value == "running" and p,
        what="progress while running",
    )
    assert 0 < seen.fraction < 1 and seen.message and seen.message.startswith("step ")
    assert handle.wait(timeout_s=30) == "done"
    assert handle.progress.fraction == 1.0


def test_an_error_text_no_datastore_can_hold_is_recorded_escaped(cluster: Cluster) -> None:
    # PostgreSQL text cannot hold NUL, and no UTF-8 can hold a lone surrogate: the outcome is
    # recorded with both written as escapes, and the node carries on.
    app = started_app(cluster)
    handle = app.tasks["unprintable"].submit()
    with pytest.raises(JobFailed, match=r"bad \\x00 byte and a lone \\udcff surrogate"):
        handle.wait(timeout_s=30)
    assert app.tasks["work"].submit(4).wait(timeout_s=30) == 8


@pytest.mark.parametrize("pool", ["thread", "inline", "process"])
def test_a_task_submits_to_the_datastore_the_node_runs_on(
    sqlite_cluster: Cluster, pool: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # systasks' App() takes SHOAL_DB, here another datastore than the node's --db.
    elsewhere = tmp_path / "elsewhere.db"
    monkeypatch.setenv("SHOAL_DB", f"sqlite:///{elsewhere}")
    app = started_app(sqlite_cluster, "--pool", pool)
    relayed = app.tasks["relay"].submit(21).wait(timeout_s=30)
    assert app.job(relayed).wait(timeout_s=30) == 42
    assert not elsewhere.exists()
