"""Conformance, jobs claimed ahead: a claim may start only some of its jobs and hold the rest for
the node's next free workers. Those are `claimed`: not running to anyone who looks, with no
attempt charged and no start stamped, until `start_jobs` starts them; given back, requeued from
a dead node or cancelled, they leave as they were, on every adapter.
"""

from __future__ import annotations

import time

from conformance import new_jobs, start_node, until
from test_counts import assert_counts_match

from shoal.model import CancelResult, JobFilter, JobState, NodeState, Outcome, TaskLimit
from shoal.store import Store

CLAIMS_BY_TASK = True  # PostgreSQL claims both ways (tests/conftest.py)


def test_a_claim_starts_only_the_first_jobs_and_claims_the_rest_ahead(store: Store) -> None:
    node = start_node(store, "a")
    ids = store.submit_jobs(new_jobs(10))
    jobs = store.claim_jobs(node.id, 10, start=3)
    assert [j.id for j in jobs] == ids
    started = [j for j in jobs if j.state is JobState.RUNNING]
    assert [j.id for j in started] == ids[:3]
    assert all(j.attempts == 1 and j.started_at is not None for j in started)
    for job_id in ids[3:]:
        job = store.read_job(job_id)
        assert job is not None and job.state is JobState.CLAIMED
        assert (job.attempts, job.started_at, job.claimer) == (0, None, node.id)
    counts = store.read_cluster().job_counts
    assert counts[JobState.RUNNING] == 3 and counts[JobState.CLAIMED] == 7
    assert len(store.list_jobs(JobFilter(state=JobState.CLAIMED))) == 7
    assert_counts_match(store, "claimed ahead")


def test_starting_claimed_jobs_charges_the_attempt_then(store: Store) -> None:
    node = start_node(store, "a")
    ids = store.submit_jobs(new_jobs(4))
    store.claim_jobs(node.id, 4, start=0)
    before = store.now()
    started = store.start_jobs(node.id, ids[:2])
    assert [j.id for j in started] == ids[:2]
    for job in started:
        assert job.state is JobState.RUNNING and job.attempts == 1
        assert job.started_at is not None and job.started_at >= before - 1
    # Started once: the same call again (its outcome lost, say) returns them as they are.
    again = store.start_jobs(node.id, ids[:2])
    assert [(j.id, j.attempts, j.started_at) for j in again] == [
        (j.id, j.attempts, j.started_at) for j in started
    ]
    assert store.finish_jobs(node.id, [Outcome(ids[0], 1, True, "null")]) == [True]
    # An outcome of a job not started yet is refused: no attempt of it runs.
    assert store.finish_jobs(node.id, [Outcome(ids[2], 1, True, "null")]) == [False]
    assert_counts_match(store, "claimed jobs started")


def test_another_node_cannot_start_or_claim_jobs_claimed_ahead(store: Store) -> None:
    a = start_node(store, "a")
    b = start_node(store, "b")
    ids = store.submit_jobs(new_jobs(300))
    ahead = [j.id for j in store.claim_jobs(a.id, 300, start=0)]
    assert ahead
    assert store.start_jobs(b.id, ahead) == []
    assert not {j.id for j in store.claim_jobs(b.id, 300)} & set(ahead)
    assert set(ahead) <= set(ids)


def test_released_claimed_jobs_are_queued_as_they_were(store: Store) -> None:
    node = start_node(store, "a")
    ids = store.submit_jobs(new_jobs(6))
    store.claim_jobs(node.id, 6, start=2)
    assert store.release_jobs(node.id, ids) == 6
    for job_id in ids:
        job = store.read_job(job_id)
        assert job is not None and job.state is JobState.QUEUED
        assert (job.attempts, job.claimer) == (0, None)
    assert_counts_match(store, "claimed jobs released")
    assert len(store.claim_jobs(node.id, 6)) == 6


