"""What a node does about jobs the datastore has running under it: pure logic."""

from __future__ import annotations

from shoal.model import Outcome
from shoal.node.reconcile import RecentOutcomes, reconcile


def test_held_jobs_are_left_alone_remembered_outcomes_resent_the_rest_released() -> None:
    recent = RecentOutcomes()
    done = Outcome(2, 1, True, "2")
    recent.add([done], now=0.0)
    found = reconcile([(1, 1), (2, 1), (3, 2)], held={1}, recent=recent)
    assert found.record_again == [done]
    assert found.release == [3]


def test_an_outcome_of_another_attempt_is_not_resent() -> None:
    recent = RecentOutcomes()
    recent.add([Outcome(2, 1, False, error="x", retry_in_s=1.0)], now=0.0)
    assert reconcile([(2, 2)], held=(), recent=recent).release == [2]


def test_memory_is_bounded_by_age_count_and_bytes() -> None:
    by_age = RecentOutcomes(keep_s=10.0)
    by_age.add([Outcome(1, 1, True, "1")], now=0.0)
    by_age.add([Outcome(2, 1, True, "2")], now=11.0)
    assert by_age.get(1, 1) is None and by_age.get(2, 1) is not None

    by_count = RecentOutcomes(max_count=2)
    by_count.add([Outcome(i, 1, True, "1") for i in range(5)], now=0.0)
    assert len(by_count) == 2 and by_count.get(4, 1) is not None

    by_bytes = RecentOutcomes(max_bytes=10)
    by_bytes.add([Outcome(1, 1, True, "x" * 8), Outcome(2, 1, True, "y" * 8)], now=0.0)
    assert by_bytes.get(1, 1) is None and by_bytes.get(2, 1) is not None
