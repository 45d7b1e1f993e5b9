"""The default pool: worker threads in one worker process. A task that kills its process kills
only that process: the node keeps its registration and its lease, the job fails naming how the
process ended, the jobs running beside it finish, and a new worker process takes over."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
from collections.abc import Iterator

import pooltasks
import pytest

from shoal.model import Job, JobState, NewJob
from shoal.node import Node, NodeConfig
from shoal.node.hosted import HostedExecutor
from shoal.node.runner import Finished, Work
from shoal.store.sqlite import SqliteStore

from steered import until

FAST = {"heartbeat_s": 0.05, "lease_s": 30.0, "poll_s": 0.005, "progress_flush_s": 0.01}
DEATH_S = 60.0  # a new worker process imports the app: slow on a busy machine


@pytest.fixture
def node(sqlite_store: SqliteStore) -> Iterator[Node]:
    pooltasks.app.use_store(sqlite_store)
    config = NodeConfig(name="hosting", concurrency=2, **FAST)  # type: ignore[arg-type]
    node = Node(pooltasks.app, sqlite_store, config, app_spec="pooltasks:app").start()
    until(lambda: node.loop is not None, "the node to register", DEATH_S)
    yield node
    node.request_stop(grace_s=0.0)
    node.stop()


def submit(store: SqliteStore, task: str, *args: object) -> int:
    [job_id] = store.submit_jobs([NewJob(task, json.dumps(list(args)), "{}", max_attempts=1)])
    return job_id


def finished(store: SqliteStore, job_id: int) -> Job:
    def done() -> Job | None:
        job = store.read_job(job_id)
        return job if job is not None and job.state.is_final else None

    return until(done, f"job {job_id} to finish", DEATH_S)


def hosts() -> list[multiprocessing.process.BaseProcess]:
    return [p for p in multiprocessing.active_children() if p.name == "shoal-worker"]


def test_tasks_run_outside_the_node_process(node: Node, sqlite_store: SqliteStore) -> None:
    job = finished(sqlite_store, submit(sqlite_store, "pid"))
    assert job.state is JobState.SUCCEEDED
    assert job.result != os.getpid() and job.result in {p.pid for p in hosts()}


@pytest.mark.parametrize(
    ("task", "args", "cause"),
    [
        ("exit_now", (1,), "the worker process exited with code 1 while running job"),
        ("segfault", (), "the worker process was killed by signal 11 (SIGSEGV) while running job"),
    ],
)
def test_a_task_that_kills_its_process_fails_alone_and_the_node_lives(
    node: Node, sqlite_store: SqliteStore, task: str, args: tuple[object, ...], cause: str
) -> None:
    node_id = node.node_id
    # Two slots: a bystander runs beside the poison job, more wait behind it.
    bystanders = [submit(sqlite_store, "nap", 0.5)]
    poison = submit(sqlite_store, task, *args)
    bystanders += [submit(sqlite_store, "nap", 0.1) for _ in range(3)]
    job = finished(sqlite_store, poison)
    assert job.state is JobState.FAILED and cause in (job.error or ""), job.error
    assert job.attempts == 1
    for job_id in bystanders:
        done = finished(sqlite_store, job_id)
        assert done.state is JobState.SUCCEEDED and done.attempts == 1, done.error
    assert node.exit_code is None and node.node_id == node_id  # never declared dead
    assert finished(sqlite_store, submit(sqlite_store, "noop")).state is JobState.SUCCEEDED


def test_a_worker_process_killed_from_outside_is_replaced(
    node: Node, sqlite_store: SqliteStore
) -> None:
    assert finished(sqlite_store, submit(sqlite_store, "noop")).state is JobState.SUCCEEDED
    [host] = hosts()
    os.kill(host.pid, signal.SIGKILL)  # type: ignore[arg-type]
    until(lambda: [p for p in hosts() if p.pid != host.pid], "a new worker process", DEATH_S)
    assert finished(sqlite_store, submit(sqlite_store, "noop")).state is JobState.SUCCEEDED
    assert node.exit_code is None


def test_work_no_thread_had_started_goes_to_the_new_worker_process() -> None:
    executor = HostedExecutor("pooltasks:app", 1)
    try:
        executor.submit(Work(1, 1, "exit_now", "[3]", "{}", None))
        for job_id in (2, 3, 4):  # queued in the worker process behind the one slot
            executor.submit(Work(job_id, 1, "noop", "[]", "{}", None))
        ends: dict[int, Finished] = {}
        while len(ends) < 4:
            event = executor.events.get(timeout=DEATH_S)
            if isinstance(event, Finished):
                ends[event.job_id] = event
        assert ends[1].error == "the worker process exited with code 3 while running job 1"
        assert all(ends[i].ok for i in (2, 3, 4))
        assert executor.running() == [] and executor.free_slots() == 1
    finally:
        executor.shutdown()