def test_a_dead_nodes_claimed_jobs_go_back_uncharged(store: Store) -> None:
    a = start_node(store, "a", lease_s=0.3)
    b = start_node(store, "b")
    store.submit_jobs(new_jobs(40))
    held = store.claim_jobs(a.id, 40, start=1)
    assert len(held) > 1
    until(store.mark_dead_nodes)
    for job in held:
        now = store.read_job(job.id)
        assert now is not None and now.state is JobState.QUEUED
        assert now.attempts == (1 if job.state is JobState.RUNNING else 0)
    assert store.start_jobs(a.id, [j.id for j in held]) == []
    assert_counts_match(store, "a dead node's claimed jobs requeued")
    retaken = {j.id: j for j in store.claim_jobs(b.id, 100)}
    assert {j.id for j in held} <= set(retaken)
    assert all(retaken[j.id].attempts == 1 for j in held if j.state is JobState.CLAIMED)


def test_a_cancel_ends_a_claimed_job_at_once(store: Store) -> None:
    node = start_node(store, "a")
    ids = store.submit_jobs(new_jobs(2))
    store.claim_jobs(node.id, 2, start=1)
    assert store.cancel_job(ids[1], by="ops") is CancelResult.CANCELLED
    job = store.read_job(ids[1])
    assert job is not None and job.state is JobState.CANCELLED and job.attempts == 0
    assert store.start_jobs(node.id, [ids[1]]) == []
    assert_counts_match(store, "a claimed job cancelled")


def test_reconcile_lists_claimed_jobs_with_no_attempt(store: Store) -> None:
    node = start_node(store, "a")
    ids = store.submit_jobs(new_jobs(3))
    store.claim_jobs(node.id, 3, start=1)
    assert store.running_attempts(node.id) == [(ids[0], 1), (ids[1], 0), (ids[2], 0)]


def test_claimed_jobs_hold_their_room_in_the_limits(store: Store) -> None:
    node = store.register_node("a", "host", 1, 4, ["t"], 30.0, [TaskLimit("t", 3, None)])
    assert store.set_node_state(node.id, NodeState.INITIALIZING, NodeState.WAITING)
    ids = store.submit_jobs(new_jobs(6))
    assert len(store.claim_jobs(node.id, 6, start=1)) == 3
    assert store.claim_jobs(node.id, 6) == []
    assert store.release_jobs(node.id, ids[1:3]) == 2  # the two claimed ahead
    assert len(store.claim_jobs(node.id, 6)) == 2
    store.cancel_job(ids[0])
    assert_counts_match(store, "limited claimed jobs")


def test_last_started_lists_the_jobs_of_the_node_s_latest_start(store: Store) -> None:
    a = start_node(store, "a")
    b = start_node(store, "b")
    store.submit_jobs(new_jobs(16))
    assert store.last_started(a.id) == []
    jobs = store.claim_jobs(a.id, 6, start=3)  # three running, three claimed ahead
    running = [j.id for j in jobs if j.state is JobState.RUNNING]
    ahead = [j.id for j in jobs if j.state is JobState.CLAIMED]
    assert len(running) == 3 and len(ahead) == 3
    assert store.last_started(a.id) == running
    time.sleep(0.01)  # SQLite's clock counts milliseconds: a start in the same one shares it
    store.start_jobs(a.id, ahead[:2])
    assert store.last_started(a.id) == ahead[:2]  # the latest start only
    assert store.last_started(b.id) == []
    store.finish_jobs(a.id, [Outcome(ahead[0], 1, True, "null")])
    assert store.last_started(a.id) == [ahead[1]]  # ended ones are no longer running
    # Given back uncharged, as a worker process whose node died does with what never began.
    assert store.release_jobs(a.id, store.last_started(a.id)) == 1
    job = store.read_job(ahead[1])
    assert job is not None and (job.state, job.attempts) == (JobState.QUEUED, 0)
    assert store.last_started(a.id) == running
    assert_counts_match(store, "latest start given back")


