"""The fault suite's bookkeeping (faults/ledger.py) on made-up records: each invariant it counts
catches the fault it is there for."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from shoal.model import Job, JobState

sys.path.insert(0, str(Path(__file__).parents[2] / "faults"))

from ledger import Kill, Record, examine, percentile


def job(job_id: int, state: JobState, attempts: int, result_attempt: int | None = None) -> Job:
    result = None if result_attempt is None else json.dumps({"attempt": result_attempt})
    return Job(
        job_id, 0, "step", "[]", "{}", state, attempts, 4, None, 0.0, 7, 0.0, None, result,
        None, None, 0.0, None, None,
    )  # fmt: skip


def start(job_id: int, attempt: int, at: float, pid: int = 100) -> Record:
    return Record("start", job_id, attempt, at, pid, 1)


def end(job_id: int, attempt: int, at: float, pid: int = 100) -> Record:
    return Record("end", job_id, attempt, at, pid, 1)


def test_a_clean_run_finds_nothing() -> None:
    jobs = {1: job(1, JobState.SUCCEEDED, 1, 1)}
    found = examine([1], jobs, [start(1, 1, 0.0), end(1, 1, 0.5)], [], 1, frozenset({7}))
    assert (found.lost, found.stuck, found.duplicates, found.started_twice) == ([], [], [], [])
    assert found.charged_unrun == 0 and found.not_succeeded == []


def test_missing_rows_and_orphaned_running_jobs_are_lost() -> None:
    jobs = {1: None, 2: job(2, JobState.RUNNING, 1)}
    found = examine([1, 2], jobs, [start(2, 1, 0.0)], [], 0, frozenset({8}))
    assert found.lost == [1, 2] and found.stuck == [2]


def test_a_success_from_a_stale_attempt_is_a_duplicate_outcome() -> None:
    jobs = {1: job(1, JobState.SUCCEEDED, 2, result_attempt=1)}
    records = [start(1, 1, 0.0), end(1, 1, 3.0), start(1, 2, 2.5), end(1, 2, 3.1)]
    assert examine([1], jobs, records, [], 1, frozenset({7})).duplicates == [1]


def test_more_applied_outcomes_than_attempts_begun_are_duplicates() -> None:
    jobs = {1: job(1, JobState.SUCCEEDED, 1, 1)}
    found = examine([1], jobs, [start(1, 1, 0.0), end(1, 1, 0.5)], [], 2, frozenset({7}))
    assert found.duplicates == [-1]


def test_an_attempt_cut_short_with_its_outcome_recorded_is_no_duplicate() -> None:
    """A node frozen past its lease: its worker process ended attempt 1 mid-body, and the node,
    awake before anyone declared it dead, recorded that attempt failed; attempt 2 succeeded.
    Two outcomes, one body end: the soak once called this a duplicate."""
    jobs = {1: job(1, JobState.SUCCEEDED, 2, 2)}
    records = [start(1, 1, 0.0), start(1, 2, 4.0), end(1, 2, 4.5)]
    found = examine([1], jobs, records, [], 2, frozenset({7}))
    assert found.duplicates == [] and found.unended == {1: [1]}


def test_attempts_charged_without_a_body_starting_are_counted() -> None:
    jobs = {1: job(1, JobState.SUCCEEDED, 3, 3)}
    records = [start(1, 3, 0.0), end(1, 3, 0.2)]
    found = examine([1], jobs, records, [], 1, frozenset({7}))
    assert found.charged_unrun == 2 and found.charged_jobs == [1]


def test_one_attempt_started_twice_is_found() -> None:
    jobs = {1: job(1, JobState.SUCCEEDED, 1, 1)}
    records = [start(1, 1, 0.0), start(1, 1, 0.1, pid=200), end(1, 1, 0.5)]
    assert examine([1], jobs, records, [], 1, frozenset({7})).started_twice == [1]


def test_recovery_is_timed_from_the_kill_to_the_next_attempt_only_for_jobs_in_flight() -> None:
    records = [
        start(1, 1, 0.0),  # in flight on the killed node (pid 100) at t=10
        start(1, 2, 12.5, pid=300),
        start(2, 1, 1.0),  # ended before the kill: not in flight
        end(2, 1, 2.0),
        start(3, 1, 5.0, pid=300),  # another node's job
        start(4, 1, 9.0),  # in flight, never started again
    ]
    jobs = {i: job(i, JobState.SUCCEEDED, 1, 1) for i in (1, 2, 3, 4)}
    found = examine([1, 2, 3, 4], jobs, records, [Kill(10.0, 100)], 0, frozenset({7}))
    assert found.recovery_s == [2.5] and found.unrecovered == 1


def test_an_attempt_superseded_before_the_kill_is_not_in_flight() -> None:
    records = [
        start(5, 1, 1.0),  # its node was frozen, presumed dead, and the job ran again elsewhere
        start(5, 2, 6.0, pid=300),
        end(5, 2, 7.0, pid=300),
    ]
    jobs = {5: job(5, JobState.SUCCEEDED, 2, 2)}
    found = examine([5], jobs, records, [Kill(10.0, 100)], 0, frozenset({7}))
    assert found.recovery_s == [] and found.unrecovered == 0


def test_percentile_is_the_nearest_rank() -> None:
    assert percentile([], 99) is None
    assert percentile([3.0, 1.0, 2.0, 4.0], 50) == 2.0
    assert percentile([3.0, 1.0, 2.0, 4.0], 99) == 4.0
