"""Conformance, cancelling: a queued job ends cancelled at once; a running one gets a request its
node reads, and ends cancelled however its attempt ends, fenced and counted like any outcome.
"""

from __future__ import annotations

import threading

import pytest
from conformance import new_jobs, start_node, until
from test_counts import assert_counts_match

from shoal.model import CancelResult, Job, JobState, NodeState, Outcome
from shoal.store import Store, open_store
from shoal.store.texts import CANCEL_FINISHED_ANYWAY, CANCELLED_QUEUED, CANCELLED_RUNNING


def running_job(store: Store, name: str = "a", lease_s: float = 30.0) -> tuple[int, Job]:
    """A node (its id) and the one job it claimed."""
    node = start_node(store, name, lease_s)
    store.submit_jobs(new_jobs(1))
    [job] = store.claim_jobs(node.id, 1)
    return node.id, job


def read(store: Store, job_id: int) -> Job:
    job = store.read_job(job_id)
    assert job is not None
    return job


def test_cancel_of_a_queued_job_ends_it_at_once_saying_who_asked(store: Store) -> None:
    [job_id] = store.submit_jobs(new_jobs(1))
    assert store.cancel_job(job_id, by="ops@host") is CancelResult.CANCELLED
    job = read(store, job_id)
    assert job.state is JobState.CANCELLED and job.error == CANCELLED_QUEUED
    assert job.cancel_requested_by == "ops@host" and job.finished_at is not None
    assert job.cancel_requested_at == pytest.approx(store.now(), abs=5)
    assert_counts_match(store, "queued job cancelled")


def test_cancel_of_a_running_job_records_a_request_only_its_node_reads(store: Store) -> None:
    node_id, job = running_job(store)
    other = start_node(store, "b")
    assert store.read_cancel_requests(node_id) == []
    assert store.cancel_job(job.id, by="ops") is CancelResult.REQUESTED
    seen = read(store, job.id)
    assert seen.state is JobState.RUNNING and seen.cancel_requested_by == "ops"
    [request] = store.read_cancel_requests(node_id)
    assert (request.job_id, request.attempt, request.requested_by) == (job.id, 1, "ops")
    assert request.requested_at == seen.cancel_requested_at
    assert store.read_cancel_requests(other.id) == []
    again = store.cancel_job(job.id, by="someone else")
    assert again is CancelResult.ALREADY_REQUESTED and not again
    assert read(store, job.id).cancel_requested_by == "ops"  # the first request stands
    assert_counts_match(store, "cancel requested")


OUTCOMES = {
    "success": lambda j: Outcome(j.id, j.attempts, True, '"done"'),
    "retry": lambda j: Outcome(j.id, j.attempts, False, error="E: x", retry_in_s=0.0),
    "failure": lambda j: Outcome(j.id, j.attempts, False, error="E: x", traceback="tb"),
}


@pytest.mark.parametrize("kind", sorted(OUTCOMES))
def test_a_running_job_asked_to_cancel_ends_cancelled_whatever_its_outcome(
    store: Store, kind: str
) -> None:
    node_id, job = running_job(store)
    assert store.cancel_job(job.id)
    assert store.finish_jobs(node_id, [OUTCOMES[kind](job)]) == [True]
    ended = read(store, job.id)
    assert ended.state is JobState.CANCELLED and ended.finished_at is not None
    assert ended.result is None and ended.attempts == 1
    how = CANCEL_FINISHED_ANYWAY if kind == "success" else "E: x"
    assert ended.error == CANCELLED_RUNNING + how
    assert store.claim_jobs(node_id, 10) == []  # never retried
    assert store.read_cancel_requests(node_id) == []
    node = store.read_node(node_id)
    assert node is not None and (node.processed, node.failed) == (1, 1)
    assert_counts_match(store, f"cancelled job finished with a {kind}")


def test_the_outcome_of_a_job_asked_to_cancel_is_fenced(store: Store) -> None:
    node_id, job = running_job(store)
    other = start_node(store, "b")
    assert store.cancel_job(job.id)
    stale = Outcome(job.id, job.attempts + 1, False, error="stale")
    assert store.finish_jobs(node_id, [stale]) == [False]
    assert store.finish_jobs(other.id, [Outcome(job.id, 1, True, "1")]) == [False]
    assert read(store, job.id).state is JobState.RUNNING
    assert store.finish_jobs(node_id, [Outcome(job.id, 1, False, error="Cancelled")]) == [True]
    assert store.finish_jobs(node_id, [Outcome(job.id, 1, True, "1")]) == [False]
    assert read(store, job.id).error == CANCELLED_RUNNING + "Cancelled"
    assert_counts_match(store, "fenced")


def test_only_the_jobs_asked_to_cancel_of_a_batch_end_cancelled(store: Store) -> None:
    node = start_node(store, "a")
    store.submit_jobs(new_jobs(3))
    jobs = store.claim_jobs(node.id, 3)
    assert store.cancel_job(jobs[1].id)
    done = store.finish_jobs(node.id, [Outcome(j.id, 1, True, "7") for j in jobs])
    assert done == [True, True, True]
    states = [read(store, j.id).state for j in jobs]
    assert states == [JobState.SUCCEEDED, JobState.CANCELLED, JobState.SUCCEEDED]
    assert_counts_match(store, "batch")


