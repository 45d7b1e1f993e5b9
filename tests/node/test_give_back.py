"""A node killed between the commit that starts jobs and handing them to its workers: each worker
process outlives it, sees its end of the pipe close, and gives back, uncharged, the jobs of that
start that no worker was handed, while the job a worker was handed stays with it. The node is
played by the test: it records the start itself, hands over one job, and then drops its ends of
the pipes as a killed process does."""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import threading
import time
from typing import Any

import pytest

from shoal.model import Job, JobState, NewJob
from shoal.node.hosted import HostedExecutor
from shoal.node.procpool import ProcessExecutor
from shoal.node.runner import Finished, Work
from shoal.store.sqlite import SqliteStore

from steered import until

WAIT_S = 60.0  # a worker process imports the app: slow on a busy machine


def executor_for(pool: str, db_path: str) -> Any:
    url = f"sqlite:///{db_path}"
    if pool == "thread":
        return HostedExecutor("pooltasks:app", 2, db_url=url)
    return ProcessExecutor("pooltasks:app", 2, db_url=url)


def drop_node_ends(executor: Any) -> None:
    """What the kernel does for a node killed outright: its ends of the pipes close. (A shut
    down socket, since closing a descriptor another thread reads from does not end the read.)"""
    if isinstance(executor, HostedExecutor):
        conns = [executor._child.conn]
    else:
        conns = [worker.conn for worker in executor._workers]
    for conn in conns:
        with socket.socket(fileno=os.dup(conn.fileno())) as end:
            end.shutdown(socket.SHUT_RDWR)


@pytest.mark.parametrize("pool", ["thread", "process"])
def test_jobs_started_but_never_handed_over_are_given_back_uncharged(
    sqlite_store: SqliteStore, db_path: str, pool: str
) -> None:
    node = sqlite_store.register_node("n", "host", 1, 2, ["nap"], 30.0)
    assert sqlite_store.set_node_state(node.id, node.state, node.state.WAITING)
    executor = executor_for(pool, db_path)
    try:
        if isinstance(executor, HostedExecutor):
            assert executor.wait_started(WAIT_S)
        executor.renew_lease(time.monotonic() + 30.0)
        executor.serve_node(node.id)
        sqlite_store.submit_jobs([NewJob("nap", json.dumps([30]), "{}", 3) for _ in range(3)])
        started = sqlite_store.claim_jobs(node.id, 3, start=3)
        assert [j.state for j in started] == [JobState.RUNNING] * 3
        handed, *never = started
        executor.submit(Work.of(handed))
        until(lambda: executor.longest_running_s() > 0 or _began(executor), "the nap", WAIT_S)
        drop_node_ends(executor)

        def given_back() -> bool:
            jobs = [sqlite_store.read_job(j.id) for j in never]
            return all(j is not None and j.state is JobState.QUEUED for j in jobs)

        until(given_back, "the jobs never handed over to go back", WAIT_S)
        for job in never:
            again = sqlite_store.read_job(job.id)
            assert again is not None and again.attempts == 0
        kept = sqlite_store.read_job(handed.id)
        assert kept is not None and kept.state is JobState.RUNNING and kept.attempts == 1
    finally:
        executor.shutdown()


def _began(executor: Any) -> bool:
    """The process pool reports no start mark: a worker handed the job has `work` set."""
    return isinstance(executor, ProcessExecutor) and any(
        w.work is not None for w in executor._workers
    )


def serving_worker_process(store: SqliteStore, db_path: str) -> tuple[Any, HostedExecutor]:
    """A node registered and waiting, played by the test, and a default-pool worker process
    that has loaded the app and serves it under a lease of 30 s."""
    node = store.register_node("n", "host", 1, 2, ["nap"], 30.0)
    assert store.set_node_state(node.id, node.state, node.state.WAITING)
    executor = executor_for("thread", db_path)
    assert executor.wait_started(WAIT_S)
    executor.renew_lease(time.monotonic() + 30.0)
    executor.serve_node(node.id)
    return node, executor


