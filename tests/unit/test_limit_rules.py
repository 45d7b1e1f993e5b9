"""Unit tests of the pure task-limit rules (store/limits.py) and of declaring limits on a task."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shoal import App, ConfigError, ShoalError, TaskDeclarationError
from shoal.model import TaskLimit
from shoal.store import limits


@pytest.mark.parametrize(
    ("rate", "k", "window_s"),
    [(10.0, 10, 1.0), (1.0, 1, 1.0), (0.5, 1, 2.0), (2.5, 3, 1.2), (0.001, 1, 1000.0)],
)
def test_rate_window_keeps_the_long_run_rate(rate: float, k: int, window_s: float) -> None:
    assert limits.rate_window(rate) == (k, pytest.approx(window_s))


def test_room_is_the_smaller_of_both_limits() -> None:
    both = TaskLimit("t", max_running=5, max_per_s=2.0)
    assert limits.room(both, running=1, starts=(), now=100.0) == 2
    assert limits.room(both, running=4, starts=(), now=100.0) == 1
    assert limits.room(both, running=1, starts=(99.5,), now=100.0) == 1
    assert limits.room(both, running=1, starts=(98.9, 99.0), now=100.0) == 2  # out of window
    assert limits.room(both, running=9, starts=(), now=100.0) == 0  # never negative
    assert limits.room(TaskLimit("t"), running=9, starts=(), now=100.0) is None


def test_record_starts_keeps_the_latest_k_in_the_window() -> None:
    assert limits.record_starts((1.0, 99.5), 100.0, 2, 3.0) == (99.5, 100.0, 100.0)
    assert limits.record_starts((99.7, 99.8, 99.9), 100.0, 2, 3.0) == (99.9, 100.0, 100.0)
    assert limits.record_starts((99.0,), 100.0, 1, None) == ()


@given(
    st.floats(0.2, 50.0),
    st.lists(st.tuples(st.floats(0.0, 0.5), st.integers(1, 20)), min_size=1, max_size=60),
)
def test_claims_following_the_rule_never_start_more_than_k_in_a_window(
    rate: float, claims: list[tuple[float, int]]
) -> None:
    """However claims are spaced and whatever they ask for, the starts the rule admits never
    put more than k in any window of window_s."""
    k, window_s = limits.rate_window(rate)
    now, starts, admitted = 0.0, (), []
    for gap, wanted in claims:
        now += gap
        room = limits.room(TaskLimit("t", max_per_s=rate), 0, starts, now)
        assert room is not None
        n = min(room, wanted)
        starts = limits.record_starts(starts, now, n, rate)
        admitted += [now] * n
    for i in range(len(admitted) - k):
        assert admitted[i + k] - admitted[i] >= window_s - 1e-9


def test_pick_within_limits_skips_full_tasks_and_keeps_id_order() -> None:
    rows = [(1, "t"), (2, "t"), (3, "u"), (4, "t"), (5, "v"), (6, "u")]
    assert limits.pick_within_limits(rows, {"t": 1, "v": 0}, limit=10) == [1, 3, 6]
    assert limits.pick_within_limits(rows, {"t": 2}, limit=3) == [1, 2, 3]


def test_the_latest_registration_declares_and_lifts_limits() -> None:
    limited, cleared = limits.declared(["a", "b", "c"], [TaskLimit("b", 2), TaskLimit("a", None)])
    assert limited == [TaskLimit("b", 2)]
    assert cleared == ["a", "c"]
    stored = {"a": TaskLimit("a", 1), "b": TaskLimit("b", 2)}
    assert limits.changes(stored, limited, cleared) == [("a", TaskLimit("a", 1), None)]


# -- declaring limits -------------------------------------------------------------------------


def test_a_task_declares_its_limits() -> None:
    app = App("sqlite:///:memory:")

    @app.task(max_running=5, max_per_s=10)
    def slow() -> None: ...

    @app.task
    def free() -> None: ...

    assert slow.options.limit == TaskLimit("slow", 5, 10.0)
    assert free.options.limit is None
    assert app.task_limits() == [TaskLimit("slow", 5, 10.0)]


@pytest.mark.parametrize(
    "options",
    [
        {"max_running": 0},
        {"max_running": -3},
        {"max_running": 2.5},
        {"max_running": "5"},
        {"max_running": True},
        {"max_running": 10**7},
        {"max_per_s": 0},
        {"max_per_s": -1.0},
        {"max_per_s": math.nan},
        {"max_per_s": math.inf},
        {"max_per_s": "10/s"},
        {"max_per_s": 1e6},
    ],
)
def test_a_bad_limit_is_refused_at_declaration(options: dict[str, object]) -> None:
    app = App("sqlite:///:memory:")
    with pytest.raises(TaskDeclarationError, match=next(iter(options))) as caught:
        app.task(**options)(lambda: None)  # type: ignore[call-overload]
    assert isinstance(caught.value, ConfigError | ShoalError)
    assert isinstance(caught.value, ValueError)  # as every bad declaration always was
    assert "leave it out" in str(caught.value)
    assert app.tasks == {}