@pytest.mark.parametrize("state", [JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED])
def test_cancel_of_a_job_that_ended_changes_nothing(store: Store, state: JobState) -> None:
    node_id, job = running_job(store)
    if state is JobState.CANCELLED:
        assert store.cancel_job(job.id)
    ok = state is JobState.SUCCEEDED
    store.finish_jobs(node_id, [Outcome(job.id, 1, ok, "1" if ok else None, error="E")])
    before = read(store, job.id)
    assert before.state is state
    result = store.cancel_job(job.id, by="late")
    assert result is CancelResult.FINISHED and not result
    assert read(store, job.id) == before
    assert_counts_match(store, f"cancel of a {state.value} job")


def test_cancel_of_an_unknown_job_says_so(store: Store) -> None:
    [job_id] = store.submit_jobs(new_jobs(1))
    for missing in (job_id + 1000, 0, -1, 2**63):
        assert store.cancel_job(missing) is CancelResult.NOT_FOUND
    assert read(store, job_id).state is JobState.QUEUED


def test_a_released_job_asked_to_cancel_ends_cancelled_not_queued(store: Store) -> None:
    node = start_node(store, "a")
    store.submit_jobs(new_jobs(2))
    asked, other = store.claim_jobs(node.id, 2)
    assert store.cancel_job(asked.id)
    assert store.release_jobs(node.id, [asked.id, other.id]) == 2
    ended = read(store, asked.id)
    assert ended.state is JobState.CANCELLED and ended.finished_at is not None
    assert (ended.error or "").startswith(CANCELLED_RUNNING)
    assert read(store, other.id).state is JobState.QUEUED
    assert [j.id for j in store.claim_jobs(node.id, 10)] == [other.id]
    assert_counts_match(store, "released")


def test_a_dead_nodes_job_asked_to_cancel_ends_cancelled_not_requeued(store: Store) -> None:
    node_id, job = running_job(store, lease_s=0.3)
    survivor = start_node(store, "b")
    assert store.cancel_job(job.id)
    assert until(store.mark_dead_nodes) == [node_id]
    ended = read(store, job.id)
    assert ended.state is JobState.CANCELLED
    assert (ended.error or "").startswith(CANCELLED_RUNNING) and "died" in (ended.error or "")
    assert store.claim_jobs(survivor.id, 10) == []
    assert_counts_match(store, "dead node")


def test_a_stopped_nodes_job_asked_to_cancel_ends_cancelled(store: Store) -> None:
    node_id, job = running_job(store)
    assert store.cancel_job(job.id)
    assert store.set_node_state(node_id, NodeState.WORKING, NodeState.DEAD, "stopped")
    assert read(store, job.id).state is JobState.CANCELLED
    assert_counts_match(store, "stopped node")


def test_a_cancel_racing_an_outcome_never_leaves_a_requested_job_succeeded(
    store: Store, db_url: str
) -> None:
    node = start_node(store, "a")
    store.submit_jobs(new_jobs(40))
    jobs = store.claim_jobs(node.id, 40)
    answers: dict[int, CancelResult] = {}
    canceller = open_store(db_url)  # its own connection, as a `shoal cancel` has
    start = threading.Barrier(2)

    def cancel_all() -> None:
        start.wait()
        for job in reversed(jobs):
            answers[job.id] = canceller.cancel_job(job.id)

    thread = threading.Thread(target=cancel_all)
    thread.start()
    start.wait()
    for job in jobs:
        assert store.finish_jobs(node.id, [Outcome(job.id, 1, True, "1")]) == [True]
    thread.join()
    canceller.close()
    for job in jobs:
        state = read(store, job.id).state
        expected = JobState.SUCCEEDED if answers[job.id] is CancelResult.FINISHED else None
        assert answers[job.id] in (CancelResult.FINISHED, CancelResult.REQUESTED)
        assert state is (expected or JobState.CANCELLED), (job.id, answers[job.id])
    assert_counts_match(store, "race")


def test_a_cancel_racing_a_claim_either_cancels_or_asks_the_claimer(
    store: Store, db_url: str
) -> None:
    node = start_node(store, "a")
    ids = store.submit_jobs(new_jobs(60))
    answers: dict[int, CancelResult] = {}
    canceller = open_store(db_url)
    start = threading.Barrier(2)

    def cancel_all() -> None:
        start.wait()
        for job_id in ids:
            answers[job_id] = canceller.cancel_job(job_id)

    thread = threading.Thread(target=cancel_all)
    thread.start()
    start.wait()
    claimed = {j.id for _ in range(30) for j in store.claim_jobs(node.id, 2)}
    thread.join()
    canceller.close()
    requested = {r.job_id for r in store.read_cancel_requests(node.id)}
    for job_id in ids:
        job = read(store, job_id)
        if answers[job_id] is CancelResult.CANCELLED:
            assert job.state is JobState.CANCELLED and job_id not in claimed
        else:
            assert answers[job_id] is CancelResult.REQUESTED, answers[job_id]
            assert job.state is JobState.RUNNING and job_id in claimed and job_id in requested
    assert_counts_match(store, "cancels racing claims")
