"""Conformance, fencing: writes about a job apply only while the claim (claimer, attempt) holds."""

from __future__ import annotations

from conformance import new_jobs, start_node

from shoal.model import (
    JobState,
    Outcome,
    ProgressUpdate,
)
from shoal.store import Store

# -- fencing ---------------------------------------------------------------------------------


def test_finish_is_fenced_by_claimer_and_attempt(store: Store) -> None:
    a, b = start_node(store, "a"), start_node(store, "b")
    store.submit_jobs(new_jobs(20))
    [job] = store.claim_jobs(a.id, 1)
    wrong = [
        Outcome(job.id, job.attempts + 1, True, "1"),
        Outcome(job.id, job.attempts, True, "1"),
    ]
    assert store.finish_jobs(b.id, wrong[1:]) == [False]
    assert store.finish_jobs(a.id, wrong) == [False, True]
    assert store.finish_jobs(a.id, wrong[1:]) == [False]  # a second outcome never applies
    done = store.read_job(job.id)
    assert done is not None and done.state is JobState.SUCCEEDED and done.result == 1
    assert store.read_node(a.id).processed == 1  # type: ignore[union-attr]


def test_progress_is_fenced(store: Store) -> None:
    node = start_node(store, "a")
    store.submit_jobs(new_jobs(1))
    [job] = store.claim_jobs(node.id, 1)
    updates = [
        ProgressUpdate(job.id, job.attempts, 0.5, "half"),
        ProgressUpdate(job.id, job.attempts + 1, 0.9, "stale"),
    ]
    assert store.record_progress(node.id, updates) == 1
    seen = store.read_job(job.id)
    assert seen is not None and (seen.progress, seen.progress_message) == (0.5, "half")


def test_retry_requeues_with_backoff_and_keeps_the_error(store: Store) -> None:
    node = start_node(store, "a")
    store.submit_jobs(new_jobs(1))
    [job] = store.claim_jobs(node.id, 1)
    retry = Outcome(job.id, 1, False, error="boom", traceback="tb", retry_in_s=3600.0)
    assert store.finish_jobs(node.id, [retry]) == [True]
    again = store.read_job(job.id)
    assert again is not None and again.state is JobState.QUEUED and again.error == "boom"
    assert again.run_after > store.now() + 3000
    assert store.claim_jobs(node.id, 1) == []
    assert store.read_node(node.id).failed == 1  # type: ignore[union-attr]


def test_final_failure_records_error_and_traceback(store: Store) -> None:
    node = start_node(store, "a")
    store.submit_jobs(new_jobs(1))
    [job] = store.claim_jobs(node.id, 1)
    store.finish_jobs(node.id, [Outcome(job.id, 1, False, error="ValueError: x", traceback="T")])
    failed = store.read_job(job.id)
    assert failed is not None and failed.state is JobState.FAILED
    assert (failed.error, failed.traceback) == ("ValueError: x", "T")
    assert failed.finished_at is not None


def test_released_jobs_return_to_queue_without_counting_the_attempt(store: Store) -> None:
    node = start_node(store, "a")
    store.submit_jobs(new_jobs(3))
    claimed = store.claim_jobs(node.id, 3)
    assert store.release_jobs(node.id, [j.id for j in claimed]) == 3
    again = store.claim_jobs(node.id, 3)
    assert [j.attempts for j in again] == [1, 1, 1]


def test_running_attempts_are_what_the_node_holds_and_nothing_else(store: Store) -> None:
    a = start_node(store, "a")
    b = start_node(store, "b")
    store.submit_jobs(new_jobs(6))
    mine = store.claim_jobs(a.id, 3) + store.claim_jobs(b.id, 3)
    mine = [j for j in mine if j.claimer == a.id]
    assert mine
    store.finish_jobs(a.id, [Outcome(mine[0].id, mine[0].attempts, True, "1")])
    assert store.running_attempts(a.id) == [(j.id, j.attempts) for j in mine[1:]]
    assert store.interruptions == 0
