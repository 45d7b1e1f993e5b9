"""Stopping real `shoal node` processes the way service managers do: SIGTERM to the whole process
group, several nodes at once, the second signal, and a datastore that is gone while leaving."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from shoal.model import JobState, NewJob, NodeState
from shoal.store import Store, open_store

from realnodes import HERE, child_env, until


class Group:
    """Node processes, each the leader of its own process group (as under systemd)."""

    def __init__(self, url: str, log_dir: Path) -> None:
        self.url = url
        self.log_dir = log_dir
        self.processes: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str, *extra: str) -> subprocess.Popen[bytes]:
        log = open(self.log_dir / f"{name}.log", "ab")  # noqa: SIM115 - closed with the process
        command = [sys.executable, "-m", "shoal", "node", "--app", "systasks:app"]
        command += ["--db", self.url, "--name", name, "--lease-s", "2", *extra]
        process = subprocess.Popen(
            command,
            cwd=HERE,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=child_env(),
            start_new_session=True,
        )
        self.processes[name] = process
        return process

    def log(self, name: str) -> str:
        return (self.log_dir / f"{name}.log").read_text()

    def kill_all(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=10)


@pytest.fixture
def group(sqlite_url: str, tmp_path: Path) -> Iterator[Group]:
    g = Group(sqlite_url, tmp_path)
    yield g
    g.kill_all()


def live(store: Store, name: str) -> int | None:
    for node in store.read_cluster().nodes:
        if node.name == name and node.state is not NodeState.DEAD and node.section:
            return node.id
    return None


def started(store: Store, ids: list[int]) -> bool:
    """Every job reported its first progress: a worker runs it."""
    return all((job := store.read_job(i)) is not None and job.progress for i in ids)


@pytest.mark.parametrize("pool", ["process", "thread"])  # thread: threads in a worker process
def test_sigterm_to_the_process_group_drains_worker_process_jobs(group: Group, pool: str) -> None:
    store = open_store(group.url)
    node = group.start("a", "--pool", pool, "--concurrency", "2", "--grace-s", "60")
    until(lambda: live(store, "a"), what="node a live")
    ids = store.submit_jobs([NewJob("work", f"[{i}, 1.5]", "{}", max_attempts=1) for i in (1, 2)])
    until(lambda: started(store, ids), what="both jobs running in worker processes")
    os.killpg(node.pid, signal.SIGTERM)  # the node and its workers, as systemd stops a unit
    assert node.wait(timeout=60) == 0
    for job_id in ids:
        job = store.read_job(job_id)
        assert job is not None and job.state is JobState.SUCCEEDED, job
        assert job.attempts == 1
    assert "worker process" not in group.log("a")  # none died, none was replaced


def test_three_nodes_sent_sigterm_together_all_leave(group: Group) -> None:
    store = open_store(group.url)
    nodes = [group.start(name) for name in ("a", "b", "c")]
    until(lambda: all(live(store, name) for name in ("a", "b", "c")), what="three nodes live")
    for process in nodes:
        process.send_signal(signal.SIGTERM)
    for process in nodes:
        assert process.wait(timeout=30) == 0
    assert all(n.state is NodeState.DEAD for n in store.read_cluster(dead_window_s=3600).nodes)


def start_six_on_a_new_file(path: Path, log_dir: Path, prefix: str) -> None:
    group = Group(f"sqlite:///{path}", log_dir)
    names = [f"{prefix}n{i}" for i in range(6)]
    # Threads in the node's own process: what races here is opening the file, not the pool, and
    # six worker processes importing the app at once would only slow each round down.
    processes = [group.start(name, "--pool", "inline") for name in names]

    def registered() -> bool:
        for process, name in zip(processes, names, strict=True):
            assert process.poll() is None, group.log(name)  # none gave up
        if not path.exists():
            return False
        store = open_store(group.url)
        try:
            return all(live(store, name) for name in names)
        finally:
            store.close()

    try:
        until(registered, timeout_s=60, what="six nodes registered")
        for process in processes:
            process.send_signal(signal.SIGTERM)
        assert all(process.wait(timeout=30) == 0 for process in processes)
    finally:
        group.kill_all()


def test_nodes_started_together_on_a_new_sqlite_file_all_register(tmp_path: Path) -> None:
    for round_number in range(5):
        # No file yet: the six nodes create it together.
        start_six_on_a_new_file(tmp_path / f"new-{round_number}.db", tmp_path, f"r{round_number}")


@pytest.mark.parametrize("pool", ["process", "thread"])
def test_a_task_that_kills_its_process_group_kills_only_its_worker_process(
    group: Group, pool: str
) -> None:
    """A worker process leads a process group of its own: a task's `os.killpg(0, SIGKILL)`
    reaches that process, not the node that holds the lease. The attempt fails with how the
    worker process ended; the jobs around it succeed; the node stays in service."""
    store = open_store(group.url)
    node = group.start("a", "--pool", pool, "--concurrency", "2")
    until(lambda: live(store, "a"), what="node a live")
    # Tiny jobs first, so that under the thread pool the node hands its jobs over before their
    # start is recorded: a node killed with its worker process would give those back uncharged.
    warm = store.submit_jobs([NewJob("work", f"[{i}]", "{}", max_attempts=1) for i in range(200)])
    until(lambda: all(store.read_job(i).state.is_final for i in warm), what="the tiny jobs")
    [poison] = store.submit_jobs([NewJob("kill_group", "[]", "{}", max_attempts=1)])
    after = store.submit_jobs([NewJob("work", f"[{i}]", "{}", max_attempts=1) for i in range(20)])

    def final(job_id: int) -> bool:
        job = store.read_job(job_id)
        assert node.poll() is None, group.log("a")  # the node lives
        return job is not None and job.state.is_final

    until(lambda: all(final(i) for i in [poison, *after]), timeout_s=90, what="all jobs final")
    job = store.read_job(poison)
    assert job is not None and job.state is JobState.FAILED and job.attempts == 1, job
    assert "SIGKILL" in (job.error or ""), job.error
    assert all(store.read_job(i).state is JobState.SUCCEEDED for i in after)  # type: ignore[union-attr]
    assert node.poll() is None and live(store, "a")
