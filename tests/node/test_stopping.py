"""Stopping in-process nodes: waits that a signal cannot turn endless, and several nodes asked
to stop at the same moment, each of which leaves."""

from __future__ import annotations

import signal
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from types import FrameType

import pytest

from shoal.model import JobState, NewJob, NodeState
from shoal.node import Node
from shoal.node.lifecycle import LEAVE_MARGIN_S
from shoal.store.sqlite import SqliteStore

from steered import Steered, until


class StuckWait(Exception):
    """Raised by the safety timer: the wait under test did not end by itself."""


@pytest.fixture
def slow_signal_handler() -> Iterator[Callable[[], None]]:
    """Arms a SIGALRM 10 ms ahead whose handler runs for 50 ms and puts nothing anywhere (as a
    stop handler that logs before it wakes the loop); a second alarm 2 s later raises
    StuckWait, so that a wait that never ends fails the test instead of hanging it."""
    calls = []

    def on_alarm(signum: int, frame: FrameType | None) -> None:
        calls.append(signum)
        if len(calls) > 1:
            raise StuckWait
        time.sleep(0.05)
        signal.setitimer(signal.ITIMER_REAL, 2.0)

    previous = signal.signal(signal.SIGALRM, on_alarm)
    try:
        yield lambda: signal.setitimer(signal.ITIMER_REAL, 0.01)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def test_an_idle_wait_ends_even_when_a_signal_handler_outlasts_it(
    make_node: Callable[..., Node], slow_signal_handler: Callable[[], None]
) -> None:
    node = make_node("alpha")
    while node.loop is None:
        node.step(time.monotonic())  # registers
    started = time.monotonic()
    slow_signal_handler()
    node.wait(0.02)  # interrupted by the alarm; its handler returns after the wait's deadline
    assert time.monotonic() - started < 1.0


def stop_three_together(make_node: Callable[..., Node], store: SqliteStore, prefix: str) -> None:
    nodes = [make_node(f"{prefix}-{i}").start() for i in range(3)]
    until(lambda: all(n.state is NodeState.WAITING for n in nodes), "three nodes waiting")
    go = threading.Barrier(3)

    def stop(node: Node) -> None:
        go.wait()
        node.request_stop()

    for node in nodes:
        threading.Thread(target=stop, args=(node,)).start()
    until(lambda: all(n.exit_code == 0 for n in nodes), "every node left", timeout_s=20)
    for node in nodes:
        record = store.read_node(node.node_id)
        assert record is not None and record.state is NodeState.DEAD


def test_nodes_stopped_together_all_leave(
    make_node: Callable[..., Node], sqlite_store: SqliteStore
) -> None:
    for round_number in range(8):
        stop_three_together(make_node, sqlite_store, f"round{round_number}")


def test_a_long_drain_keeps_the_lease(
    make_node: Callable[..., Node], sqlite_store: SqliteStore, steered: Steered
) -> None:
    node = make_node("alpha", lease_s=1.0, grace_s=60.0).start()
    [job_id] = sqlite_store.submit_jobs([NewJob("hold", "[]", "{}", max_attempts=1)])
    until(lambda: steered.have_started([(job_id, 1)]), "the job started")
    stopped_at = sqlite_store.now()
    node.request_stop()

    def beat_well_after_the_stop() -> bool:
        record = sqlite_store.read_node(node.node_id)
        assert record is not None and record.state is not NodeState.DEAD
        return record.heartbeat_at > stopped_at + 3 * node.config.lease_s

    until(beat_well_after_the_stop, "heartbeats three leases into the drain")
    assert node.exit_code is None  # still draining
    assert sqlite_store.running_attempts(node.node_id) == [(job_id, 1)]
    steered.succeed(job_id)
    assert node.stop() == 0
    assert sqlite_store.read_job(job_id).state is JobState.SUCCEEDED  # type: ignore[union-attr]


def test_leaving_ends_in_time_while_the_sqlite_file_stays_locked(
    make_node: Callable[..., Node], sqlite_store: SqliteStore, steered: Steered, db_path: str
) -> None:
    node = make_node("alpha").start()
    [job_id] = sqlite_store.submit_jobs([NewJob("hold", "[]", "{}", max_attempts=1)])
    until(lambda: steered.have_started([(job_id, 1)]), "the job started")
    blocker = sqlite3.connect(db_path, isolation_level=None, check_same_thread=False)
    blocker.execute("BEGIN EXCLUSIVE")  # a writer that never lets go (a frozen process, say)
    try:
        began = time.monotonic()
        node.request_stop(grace_s=0.2)
        until(lambda: node.exit_code is not None, "the node gave up", timeout_s=30)
        assert time.monotonic() - began < 0.2 + LEAVE_MARGIN_S + 1.5
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