def test_an_outcome_records_the_start_of_a_job_that_ran_still_claimed(store: Store) -> None:
    """A tiny job goes to a worker still claimed; its outcome records its start and end."""
    node = start_node(store, "a")
    ids = store.submit_jobs(new_jobs(4))
    store.claim_jobs(node.id, 4, start=0)
    before = store.now()
    outcomes = [
        Outcome(ids[0], 1, True, "42", ran_s=0.5),
        Outcome(ids[1], 1, False, error="boom", ran_s=0.0),  # failed for good
        Outcome(ids[2], 1, False, error="again", retry_in_s=60.0, ran_s=0.0),
    ]
    assert store.finish_jobs(node.id, outcomes) == [True, True, True]
    done = store.read_job(ids[0])
    assert done is not None and (done.state, done.attempts, done.result_json) == (
        JobState.SUCCEEDED,
        1,
        "42",
    )
    assert done.started_at is not None and done.finished_at is not None
    assert 0.4 <= done.finished_at - done.started_at <= 0.6
    assert done.started_at >= before - 1
    failed = store.read_job(ids[1])
    assert failed is not None and (failed.state, failed.attempts) == (JobState.FAILED, 1)
    retried = store.read_job(ids[2])
    assert retried is not None and (retried.state, retried.attempts) == (JobState.QUEUED, 1)
    # The same outcome again (its commit's fate unknown) applies no second time.
    assert store.finish_jobs(node.id, [Outcome(ids[0], 1, True, "42", ran_s=0.5)]) == [False]
    # Without `ran_s` a claimed job's outcome is refused (no attempt of it began), and with it
    # only for the attempt after the one claimed.
    assert store.finish_jobs(node.id, [Outcome(ids[3], 1, True, "null")]) == [False]
    assert store.finish_jobs(node.id, [Outcome(ids[3], 2, True, "null", ran_s=0.1)]) == [False]
    job = store.read_job(ids[3])
    assert job is not None and (job.state, job.attempts) == (JobState.CLAIMED, 0)
    assert_counts_match(store, "starts recorded with outcomes")


def test_an_outcome_recording_a_start_is_fenced_as_any(store: Store) -> None:
    a = start_node(store, "a")
    b = start_node(store, "b")
    ids = store.submit_jobs(new_jobs(3))
    store.claim_jobs(a.id, 3, start=0)
    # Another node's outcome, or one for a job started meanwhile, applies as it should.
    assert store.finish_jobs(b.id, [Outcome(ids[0], 1, True, "null", ran_s=0.1)]) == [False]
    store.start_jobs(a.id, [ids[1]])  # its start recorded while it ran
    assert store.finish_jobs(a.id, [Outcome(ids[1], 1, True, "null", ran_s=0.1)]) == [True]
    job = store.read_job(ids[1])
    assert job is not None and (job.state, job.attempts) == (JobState.SUCCEEDED, 1)
    # Cancelled while claimed (at once, as no start is recorded): the outcome finds nothing.
    assert store.cancel_job(ids[2], by="ops") is CancelResult.CANCELLED
    assert store.finish_jobs(a.id, [Outcome(ids[2], 1, True, "null", ran_s=0.1)]) == [False]
    job = store.read_job(ids[2])
    assert job is not None and (job.state, job.attempts) == (JobState.CANCELLED, 0)
    assert_counts_match(store, "fenced starts with outcomes")


def test_record_begun_charges_only_attempts_still_claimed_under_the_one_before(
    store: Store,
) -> None:
    """What a worker process whose node died records for the attempts it began unrecorded."""
    node = start_node(store, "a")
    ids = store.submit_jobs(new_jobs(4))
    store.claim_jobs(node.id, 4, start=0)
    # ids[1] ended and its outcome was recorded; ids[2] was given back; ids[3] is claimed again
    # for a later attempt than the one begun.
    assert store.finish_jobs(node.id, [Outcome(ids[1], 1, True, "null", ran_s=0.0)]) == [True]
    assert store.release_jobs(node.id, [ids[2]]) == 1
    begun = [(ids[0], 1), (ids[1], 1), (ids[2], 1), (ids[3], 2)]
    assert store.record_begun(node.id, begun) == 1
    assert store.record_begun(node.id, begun) == 0  # again: nothing more
    states = [(j.state, j.attempts) for j in (store.read_job(i) for i in ids) if j is not None]
    assert states == [
        (JobState.RUNNING, 1),
        (JobState.SUCCEEDED, 1),
        (JobState.QUEUED, 0),
        (JobState.CLAIMED, 0),
    ]
    running = store.read_job(ids[0])
    assert running is not None and running.started_at is not None
    assert store.record_begun(start_node(store, "b").id, [(ids[3], 1)]) == 0  # not b's
    assert_counts_match(store, "begun attempts recorded")
