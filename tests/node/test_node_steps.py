"""A real node stepped by the test (`Node.step(now)` with a `now` the test picks): idle turns
wait instead of spinning, a node that misses its heartbeats is declared dead and registers
again, and reconciling sets right what the datastore has running under the node."""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable

import pytest

from shoal.model import JobState, NewJob, NodeState
from shoal.node import Node, NodeConfig
from shoal.node.services import Housekeeping
from shoal.store.sqlite import SqliteStore

from steered import Steered, until

PARTITIONS = 8  # as the sqlite_store fixture makes it
T0 = 1000.0  # the node's monotonic clock, as the test drives it


def submit(store: SqliteStore, max_attempts: int = 1) -> int:
    [job_id] = store.submit_jobs([NewJob("hold", "[]", "{}", max_attempts=max_attempts)])
    return job_id


def turn_until(node: Node, now: float, condition: Callable[[], object], what: str) -> None:
    """Step at `now` (waiting on the node's events between turns) until `condition` holds."""

    def turned() -> object:
        node.wait(node.step(now))
        return condition()

    until(turned, what)


def state_of(store: SqliteStore, job_id: int) -> JobState | None:
    job = store.read_job(job_id)
    return job.state if job else None


def test_an_idle_turn_says_to_wait_the_poll_interval(make_node: Callable[..., Node]):
    # SQLite wakes its nodes (a doorbell), so an idle turn waits the fallback poll of a store
    # with wake-ups.
    node = make_node("alpha", notified_poll_s=0.25, heartbeat_s=1.0, lease_s=3.0)
    assert node.step(T0) == 0.0  # registers; the next turn follows at once
    assert node.state is NodeState.WAITING and node.loop is not None
    assert node.step(T0) == 0.25
    assert node.step(T0 + 0.01) == 0.25


def test_an_idle_turn_waits_no_longer_than_until_its_next_heartbeat(
    make_node: Callable[..., Node],
):
    """The heartbeat then comes on a turn of its own, not on the turn a wake-up for a job
    brings, whose claim would wait for the whole round."""
    node = make_node("alpha", notified_poll_s=1.0, heartbeat_s=0.5, lease_s=3.0)
    node.step(T0)  # registers: the loop's last heartbeat is at T0
    assert node.step(T0 + 0.2) == pytest.approx(0.3)
    assert node.step(T0 + 0.5) == pytest.approx(0.5)  # that turn's heartbeat, then the next
    assert node.loop is not None and node.loop.last_beat == T0 + 0.5


def test_a_node_that_misses_its_heartbeats_is_declared_dead_and_registers_anew(
    make_node: Callable[..., Node], sqlite_store: SqliteStore, db_path: str
):
    node = make_node("alpha", lease_s=0.2, heartbeat_s=0.05)
    node.step(T0)
    first_id, first_loop = node.node_id, node.loop
    job_id = submit(sqlite_store, max_attempts=2)
    node.step(T0)
    assert first_loop is not None and job_id in first_loop.held

    # The test stops stepping: no heartbeats. Another node sees the lease expire.
    other = SqliteStore(db_path)
    until(lambda: first_id in other.mark_dead_nodes(), "the lease to expire")
    other.close()

    node.step(T0 + 1.0)  # the heartbeat is refused: the node abandons its attempts
    assert node.loop is None and node.exit_code is None
    node.step(T0 + 1.0)  # and registers as a new node
    assert node.node_id != first_id and node.loop is not None and node.loop is not first_loop
    assert node.state is NodeState.WAITING
    node.step(T0 + 1.0)
    assert node.loop.held.keys() == {job_id}  # requeued, and claimed again as attempt 2
    assert sqlite_store.running_attempts(node.node_id) == [(job_id, 2)]


