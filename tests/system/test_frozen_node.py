"""A node frozen past its lease (SIGSTOP) must not go on running jobs in its worker process:
they run again elsewhere, and two copies must never run at once for long."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest

from shoal.model import NewJob, NodeState
from shoal.store import open_store

from realnodes import Cluster, freeze_outside_a_write, until

LEASE_S = 2.0


def ticks(path: Path) -> list[tuple[int, float]]:
    if not path.exists():
        return []
    lines = [line.split() for line in path.read_text().splitlines()]
    return [(int(pid), float(at)) for pid, at in (line for line in lines if len(line) == 2)]


def gone(pid: int) -> bool:
    """Whether a process has exited (a zombie its frozen parent has not reaped counts)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] in ("Z", "X")


@pytest.mark.parametrize("pool", ["thread", "process"])
def test_a_frozen_node_worker_process_runs_nothing_past_the_lease(
    sqlite_cluster: Cluster, tmp_path: Path, pool: str
) -> None:
    store = open_store(sqlite_cluster.url)
    path = tmp_path / "ticks"
    a = sqlite_cluster.start("a", "--concurrency", "2", "--pool", pool, lease_s=LEASE_S)
    until(lambda: any(n.name == "a" for n in store.read_cluster().nodes), what="a live")
    [job_id] = store.submit_jobs([NewJob("ticker", json.dumps([str(path), 60]), "{}", 5)])
    [(worker, _), *_] = until(lambda: ticks(path), what="the job ticking on a")
    sqlite_cluster.start("b", "--concurrency", "2", lease_s=LEASE_S)
    until(lambda: len(store.read_cluster().nodes) == 2, what="b live")
    [a_id] = [n.id for n in store.read_cluster().nodes if n.name == "a"]
    frozen_at = freeze_outside_a_write(a, sqlite_cluster.url)
    try:
        until(lambda: gone(worker), timeout_s=LEASE_S + 10, what="a's worker process to end")
        # Its last tick came before a's lease ran out, though a itself never woke to stop it.
        assert max(at for pid, at in ticks(path) if pid == worker) <= frozen_at + LEASE_S
        until(
            lambda: store.read_node(a_id).state is NodeState.DEAD,  # type: ignore[union-attr]
            timeout_s=15,
            what="a declared dead",
        )
        until(lambda: {p for p, _ in ticks(path)} - {worker}, what="the job running on b")
    finally:
        a.send_signal(signal.SIGCONT)
    until(
        lambda: any(n.name == "a" and n.id != a_id for n in store.read_cluster().nodes),
        timeout_s=30,
        what="a registered again under a new id",
    )
    assert "declared dead" in sqlite_cluster.log("a")
    job = store.read_job(job_id)
    assert job is not None and job.attempts == 2
