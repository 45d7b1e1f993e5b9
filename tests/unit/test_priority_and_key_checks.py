"""Submit-time checks of priorities and keys, and the batch rule that collapses repeated keys."""

from __future__ import annotations

import math
from typing import Any

import pytest

from shoal.app import MAX_KEY_CHARS, MAX_PRIORITY, MIN_PRIORITY, App, build_job
from shoal.errors import SubmitError
from shoal.model import NewJob, Submitted
from shoal.store.rules import collapse_keys, spread_submitted


def job(**options: Any) -> NewJob:
    return build_job(
        "work",
        [],
        {},
        what=("--args", "--kwargs"),
        max_payload_bytes=1000,
        retries=0,
        timeout_s=None,
        delay_s=0.0,
        **options,
    )


def test_priorities_and_keys_within_their_limits_are_kept() -> None:
    new = job(priority=MIN_PRIORITY, key="k" * MAX_KEY_CHARS, key_window_s=60.0)
    assert (new.priority, new.key, new.key_window_s) == (MIN_PRIORITY, "k" * MAX_KEY_CHARS, 60.0)
    assert job(priority=MAX_PRIORITY, key="facture-42 · é").priority == MAX_PRIORITY
    assert (job().priority, job().key) == (0, None)


@pytest.mark.parametrize("priority", [MIN_PRIORITY - 1, MAX_PRIORITY + 1, 2**40])
def test_a_priority_outside_its_range_is_refused(priority: int) -> None:
    with pytest.raises(SubmitError, match=f"between {MIN_PRIORITY} and {MAX_PRIORITY}"):
        job(priority=priority)


@pytest.mark.parametrize("priority", [True, 1.5, "3"])
def test_a_priority_that_is_not_an_integer_is_refused(priority: Any) -> None:
    with pytest.raises(SubmitError, match="priority must be an integer"):
        job(priority=priority)


@pytest.mark.parametrize(
    ("key", "message"),
    [
        ("k" * (MAX_KEY_CHARS + 1), f"at most {MAX_KEY_CHARS} characters, not {MAX_KEY_CHARS + 1}"),
        ("", "non-empty text"),
        (42, "non-empty text"),
        ("a\nb", "control characters"),
        ("a\x00b", "control characters"),
        ("a\x1b[31m", "control characters"),
        ("a\udcff", "not valid UTF-8"),
    ],
)
def test_a_bad_key_is_refused(key: Any, message: str) -> None:
    with pytest.raises(SubmitError, match=message):
        job(key=key)


@pytest.mark.parametrize("window", [-1.0, math.nan, math.inf])
def test_a_key_window_that_is_negative_or_not_finite_is_refused(window: float) -> None:
    with pytest.raises(SubmitError, match="key_window_s must be a finite number"):
        job(key="k", key_window_s=window)


def test_a_key_window_without_a_key_is_refused() -> None:
    with pytest.raises(SubmitError, match="key_window_s needs a key"):
        job(key_window_s=5.0)


def test_tasks_carry_a_priority_that_submits_can_override() -> None:
    app = App("sqlite:///never-opened.db")

    @app.task(priority=7)
    def work(n: int) -> None: ...

    assert work.new_job([1], {}).priority == 7
    assert work.new_job([1], {}, priority=-2).priority == -2
    with pytest.raises(ValueError, match="priority must be between"):
        app.task(name="too-high", priority=MAX_PRIORITY + 1)(lambda: None)
    with pytest.raises(SubmitError, match=r"^priority must be between"):
        work.submit_many([(1,), (2,)], priority=500)
    with pytest.raises(SubmitError, match="item 0 of the batch: a key must be at most"):
        work.submit_many([(1,)], keys=["x" * 1000])
    with pytest.raises(SubmitError, match="2 keys for 1 items"):
        work.submit_many([(1,)], keys=["a", "b"])


def test_a_batch_keeps_each_key_once_and_points_repeats_at_it() -> None:
    jobs = [NewJob("t", f"[{n}]", "{}", key=k) for n, k in enumerate("a-ab-")]
    jobs = [j if j.key != "-" else NewJob("t", j.args_json, "{}") for j in jobs]
    unique, positions = collapse_keys(jobs)
    assert [j.args_json for j in unique] == ["[0]", "[1]", "[3]", "[4]"]
    assert positions == [0, 1, 0, 2, 3]
    done = [Submitted(10, True), Submitted(11, True), Submitted(5, False), Submitted(12, True)]
    assert spread_submitted(done, positions) == [
        Submitted(10, True),
        Submitted(11, True),
        Submitted(10, False),
        Submitted(5, False),
        Submitted(12, True),
    ]
