"""The default pool: worker threads in one worker process. A task that kills its process kills
only that process: the node keeps its registration and its lease, the job fails naming how the
process ended, the jobs running beside it finish, and a new worker process takes over."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pooltasks
import pytest

from shoal.model import Job, JobState, NewJob, NodeState
from shoal.node import Node, NodeConfig, hosted
from shoal.node.eventqueue import EventQueue
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


def test_a_task_that_submits_uses_the_node_datastore_not_the_app_default(
    sqlite_store: SqliteStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The worker process's own App() would open SHOAL_DB: another datastore than the node's.
    elsewhere = tmp_path / "elsewhere.db"
    monkeypatch.setenv("SHOAL_DB", f"sqlite:///{elsewhere}")
    config = NodeConfig(name="relaying", concurrency=1, **FAST)  # type: ignore[arg-type]
    node = Node(pooltasks.app, sqlite_store, config, app_spec="pooltasks:app").start()
    try:
        relayed = finished(sqlite_store, submit(sqlite_store, "relay"))
        assert relayed.state is JobState.SUCCEEDED, relayed.error
        child = finished(sqlite_store, relayed.result)
        assert child.task == "noop" and child.state is JobState.SUCCEEDED
        assert not elsewhere.exists()
    finally:
        node.request_stop(grace_s=0.0)
        node.stop()


@pytest.fixture
def broken_flag(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """While this file exists, a new worker process cannot import fragiletasks:app."""
    flag = tmp_path / "broken"
    monkeypatch.setenv("FRAGILE_FLAG", str(flag))
    return flag


def test_a_node_whose_first_worker_process_cannot_load_the_app_exits_unregistered(
    sqlite_store: SqliteStore, broken_flag: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import fragiletasks  # importable here: only the worker process finds the flag

    broken_flag.touch()
    config = NodeConfig(name="unloadable", concurrency=1, **FAST)  # type: ignore[arg-type]
    node = Node(fragiletasks.app, sqlite_store, config, app_spec="fragiletasks:app")
    assert node.run() == 1
    assert sqlite_store.read_cluster().nodes == ()
    [error] = [r.getMessage() for r in caplog.records if "cannot start" in r.getMessage()]
    assert "fragiletasks" in error and "says this app is broken" in error
    assert hosts() == []


def test_a_worker_process_that_cannot_load_the_app_backs_off_and_claims_nothing(
    sqlite_store: SqliteStore,
    broken_flag: Path,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import fragiletasks

    monkeypatch.setattr(hosted, "RESPAWN_PAUSE_S", 0.05)
    monkeypatch.setattr(hosted, "RESPAWN_MAX_S", 0.4)
    config = NodeConfig(name="fragile", concurrency=2, **FAST)  # type: ignore[arg-type]
    node = Node(fragiletasks.app, sqlite_store, config, app_spec="fragiletasks:app").start()
    try:
        until(lambda: node.loop is not None, "the node to register", DEATH_S)
        node_id = node.node_id
        assert finished(sqlite_store, submit(sqlite_store, "noop")).state is JobState.SUCCEEDED
        broken_flag.touch()
        [host] = hosts()
        os.kill(host.pid, signal.SIGKILL)  # type: ignore[arg-type]
        queued = [submit(sqlite_store, "noop") for _ in range(3)]
        beat = sqlite_store.read_node(node_id).heartbeat_at  # type: ignore[union-attr]
        failures = "still cannot load"
        until(lambda: sum(failures in r.getMessage() for r in caplog.records) >= 2, "reminders")
        # Alive, heartbeating, and holding nothing for a worker that cannot run it: what it
        # claimed before it saw the death goes back to the queue, and nothing more is claimed.
        assert node.exit_code is None and node.node_id == node_id
        until(
            lambda: sqlite_store.read_node(node_id).heartbeat_at > beat,  # type: ignore[union-attr]
            "a heartbeat",
            DEATH_S,
        )

        def given_back() -> bool:
            jobs = [sqlite_store.read_job(job_id) for job_id in queued]
            return all(j is not None and j.state is JobState.QUEUED for j in jobs)

        until(given_back, "the jobs claimed for the dead worker process to go back", DEATH_S)
        late = submit(sqlite_store, "noop")
        until(lambda: sum(failures in r.getMessage() for r in caplog.records) >= 3, "a reminder")
        assert all(sqlite_store.read_job(i).attempts == 0 for i in [*queued, late])  # type: ignore[union-attr]
        assert node.loop is not None and not node.loop.held
        messages = [r.getMessage() for r in caplog.records if "load the app" in r.getMessage()]
        assert sum(m.startswith("the worker process cannot") for m in messages) == 1  # once
        assert "says this app is broken" in messages[0] and "PYTHONPATH" in messages[0]
        reminders = [m for m in messages if failures in m]
        assert [m.split("(")[1].split(")")[0] for m in reminders[:3]] == [
            "2 attempts",
            "4 attempts",
            "8 attempts",
        ]
        broken_flag.unlink()
        for job_id in [*queued, late]:
            job = finished(sqlite_store, job_id)
            assert job.state is JobState.SUCCEEDED and job.attempts == 1, job.error
        assert node.node_id == node_id
    finally:
        node.request_stop(grace_s=0.0)
        node.stop()


def test_work_held_for_a_worker_process_that_cannot_start_is_given_back_not_failed(
    broken_flag: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(hosted, "RESPAWN_PAUSE_S", 0.05)
    executor = HostedExecutor("fragiletasks:app", 1)
    try:
        assert executor.wait_started(DEATH_S)
        executor.submit(Work(1, 1, "nap", "[30]", "{}", None))
        executor.submit(Work(2, 1, "noop", "[]", "{}", None))  # waits behind the one thread
        until(lambda: executor.longest_running_s() > 0, "the nap to start", DEATH_S)
        broken_flag.touch()
        [host] = hosts()
        os.kill(host.pid, signal.SIGKILL)  # type: ignore[arg-type]
        event = executor.events.get(timeout=DEATH_S)
        assert isinstance(event, Finished) and event.job_id == 1 and not event.ok
        until(lambda: executor.unstarted_wait_s() > 0.5, "the noop to wait", DEATH_S)
        assert executor.free_slots(prefetch=10) == 0
        assert executor.events.empty()  # the noop did not fail for its worker
        assert executor.take_unstarted() == [2]
        assert executor.running() == []
    finally:
        executor.shutdown()


def test_a_node_whose_worker_process_cannot_load_the_app_hands_its_section_over(
    sqlite_store: SqliteStore,
    broken_flag: Path,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A deploy broke the code under one node: it pauses itself, so the jobs of its section
    run on the other node rather than wait, and takes a section again once the app loads."""
    import fragiletasks

    monkeypatch.setattr(hosted, "RESPAWN_PAUSE_S", 0.05)
    monkeypatch.setattr(hosted, "RESPAWN_MAX_S", 0.2)
    nodes = [
        Node(
            fragiletasks.app,
            sqlite_store,
            NodeConfig(name=name, concurrency=2, **FAST),  # type: ignore[arg-type]
            app_spec="fragiletasks:app",
        ).start()
        for name in ("fragile", "sound")
    ]
    fragile, sound = nodes
    try:
        for node in nodes:
            until(lambda n=node: n.loop is not None, "the nodes to register", DEATH_S)  # type: ignore[misc]
        until(lambda: len(hosts()) == 2, "both worker processes", DEATH_S)
        broken_flag.touch()
        assert fragile.loop is not None
        executor = fragile.loop.executor
        assert isinstance(executor, HostedExecutor)
        os.kill(executor._child.process.pid, signal.SIGKILL)  # its worker process

        def paused() -> bool:
            record = sqlite_store.read_node(fragile.node_id)  # type: ignore[arg-type]
            return record is not None and record.state is NodeState.PAUSED and not record.section

        until(paused, "the fragile node paused, without a section", DEATH_S)
        assert any("pauses itself" in r.getMessage() for r in caplog.records)
        jobs = [submit(sqlite_store, "noop") for _ in range(20)]
        for job_id in jobs:
            job = finished(sqlite_store, job_id)
            assert job.state is JobState.SUCCEEDED and job.claimer == sound.node_id
        broken_flag.unlink()

        def resumed() -> bool:
            record = sqlite_store.read_node(fragile.node_id)  # type: ignore[arg-type]
            return (
                record is not None and record.state is not NodeState.PAUSED and bool(record.section)
            )

        until(resumed, "the fragile node back with a section", DEATH_S)
        assert fragile.exit_code is None
    finally:
        for node in nodes:
            node.request_stop(grace_s=0.0)
        for node in nodes:
            node.stop()


def test_a_burst_of_finishes_crosses_the_pipe_together_and_a_lone_one_at_once() -> None:
    """The child's event sender: a finish after a quiet spell is sent at once; those that follow
    within the coalescing window wait for each other and go as one message."""

    class Child:
        events: EventQueue[Finished] = EventQueue()
        abandoned = 0

    sent: EventQueue[tuple[object, ...]] = EventQueue()
    window_s = 0.5
    threading.Thread(
        target=hosted._send_events, args=(Child, sent.put, window_s), daemon=True
    ).start()

    def job_ids(message: tuple[object, ...]) -> list[int]:
        return [values[1] for values in message[1]]  # type: ignore[attr-defined]

    Child.events.put(Finished(1, 1, True))
    assert job_ids(sent.get(timeout=window_s * 0.8)) == [1]  # not held for the window
    Child.events.put(Finished(2, 1, True))
    Child.events.put(Finished(3, 1, True))
    assert job_ids(sent.get(timeout=30)) == [2, 3]
    time.sleep(window_s * 1.5)  # a quiet spell
    Child.events.put(Finished(4, 1, True))
    assert job_ids(sent.get(timeout=window_s * 0.8)) == [4]
