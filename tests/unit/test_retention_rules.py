"""Retention's pure rules: which prune rules an app's ages make, and the counter deltas."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest

from shoal import App, Retention
from shoal.model import JobState
from shoal.store.rules import (
    DAY_S,
    KEEP_FAILED_S,
    KEEP_SUCCEEDED_S,
    PruneRule,
    count_deletes,
    prune_rules,
)

NOW = 100 * DAY_S


def test_the_defaults_make_one_rule_per_final_state() -> None:
    assert prune_rules(NOW, Retention(), {}) == [
        PruneRule(JobState.SUCCEEDED, NOW - KEEP_SUCCEEDED_S),
        PruneRule(JobState.FAILED, NOW - KEEP_FAILED_S),
        PruneRule(JobState.CANCELLED, NOW - 30 * DAY_S),
    ]


def test_tasks_with_their_own_ages_get_rules_and_leave_the_default() -> None:
    default = Retention(cancelled_s=math.inf)
    tasks = {  # as `TaskOptions.retention` makes them: the default with the task's own ages
        "a": replace(default, succeeded_s=DAY_S),
        "b": replace(default, succeeded_s=DAY_S, failed_s=math.inf),
        "c": default,  # no ages of its own: no rule of its own
    }
    assert prune_rules(NOW, default, tasks) == [
        PruneRule(JobState.SUCCEEDED, NOW - KEEP_SUCCEEDED_S, None, ("a", "b")),
        PruneRule(JobState.SUCCEEDED, NOW - DAY_S, ("a", "b")),
        PruneRule(JobState.FAILED, NOW - KEEP_FAILED_S, None, ("b",)),
        # b keeps failures for ever: no rule; cancelled jobs are kept for ever by default
    ]


def test_task_options_override_the_apps_retention() -> None:
    app = App(db="sqlite:///unused.db", retention=Retention(succeeded_s=3600))

    @app.task(keep_failed_s=60)
    def t() -> None: ...

    assert t.options.retention(app.retention) == Retention(succeeded_s=3600, failed_s=60)


@pytest.mark.parametrize("bad", [-1.0, math.nan])
def test_retention_refuses_negative_or_nan_ages(bad: float) -> None:
    with pytest.raises(ValueError, match="seconds >= 0"):
        Retention(failed_s=bad)


def test_only_final_states_have_an_age() -> None:
    with pytest.raises(ValueError, match="never pruned"):
        Retention().keep_s(JobState.RUNNING)


def test_deleted_jobs_count_out_of_their_task_and_state() -> None:
    rows = [("a", "succeeded"), ("a", "succeeded"), ("b", "failed")]
    assert count_deletes(rows) == {("a", "succeeded"): -2, ("b", "failed"): -1}
