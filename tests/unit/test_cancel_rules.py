"""The pure side of cancelling: what a cancel does in each state, and what a node records for an
attempt whose job was asked to cancel."""

from __future__ import annotations

import pytest

from shoal.context import JobContext, cancelled, job_context
from shoal.model import CancelResult, JobState
from shoal.node.runner import Finished, RetryPolicy, cancelled_outcome, outcome_for
from shoal.store.rules import cancel_verdict


@pytest.mark.parametrize(
    ("state", "requested", "verdict"),
    [
        (None, False, CancelResult.NOT_FOUND),
        (JobState.QUEUED, False, CancelResult.CANCELLED),
        (JobState.RUNNING, False, CancelResult.REQUESTED),
        (JobState.RUNNING, True, CancelResult.ALREADY_REQUESTED),
        (JobState.SUCCEEDED, False, CancelResult.FINISHED),
        (JobState.FAILED, False, CancelResult.FINISHED),
        (JobState.CANCELLED, True, CancelResult.FINISHED),
    ],
)
def test_a_cancel_does_what_the_jobs_state_allows(
    state: JobState | None, requested: bool, verdict: CancelResult
) -> None:
    assert cancel_verdict(None if state is None else state.value, requested) is verdict


def test_a_cancel_result_is_true_only_when_it_changed_the_job() -> None:
    assert [r for r in CancelResult if r] == [CancelResult.CANCELLED, CancelResult.REQUESTED]


def test_an_attempt_asked_to_cancel_is_never_retried() -> None:
    failed = Finished(7, 1, False, error="E: x", traceback="tb", retry_in_s=5.0)
    assert outcome_for(failed, 4, RetryPolicy(), 60.0).retry_in_s is not None
    outcome = cancelled_outcome(failed)
    assert (outcome.succeeded, outcome.retry_in_s, outcome.error) == (False, None, "E: x")
    done = cancelled_outcome(Finished(7, 1, True, result_json='"big"'))
    assert done.succeeded and done.result_json is None  # the datastore discards it anyway


def test_cancelled_is_false_outside_a_job_and_asks_the_running_one() -> None:
    assert cancelled() is False
    asked = [False]
    with job_context(JobContext(1, 1, lambda f, m: None, lambda: asked[0])):
        assert cancelled() is False
        asked[0] = True
        assert cancelled() is True
    assert cancelled() is False
