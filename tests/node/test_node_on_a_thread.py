"""Real nodes on threads (`Node.start`/`stop`) over a real SQLite file: stopping, pausing, and a
stalled node that is declared dead and comes back as a new one."""

from __future__ import annotations

import json
from collections.abc import Callable

from shoal.model import JobState, NewJob, NodeState
from shoal.node import Node
from shoal.store.sqlite import SqliteStore

from steered import StallingStore, Steered, until


def submit(store: SqliteStore, count: int = 1, max_attempts: int = 1) -> list[int]:
    return store.submit_jobs([NewJob("hold", "[]", "{}", max_attempts=max_attempts)] * count)


def state_of(store: SqliteStore, node: Node) -> NodeState | None:
    record = store.read_node(node.node_id)
    return record.state if record else None


def running_under(store: SqliteStore, steered: Steered, node: Node, count: int) -> list[int]:
    """Wait until `count` jobs run under `node`, each started by a worker (a stop or a pause
    gives back what no worker has started); return their ids."""

    def started() -> list[int] | None:
        attempts = sorted(store.running_attempts(node.node_id))
        if len(attempts) != count or not steered.have_started(attempts):
            return None
        return [job_id for job_id, _ in attempts]

    return until(started, f"{count} jobs running under {node.config.name}")


def test_a_started_node_registers_runs_jobs_and_records_them(
    make_node: Callable[..., Node], sqlite_store: SqliteStore, steered: Steered
):
    node = make_node("alpha").start()
    until(lambda: state_of(sqlite_store, node) is NodeState.WAITING, "alpha waiting")
    [job_id] = submit(sqlite_store)
    running_under(sqlite_store, steered, node, 1)
    steered.report(job_id, 0.5, "halfway")
    until(lambda: sqlite_store.read_job(job_id).progress == 0.5, "progress written")  # type: ignore[union-attr]
    steered.succeed(job_id, {"ok": True})
    job = until(
        lambda: (j := sqlite_store.read_job(job_id)) and j.state is JobState.SUCCEEDED and j,
        "the outcome written",
    )
    assert json.loads(job.result_json or "") == {"ok": True}
    assert job.claimer == node.node_id
    assert node.stop() == 0
    assert state_of(sqlite_store, node) is NodeState.DEAD


def test_stop_drains_in_flight_jobs_then_hands_the_section_over(
    make_node: Callable[..., Node], sqlite_store: SqliteStore, steered: Steered
):
    alpha = make_node("alpha").start()
    until(lambda: state_of(sqlite_store, alpha) is NodeState.WAITING, "alpha waiting")
    first, second = submit(sqlite_store, 2)  # partitions 1 and 2: alpha's, before and after
    running_under(sqlite_store, steered, alpha, 2)
    beta = make_node("beta").start()
    until(lambda: state_of(sqlite_store, beta) is NodeState.WAITING, "beta waiting")

    alpha.stop(wait=False)
    until(lambda: alpha.loop is not None and alpha.loop.drain_deadline is not None, "draining")
    [later] = submit(sqlite_store)  # partition 3, still alpha's while it drains
    assert alpha.exit_code is None and state_of(sqlite_store, alpha) is NodeState.WORKING
    steered.succeed(first)
    steered.succeed(second)

    assert alpha.stop() == 0  # already stopping: this only waits for the drain to end
    assert state_of(sqlite_store, alpha) is NodeState.DEAD
    for job_id in (first, second):
        assert sqlite_store.read_job(job_id).state is JobState.SUCCEEDED  # type: ignore[union-attr]
    everything = tuple(range(sqlite_store.read_cluster().partitions))
    until(
        lambda: (r := sqlite_store.read_node(beta.node_id)) and r.section == everything,
        "beta owning every partition",
    )
    running_under(sqlite_store, steered, beta, 1)
    assert sqlite_store.read_job(later).claimer == beta.node_id  # type: ignore[union-attr]


