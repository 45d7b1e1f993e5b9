"""The retry decision as a table: every kind of failed attempt against every kind of policy."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from shoal import App, Retry
from shoal.app import TaskOptions
from shoal.node.runner import (
    Finished,
    JobTimeout,
    RetryDecision,
    RetryPolicy,
    Work,
    exception_names,
    execute,
    outcome_for,
    retry_decision,
    type_name,
)

CONN = exception_names(ConnectionRefusedError())  # a subclass of ConnectionError
VALUE = exception_names(ValueError())
TIMEOUT = exception_names(JobTimeout())
NETWORK = RetryPolicy(2.0, None, (type_name(ConnectionError), type_name(TimeoutError)))
ANY = RetryPolicy(2.0)
CAPPED = RetryPolicy(2.0, max_backoff_s=5.0)


def failed(attempt: int, raised: tuple[str, ...] = VALUE, **kw: object) -> Finished:
    return Finished(1, attempt, False, error="E: boom", raised=raised, **kw)  # type: ignore[arg-type]


NO_ATTEMPTS_LEFT = "; no attempts left (attempt 3 of 3)"

TABLE = [
    # (what happened, policy, the decision)
    ("any error, first attempt", failed(1), ANY, RetryDecision(2.0)),
    ("any error, second attempt doubles", failed(2), ANY, RetryDecision(4.0)),
    ("any error, last attempt", failed(3), ANY, RetryDecision(None)),
    ("final failure", failed(1, final=True), ANY, RetryDecision(None)),
    ("listed error's subclass", failed(1, CONN), NETWORK, RetryDecision(2.0)),
    ("time limit counts as TimeoutError", failed(1, TIMEOUT), NETWORK, RetryDecision(2.0)),
    ("unlisted error fails at once", failed(1, VALUE), NETWORK, RetryDecision(None)),
    ("stopped by the node: retried", failed(1, ()), NETWORK, RetryDecision(2.0)),
    ("listed error, last attempt", failed(3, CONN), NETWORK, RetryDecision(None)),
    ("Retry(in_s) beats backoff", failed(1, retry_in_s=30.0), ANY, RetryDecision(30.0)),
    ("Retry(in_s) beats retry_on", failed(2, VALUE, retry_in_s=7.0), NETWORK, RetryDecision(7.0)),
    (
        "Retry past the last attempt",
        failed(3, retry_in_s=30.0),
        ANY,
        RetryDecision(None, NO_ATTEMPTS_LEFT),
    ),
    ("Retry on a final failure", failed(1, final=True, retry_in_s=1.0), ANY, RetryDecision(None)),
    ("task cap below the backoff", failed(2), CAPPED, RetryDecision(4.0)),
    ("task cap reached", failed(2, ()), RetryPolicy(4.0, 5.0), RetryDecision(5.0)),
]


@pytest.mark.parametrize(
    ("case", "finished", "policy", "expected"), TABLE, ids=[t[0] for t in TABLE]
)
def test_retry_decision(
    case: str, finished: Finished, policy: RetryPolicy, expected: RetryDecision
) -> None:
    assert retry_decision(finished, 3, policy, max_backoff_s=300.0) == expected


@pytest.mark.parametrize(
    ("policy", "node_cap", "expected"),
    [(CAPPED, 300.0, 5.0), (ANY, 10.0, 10.0), (ANY, 1000.0, 512.0), (RetryPolicy(0.0), 9.0, 0.0)],
)
def test_backoff_is_capped_by_the_task_else_the_node(
    policy: RetryPolicy, node_cap: float, expected: float
) -> None:
    assert retry_decision(failed(9), 99, policy, node_cap).retry_in_s == expected


def test_jitter_never_lifts_a_delay_over_its_cap() -> None:
    assert retry_decision(failed(9), 99, CAPPED, 300.0, jitter=1.2).retry_in_s == 5.0
    assert retry_decision(failed(1), 99, CAPPED, 300.0, jitter=1.2).retry_in_s == pytest.approx(2.4)


def test_a_retry_past_the_last_attempt_records_why() -> None:
    outcome = outcome_for(failed(3, retry_in_s=30.0), 3, ANY, 300.0)
    assert outcome.retry_in_s is None
    assert outcome.error == "E: boom; no attempts left (attempt 3 of 3)"


def test_policy_of_task_options_names_the_classes() -> None:
    options = TaskOptions("t", backoff_s=0.5, retry_on=(OSError,), max_backoff_s=9.0)
    assert RetryPolicy.of(options) == RetryPolicy(0.5, 9.0, ("builtins.OSError",))
    assert RetryPolicy.of(None) == RetryPolicy()


app = App(db="sqlite:///unused.db")


@app.task
def asks_again() -> None:
    raise Retry(in_s=12, reason="rate limited")


@app.task
def refused() -> None:
    raise ConnectionRefusedError("nobody home")


def run(task: str) -> Finished:
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(
            execute, app, Work(1, 1, task, "[]", "{}", None), lambda e: None
        ).result()


def test_a_raised_retry_reaches_the_decision_with_its_delay() -> None:
    finished = run("asks_again")
    assert finished.retry_in_s == 12.0
    assert finished.error == "Retry: the task asked to be retried in 12s: rate limited"


def test_a_raised_exception_carries_its_class_names() -> None:
    finished = run("refused")
    assert finished.retry_in_s is None
    assert "builtins.ConnectionError" in finished.raised
    assert finished.raised[0] == "builtins.ConnectionRefusedError"


@pytest.mark.parametrize("in_s", [-1.0, float("nan"), float("inf")])
def test_retry_needs_a_finite_delay(in_s: float) -> None:
    with pytest.raises(ValueError, match="finite number of seconds"):
        Retry(in_s=in_s)


@pytest.mark.parametrize(
    "options",
    [
        {"retry_on": ("ConnectionError",)},
        {"retry_on": (int,)},
        {"max_backoff_s": -1.0},
        {"keep_failed_s": float("nan")},
    ],
)
def test_bad_task_options_are_refused(options: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        App(db="sqlite:///unused.db").task(**options)(lambda: None)  # type: ignore[call-overload]
