"""Old and new nodes side by side: jobs of a task only the new nodes register run there, wherever
their partition lives, and while no live node registers the task its jobs wait queued."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from shoal.model import JobState, NewJob
from shoal.node import Node, NodeConfig
from shoal.store.sqlite import SqliteStore

from steered import Steered, until

FAST = {"heartbeat_s": 0.02, "lease_s": 30.0, "poll_s": 0.005, "stranded_check_s": 0.05}


@pytest.fixture
def nodes(sqlite_store: SqliteStore, steered: Steered) -> Iterator[dict[str, Node]]:
    steered.release_all()  # every steered attempt returns at once
    made: dict[str, Node] = {}

    def start(name: str, tasks: list[str]) -> Node:
        config = NodeConfig(name=name, pool="inline", **FAST)  # type: ignore[arg-type]
        made[name] = Node(steered.app(tasks), sqlite_store, config).start()
        until(lambda: made[name].loop is not None, f"{name} registered")
        return made[name]

    start("old", ["hold"])
    start("new", ["hold", "newtask"])
    yield made
    for node in made.values():
        node.stop(grace_s=0.0)


def test_jobs_of_a_new_task_run_on_the_node_that_has_it(
    nodes: dict[str, Node], sqlite_store: SqliteStore
) -> None:
    old, new = nodes["old"], nodes["new"]
    until(lambda: all(n.section for n in (old, new)), "both nodes own a section")
    ids = sqlite_store.submit_jobs([NewJob("newtask", "[]", "{}", max_attempts=1)] * 20)
    owners = sqlite_store.read_cluster().owners
    assert any(owners[i % len(owners)] == old.node_id for i in ids)  # some land with old

    def all_done() -> bool:
        jobs = [sqlite_store.read_job(i) for i in ids]
        return all(j is not None and j.state.is_final for j in jobs)

    until(all_done, "every newtask job to finish")
    jobs = [sqlite_store.read_job(i) for i in ids]
    assert {(j.state, j.claimer, j.attempts) for j in jobs if j} == {
        (JobState.SUCCEEDED, new.node_id, 1)
    }


def test_a_job_whose_task_no_live_node_has_waits_queued_until_one_does(
    nodes: dict[str, Node], sqlite_store: SqliteStore, steered: Steered
) -> None:
    nodes["new"].stop(grace_s=0.0)
    [job_id] = sqlite_store.submit_jobs([NewJob("newtask", "[]", "{}", max_attempts=1)])
    [probe] = sqlite_store.submit_jobs([NewJob("hold", "[]", "{}", max_attempts=1)])

    def probe_done() -> bool:
        job = sqlite_store.read_job(probe)
        return job is not None and job.state is JobState.SUCCEEDED

    until(probe_done, "the old node to run a job it has")  # it has looked at its section
    job = sqlite_store.read_job(job_id)
    assert job is not None and job.state is JobState.QUEUED and job.attempts == 0
    again = Node(
        steered.app(["hold", "newtask"]),
        sqlite_store,
        NodeConfig(name="new-again", pool="inline", **FAST),  # type: ignore[arg-type]
    ).start()
    try:

        def done() -> bool:
            found = sqlite_store.read_job(job_id)
            return found is not None and found.state is JobState.SUCCEEDED

        until(done, "the new node to run it")
    finally:
        again.stop(grace_s=0.0)