def test_an_outcome_the_datastore_lost_is_recorded_again(
    make_node: Callable[..., Node], sqlite_store: SqliteStore, steered: Steered, db_path: str
):
    node = make_node("alpha", reconcile_s=30.0)
    node.step(T0)
    job_id = submit(sqlite_store)
    node.step(T0)
    steered.succeed(job_id, "done")
    turn_until(node, T0, lambda: state_of(sqlite_store, job_id) is JobState.SUCCEEDED, "done")

    # As a failover to a standby that missed the last commit would: the job is running again.
    with sqlite3.connect(db_path) as db:
        db.execute(
            "UPDATE jobs SET state = 'running', result = NULL, finished_at = NULL WHERE id = ?",
            (job_id,),
        )
    assert sqlite_store.running_attempts(node.node_id) == [(job_id, 1)]

    node.step(T0 + 31.0)  # the reconcile is due: the remembered outcome is queued again
    node.step(T0 + 31.0)  # and written
    job = sqlite_store.read_job(job_id)
    assert job is not None and job.state is JobState.SUCCEEDED and job.result_json == '"done"'
    assert sqlite_store.running_attempts(node.node_id) == []


def test_a_job_running_under_the_node_that_it_does_not_hold_is_released(
    make_node: Callable[..., Node],
    sqlite_store: SqliteStore,
    steered: Steered,
    caplog: pytest.LogCaptureFixture,
):
    node = make_node("alpha", reconcile_s=30.0)
    node.step(T0)
    assert node.loop is not None
    job_id = submit(sqlite_store)
    # A claim the node never received (its answer lost on the way back, say).
    [lost] = sqlite_store.claim_jobs(node.node_id, 1)
    assert lost.id == job_id and job_id not in node.loop.held

    with caplog.at_level(logging.WARNING, logger="shoal.node"):
        node.step(T0 + 31.0)  # reconciles, releases the job, then claims it as its own

    assert "released 1 jobs recorded as running here that this node does not hold" in caplog.text
    assert node.loop.held.keys() == {job_id}
    assert sqlite_store.running_attempts(node.node_id) == [(job_id, 1)]
    until(lambda: (job_id, 1) in steered.started, "a worker to start the attempt")


def test_housekeeping_renews_reaps_samples_and_follows_the_section(sqlite_store: SqliteStore):
    def register(name: str, lease_s: float) -> int:
        record = sqlite_store.register_node(name, "host", 1, 4, ["hold"], lease_s)
        assert sqlite_store.set_node_state(record.id, NodeState.INITIALIZING, NodeState.WAITING)
        return record.id

    alive = register("alive", 30.0)
    dying = register("dying", 0.1)
    before = sqlite_store.read_node(alive)
    assert before is not None and len(before.section) == PARTITIONS // 2
    keeper = Housekeeping(sqlite_store, alive, NodeConfig(name="alive"), before.section)

    def reaped() -> bool:
        assert keeper.run_once() is not None
        dead = sqlite_store.read_node(dying)
        return dead is not None and dead.state is NodeState.DEAD

    until(reaped, "the dying node declared dead")
    beat = keeper.run_once()
    assert beat is not None and beat.section == tuple(range(PARTITIONS))
    assert keeper.section == tuple(range(PARTITIONS))
    assert sqlite_store.read_samples(0.0)  # a cluster sample was written along the way

    config = NodeConfig(name="dying", lease_s=0.1, heartbeat_s=0.05)
    assert Housekeeping(sqlite_store, dying, config).run_once() is None


def test_housekeeping_unparks_the_jobs_due_within_two_heartbeats(sqlite_store: SqliteStore):
    record = sqlite_store.register_node("a", "host", 1, 4, ["hold"], 30.0)
    assert sqlite_store.set_node_state(record.id, NodeState.INITIALIZING, NodeState.WAITING)
    soon, later = sqlite_store.submit_jobs(
        [NewJob("hold", "[]", "{}", delay_s=15.0), NewJob("hold", "[]", "{}", delay_s=60.0)]
    )
    parked = "SELECT id FROM jobs WHERE parked = 1 ORDER BY id"
    with sqlite3.connect(sqlite_store.path) as conn:
        assert [r[0] for r in conn.execute(parked)] == [soon, later]
    keeper = Housekeeping(
        sqlite_store, record.id, NodeConfig(name="a", heartbeat_s=10.0, lease_s=30.0)
    )
    assert keeper.run_once() is not None
    with sqlite3.connect(sqlite_store.path) as conn:
        assert [r[0] for r in conn.execute(parked)] == [later]  # due in 15 s, within 2 x 10 s
