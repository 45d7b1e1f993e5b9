"""Running one attempt and deciding its outcome: pure logic, no datastore."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from shoal import App, progress
from shoal.node.runner import Finished, ProgressEvent, RetryPolicy, Work, execute, outcome_for

app = App(db="sqlite:///unused.db", max_payload_bytes=100)
BACKOFF_1S = RetryPolicy(backoff_s=1.0)


@app.task
def add(a: int, b: int) -> int:
    progress(0.5, "adding")
    return a + b


@app.task
def broken() -> None:
    raise KeyError("missing")


@app.task
def unserialisable() -> object:
    return object()


@app.task
async def twice(n: int) -> int:
    return n * 2


def run(task: str, args: str = "[]") -> tuple[Finished, list[ProgressEvent]]:
    """Run as a node does: in a worker thread, which has no event loop of its own."""
    events: list[ProgressEvent] = []
    with ThreadPoolExecutor(1) as pool:
        work = Work(1, 1, task, args, "{}", None)
        return pool.submit(execute, app, work, events.append).result(), events


def test_success_carries_the_json_result_and_progress_reports() -> None:
    finished, events = run("add", "[2, 3]")
    assert finished.ok and finished.result_json == "5"
    assert events == [ProgressEvent(1, 1, 0.5, "adding")]


def test_async_task_runs_to_its_result() -> None:
    assert run("twice", "[4]")[0].result_json == "8"


def test_exception_becomes_error_and_traceback() -> None:
    finished, _ = run("broken")
    assert not finished.ok and not finished.final
    assert finished.error == "KeyError: 'missing'"
    assert "raise KeyError" in (finished.traceback or "")


@pytest.mark.parametrize("task", ["unserialisable", "nosuch"])
def test_unknown_task_or_non_json_result_is_a_final_failure(task: str) -> None:
    finished, _ = run(task)
    assert not finished.ok and finished.final and finished.error


def test_retries_back_off_exponentially_until_attempts_run_out() -> None:
    delays = []
    for attempt in (1, 2, 3):
        outcome = outcome_for(Finished(1, attempt, False, error="x"), 4, BACKOFF_1S, 300.0)
        assert outcome.retry_in_s is not None
        delays.append(outcome.retry_in_s)
    assert 0.8 <= delays[0] <= 1.2 and 1.6 <= delays[1] <= 2.4 and 3.2 <= delays[2] <= 4.8
    assert outcome_for(Finished(1, 4, False, error="x"), 4, BACKOFF_1S, 300.0).retry_in_s is None
    assert outcome_for(Finished(1, 1, False, final=True), 4, BACKOFF_1S, 300.0).retry_in_s is None
    capped = outcome_for(Finished(1, 30, False), 99, BACKOFF_1S, 300.0).retry_in_s
    assert capped is not None and capped <= 360


def test_progress_outside_a_job_does_nothing_and_rejects_nan() -> None:
    progress(0.5)
    with pytest.raises(ValueError):
        progress(float("nan"))


def test_a_result_that_is_not_valid_unicode_is_a_final_failure_not_a_crash() -> None:
    @app.task(name="surrogate")
    def surrogate() -> str:
        return "\udcff"

    finished, _ = run("surrogate")
    assert not finished.ok and finished.final
    assert "not valid Unicode" in (finished.error or "")


def test_error_text_is_made_storable() -> None:
    outcome = outcome_for(
        Finished(1, 1, False, error="a\x00b\udcff", traceback="\x00"), 1, BACKOFF_1S, 1
    )
    assert outcome.error == "a\\x00b\\udcff" and outcome.traceback == "\\x00"


def test_a_worker_process_death_names_the_signal_and_the_job() -> None:
    from shoal.node.procpool import death_of

    assert death_of(-11, 7) == (
        "the worker process was killed by signal 11 (SIGSEGV) while running job 7"
    )
    assert (
        death_of(-9, 8) == "the worker process was killed by signal 9 (SIGKILL) while running job 8"
    )
    assert death_of(1, 9) == "the worker process exited with code 1 while running job 9"