def begin_a_nap_unrecorded(store: SqliteStore, node_id: int, executor: HostedExecutor) -> Job:
    """A 30 s nap claimed (its start not recorded) and begun by a thread of the worker process."""
    store.submit_jobs([NewJob("nap", json.dumps([30]), "{}", 3)])
    [claimed] = store.claim_jobs(node_id, 1, start=0)
    executor.submit(Work.of(claimed))
    until(lambda: len(executor._marked()) == 1, "the nap begun", WAIT_S)
    return claimed


def test_a_tiny_job_begun_unrecorded_is_charged_when_its_node_dies(
    sqlite_store: SqliteStore, db_path: str
) -> None:
    """The default pool runs tiny jobs before their start is recorded. If the node dies then,
    its worker process records the start: the job goes back charged, with the death counted,
    as any job running under a dead node does (one that kills its node ends quarantined)."""
    node, executor = serving_worker_process(sqlite_store, db_path)
    try:
        sqlite_store.submit_jobs([NewJob("nap", json.dumps([0]), "{}", 3)])
        sqlite_store.submit_jobs([NewJob("nap", json.dumps([30]), "{}", 3) for _ in range(3)])
        [ended] = sqlite_store.claim_jobs(node.id, 1, start=0)
        executor.submit(Work.of(ended))  # it ends, and the node dies before recording that
        until(
            lambda: isinstance(executor.events.get(timeout=WAIT_S), Finished),
            "the short nap to end",
            WAIT_S,
        )
        claimed = sqlite_store.claim_jobs(node.id, 3, start=0)
        assert [j.state for j in claimed] == [JobState.CLAIMED] * 3
        begun, waiting, never = claimed
        executor.submit_many([Work.of(begun), Work.of(waiting)])  # two slots: both begin
        executor.submit(Work.of(never))  # no slot free: it waits in the worker process
        until(lambda: executor.longest_running_s() > 0, "the naps", WAIT_S)
        until(lambda: len(executor._marked()) == 2, "both naps begun", WAIT_S)
        drop_node_ends(executor)

        def settled() -> bool:
            jobs = [sqlite_store.read_job(j.id) for j in claimed]
            return [j.state if j else None for j in jobs] == [
                JobState.RUNNING,
                JobState.RUNNING,
                JobState.QUEUED,
            ]

        until(settled, "the begun naps recorded started, the other given back", WAIT_S)
        for job in (ended, begun, waiting):
            again = sqlite_store.read_job(job.id)
            assert again is not None and again.state is JobState.RUNNING
            assert again.attempts == 1 and again.started_at is not None
        back = sqlite_store.read_job(never.id)
        assert back is not None and back.attempts == 0
    finally:
        executor.shutdown()


def test_a_tiny_job_begun_unrecorded_is_charged_when_its_node_s_lease_runs_out(
    sqlite_store: SqliteStore, db_path: str
) -> None:
    """A node frozen (SIGSTOP) while tiny jobs run unrecorded: its worker process exits as the
    lease is due to run out, recording their start first, so they go back charged, as running
    jobs of a dead node do, rather than run again under the same attempt number."""
    node, executor = serving_worker_process(sqlite_store, db_path)
    try:
        claimed = begin_a_nap_unrecorded(sqlite_store, node.id, executor)
        child = executor._child.process
        executor.renew_lease(time.monotonic() + 0.5)  # and never again: the node froze
        until(lambda: not child.is_alive(), "the worker process to exit", WAIT_S)
        job = sqlite_store.read_job(claimed.id)
        assert job is not None and (job.state, job.attempts) == (JobState.RUNNING, 1)
    finally:
        executor.shutdown()