def test_a_second_stop_releases_in_flight_jobs_at_once(
    make_node: Callable[..., Node], sqlite_store: SqliteStore, steered: Steered
):
    node = make_node("alpha", grace_s=60.0).start()
    [job_id] = submit(sqlite_store)
    running_under(sqlite_store, steered, node, 1)

    node.request_stop()
    node.request_stop()  # the second request: no waiting out the 60 s grace
    assert node.stop() == 0

    job = sqlite_store.read_job(job_id)
    assert job is not None and job.state is JobState.QUEUED and job.claimer is None
    assert state_of(sqlite_store, node) is NodeState.DEAD


def test_pause_drains_then_resume_claims_again(
    make_node: Callable[..., Node], sqlite_store: SqliteStore, steered: Steered
):
    node = make_node("alpha").start()
    [held] = submit(sqlite_store)
    running_under(sqlite_store, steered, node, 1)

    sqlite_store.request_pause(str(node.node_id), True)
    until(lambda: node.loop is not None and node.loop.draining, "the pause seen")
    [waiting] = submit(sqlite_store)
    assert state_of(sqlite_store, node) is NodeState.WORKING  # draining, not paused yet
    steered.succeed(held)
    until(lambda: state_of(sqlite_store, node) is NodeState.PAUSED, "alpha paused")
    assert sqlite_store.read_job(waiting).state is JobState.QUEUED  # type: ignore[union-attr]

    sqlite_store.request_pause(str(node.node_id), False)
    running_under(sqlite_store, steered, node, 1)
    assert sqlite_store.read_job(waiting).claimer == node.node_id  # type: ignore[union-attr]
    assert state_of(sqlite_store, node) is NodeState.WORKING
    events = [
        (e.from_state, e.to_state)
        for e in sqlite_store.read_history(0, sqlite_store.now() + 1)
        if e.node_id == node.node_id and e.to_state is not None
    ]
    assert (NodeState.WORKING, NodeState.PAUSED) in events
    assert (NodeState.PAUSED, NodeState.WAITING) in events


def test_a_stalled_node_declared_dead_registers_again_as_a_new_node(
    make_node: Callable[..., Node], sqlite_store: SqliteStore, steered: Steered, db_path: str
):
    stalling = StallingStore(db_path)
    node = make_node("alpha", store=stalling, lease_s=0.5, heartbeat_s=0.05).start()
    [job_id] = submit(sqlite_store, max_attempts=2)
    running_under(sqlite_store, steered, node, 1)
    first_id = node.node_id

    stalling.running.clear()  # the node's next heartbeat hangs; its lease runs out
    until(lambda: first_id in sqlite_store.mark_dead_nodes(), "the lease to expire")
    stalling.running.set()

    until(
        lambda: (
            node.node_id != first_id
            and state_of(sqlite_store, node) in (NodeState.WAITING, NodeState.WORKING)
        ),
        "alpha registered again",
    )
    old = sqlite_store.read_node(first_id)
    assert old is not None and old.state is NodeState.DEAD
    # The requeued job is claimed again, by the new registration, as a second attempt.
    until(lambda: sqlite_store.running_attempts(node.node_id) == [(job_id, 2)], "reclaimed")
    steered.succeed(job_id)
    until(
        lambda: sqlite_store.read_job(job_id).state is JobState.SUCCEEDED,  # type: ignore[union-attr]
        "the second attempt recorded",
    )
    assert node.stop() == 0
    stalling.close()


def test_a_node_is_a_context_manager(
    make_node: Callable[..., Node], sqlite_store: SqliteStore, steered: Steered
):
    with make_node("alpha") as node:
        [job_id] = submit(sqlite_store)
        running_under(sqlite_store, steered, node, 1)
        steered.succeed(job_id)
        until(lambda: not sqlite_store.running_attempts(node.node_id), "the job done")
    assert node.exit_code == 0
    assert state_of(sqlite_store, node) is NodeState.DEAD


def test_a_taken_name_ends_the_node_with_exit_code_2(
    make_node: Callable[..., Node], sqlite_store: SqliteStore
):
    first = make_node("alpha").start()
    until(lambda: state_of(sqlite_store, first) is NodeState.WAITING, "the first alpha")
    assert make_node("alpha").run() == 2
