"""Conformance, quarantine: a job whose nodes keep dying under it is failed, not passed on.

Each time a node's lease expires while a job runs on it, the requeue counts a death on that job
(unless the node ran its tasks in a worker process, where they could not have killed it); at
the cluster's `quarantine_after` deaths (2 unless `initialize` sets another) the job ends
failed with an error that starts "quarantined" instead of reaching the next node. A clean stop
counts no death. The counters stay exact through every step.
"""

from __future__ import annotations

from collections import Counter

import pytest
from conformance import new_jobs, start_node, until

from shoal.errors import ConfigError
from shoal.model import Job, JobFilter, JobState, NodeState
from shoal.store import QUARANTINE_AFTER, Store


def assert_counts_exact(store: Store) -> None:
    direct = Counter((j.task, j.state) for j in store.list_jobs(JobFilter(), limit=10_000))
    assert store.count_jobs_by_task() == {k: n for k, n in direct.items() if n}


def die_running(store: Store, name: str, job_id: int, isolated: bool = False) -> None:
    """A node with a short lease claims `job_id` (with whatever else it takes) and dies."""
    node = store.register_node(name, "host", 1, 4, ["t"], 0.3, isolated=isolated)
    assert store.set_node_state(node.id, NodeState.INITIALIZING, NodeState.WAITING)
    claimed = store.claim_jobs(node.id, 100)
    assert job_id in {j.id for j in claimed}
    assert until(store.mark_dead_nodes) == [node.id]
    assert_counts_exact(store)


def read(store: Store, job_id: int) -> Job:
    job = store.read_job(job_id)
    assert job is not None
    return job


def test_job_on_nodes_that_died_twice_is_quarantined_with_the_reason(store: Store) -> None:
    assert QUARANTINE_AFTER == 2
    [job_id] = store.submit_jobs(new_jobs(1, max_attempts=5))
    die_running(store, "a", job_id)
    first = read(store, job_id)
    assert first.state is JobState.QUEUED and first.attempts == 1
    assert first.error == "node a died (lease expired) during attempt 1; requeued"
    die_running(store, "b", job_id)
    job = read(store, job_id)
    assert job.state is JobState.FAILED and job.attempts == 2
    assert job.finished_at is not None
    error = job.error or ""
    assert error.startswith("quarantined (node deaths while it ran: 2, most likely caused by it;")
    assert "the last: node b died (lease expired) during attempt 2 of 5" in error, error
    assert store.count_jobs_by_task() == {("t", JobState.FAILED): 1}


def test_a_clean_stop_counts_no_death(store: Store) -> None:
    [job_id] = store.submit_jobs(new_jobs(1, max_attempts=5))
    for name in ("a", "b", "c"):
        node = start_node(store, name)
        assert [j.id for j in store.claim_jobs(node.id, 1)] == [job_id]
        assert store.set_node_state(node.id, NodeState.WORKING, NodeState.DEAD, "stopped")
        assert read(store, job_id).state is JobState.QUEUED
    die_running(store, "d", job_id)  # the first death: requeued, not quarantined
    job = read(store, job_id)
    assert job.state is JobState.QUEUED and job.attempts == 4
    assert_counts_exact(store)


def test_the_death_of_a_node_whose_tasks_ran_in_a_worker_process_counts_no_death(
    store: Store,
) -> None:
    # Such a node's tasks cannot have killed it: it was lost for some other reason.
    [job_id] = store.submit_jobs(new_jobs(1, max_attempts=5))
    for name in ("a", "b", "c"):
        die_running(store, name, job_id, isolated=True)
    job = read(store, job_id)
    assert job.state is JobState.QUEUED and job.attempts == 3
    die_running(store, "d", job_id)
    assert read(store, job_id).state is JobState.QUEUED  # the first death that counts
    die_running(store, "e", job_id)
    assert (read(store, job_id).error or "").startswith("quarantined (node deaths while it ran: 2")


def test_only_the_jobs_that_were_running_count_a_death(store: Store) -> None:
    ids = store.submit_jobs(new_jobs(6, max_attempts=5))
    die_running(store, "a", ids[0])  # all six were running on a
    b = start_node(store, "b", lease_s=0.3)
    claimed = store.claim_jobs(b.id, 1)  # b takes only the oldest
    assert [j.id for j in claimed] == [ids[0]]
    assert until(store.mark_dead_nodes) == [b.id]
    states = {i: read(store, i).state for i in ids}
    assert states == {ids[0]: JobState.FAILED} | {i: JobState.QUEUED for i in ids[1:]}
    assert_counts_exact(store)


def test_quarantine_after_is_set_by_initialize(store: Store) -> None:
    store.initialize(quarantine_after=1)
    [job_id] = store.submit_jobs(new_jobs(1, max_attempts=5))
    die_running(store, "a", job_id)
    job = read(store, job_id)
    assert job.state is JobState.FAILED
    assert (job.error or "").startswith("quarantined (node deaths while it ran: 1,")
    store.initialize(quarantine_after=3)
    [other] = store.submit_jobs(new_jobs(1, max_attempts=5))
    for name in ("b", "c"):
        die_running(store, name, other)
        assert read(store, other).state is JobState.QUEUED
    die_running(store, "d", other)
    assert read(store, other).state is JobState.FAILED
    with pytest.raises(ConfigError, match="at least 1"):
        store.initialize(quarantine_after=0)


def test_the_reason_in_a_quarantine_stays_as_given(store: Store) -> None:
    # A node name that looks like the marks the message is filled in by stays as it was.
    store.initialize(quarantine_after=1)
    [job_id] = store.submit_jobs(new_jobs(1, max_attempts=5))
    die_running(store, "n{deaths}{attempt}", job_id)
    error = read(store, job_id).error or ""
    assert "the last: node n{deaths}{attempt} died (lease expired) during attempt 1 of 5)" in error