def test_every_start_not_yet_sent_to_the_worker_process_is_given_back_when_its_node_dies(
    sqlite_store: SqliteStore, db_path: str
) -> None:
    """Two starts recorded and neither written to the worker process's pipe yet (its sender
    busy): the node dies. The datastore knows only the latest start; the older one is in the
    pool's shared record of what it has not sent, so both go back uncharged."""
    node, executor = serving_worker_process(sqlite_store, db_path)
    send_lock = executor._child.send_lock
    try:
        sqlite_store.submit_jobs([NewJob("nap", json.dumps([30]), "{}", 3) for _ in range(4)])
        older = sqlite_store.claim_jobs(node.id, 2, start=2)
        time.sleep(0.01)  # SQLite's clock counts milliseconds: the next start gets its own
        latest = sqlite_store.claim_jobs(node.id, 2, start=2)
        assert [j.state for j in older + latest] == [JobState.RUNNING] * 4
        assert sqlite_store.last_started(node.id) == [j.id for j in latest]
        send_lock.acquire()  # a send in progress: nothing more reaches the worker process
        executor.submit_many([Work.of(j) for j in older])
        executor.submit_many([Work.of(j) for j in latest])
        drop_node_ends(executor)

        def given_back() -> bool:
            jobs = [sqlite_store.read_job(j.id) for j in older + latest]
            return all(j is not None and j.state is JobState.QUEUED for j in jobs)

        until(given_back, "both starts to go back", WAIT_S)
        for job in older + latest:
            again = sqlite_store.read_job(job.id)
            assert again is not None and again.attempts == 0
    finally:
        if send_lock.locked():
            send_lock.release()
        executor.shutdown()


def test_a_tiny_job_begun_unrecorded_is_charged_well_before_its_node_s_lease_runs_out(
    sqlite_store: SqliteStore, db_path: str
) -> None:
    """The start is recorded as the lease runs short, not only in its last moment, which a
    loaded datastore (a new connection to open first) can miss: the job would then go back
    uncharged and run again under the same attempt number."""
    node, executor = serving_worker_process(sqlite_store, db_path)
    try:
        claimed = begin_a_nap_unrecorded(sqlite_store, node.id, executor)
        ends = time.monotonic() + 2.0
        executor.renew_lease(ends)  # and never again: the node froze

        def charged() -> bool:
            job = sqlite_store.read_job(claimed.id)
            return job is not None and (job.state, job.attempts) == (JobState.RUNNING, 1)

        until(charged, "the nap's start to be recorded", WAIT_S)
        assert time.monotonic() < ends - 0.4, "recorded only as the lease ran out"
    finally:
        executor.shutdown()


@pytest.mark.parametrize("pool", ["thread", "process"])
def test_a_give_back_slower_than_what_was_left_of_the_lease_still_happens(
    sqlite_store: SqliteStore, db_path: str, pool: str
) -> None:
    """The fault suite found jobs charged an attempt they never ran: their node was killed
    with under a second of its lease left, and its worker process, slowed by the loaded
    machine, reached the datastore only after that moment, at which its give-back gave up.
    Nobody had declared the node dead yet, so a late give-back still spares those jobs: the
    datastore is held locked here past the lease's end, and the give-back waits for it."""
    node = sqlite_store.register_node("n", "host", 1, 2, ["nap"], 30.0)
    assert sqlite_store.set_node_state(node.id, node.state, node.state.WAITING)
    executor = executor_for(pool, db_path)
    locker = sqlite3.connect(db_path, isolation_level=None, check_same_thread=False)
    try:
        if isinstance(executor, HostedExecutor):
            assert executor.wait_started(WAIT_S)
        executor.serve_node(node.id)
        sqlite_store.submit_jobs([NewJob("nap", json.dumps([30]), "{}", 3) for _ in range(2)])
        started = sqlite_store.claim_jobs(node.id, 2, start=2)
        assert [j.state for j in started] == [JobState.RUNNING] * 2
        lease_ends = time.monotonic() + 2.5  # time to see the node go, even on a loaded machine
        executor.renew_lease(lease_ends)
        locker.execute("BEGIN EXCLUSIVE")  # every write waits, as on a loaded machine
        drop_node_ends(executor)
        held_until = lease_ends + 1.0
        threading.Timer(held_until - time.monotonic(), lambda: locker.execute("COMMIT")).start()

        def given_back() -> bool:
            jobs = [sqlite_store.read_job(j.id) for j in started]
            return all(j is not None and j.state is JobState.QUEUED for j in jobs)

        until(given_back, "the started jobs to go back once the datastore answers", WAIT_S)
        assert time.monotonic() > held_until
        for job in started:
            again = sqlite_store.read_job(job.id)
            assert again is not None and again.attempts == 0
    finally:
        executor.shutdown()
        locker.close()
