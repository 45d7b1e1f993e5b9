"""The Python API refuses what it cannot honour with an error that says what is wrong."""

from __future__ import annotations

import math

import pytest

from shoal import App
from shoal.errors import ConfigError, NotFound, ScheduleError, SubmitError, TaskDeclarationError


@pytest.mark.parametrize("cap", [math.nan, -1, 0, 1.5, True, "10"])
def test_a_payload_cap_that_is_not_a_whole_number_of_bytes_is_refused(cap: object) -> None:
    with pytest.raises(ConfigError, match="max_payload_bytes"):
        App("sqlite:///unused.db", max_payload_bytes=cap)  # type: ignore[arg-type]


@pytest.mark.parametrize("name", ["", "a\x00b", "x" * 201, "w\udcffx"])
def test_a_task_name_nobody_could_read_is_refused(name: str) -> None:
    app = App("sqlite:///unused.db")
    with pytest.raises(TaskDeclarationError, match="task name"):
        app.task(name=name)(lambda: None)
    assert app.tasks == {}


def test_a_schedule_name_with_a_nul_is_refused() -> None:
    app = App("sqlite:///unused.db")
    task = app.task(name="beat")(lambda: None)
    with pytest.raises(ScheduleError, match="NUL"):
        app.schedule(task, every_s=5, name="<b>\x00</b>")


@pytest.mark.parametrize("delay_s", [3e11, 1e300])
def test_a_delay_past_a_century_is_refused(delay_s: float) -> None:
    app = App("sqlite:///unused.db")
    task = app.task(name="later")(lambda: None)
    with pytest.raises(SubmitError, match="delay_s must be at most"):
        task.new_job([], {}, delay_s)


def test_job_ids_are_checked_before_the_datastore_is_asked(sqlite_url: str) -> None:
    app = App(sqlite_url)
    with pytest.raises(TypeError, match="a job id is an int"):
        app.job(True)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="a job id is an int"):
        app.job("1")  # type: ignore[arg-type]
    with pytest.raises(NotFound, match="no job with id 9223372036854775808"):
        app.job(2**63)
    app.close()


def test_waits_and_cancels_refuse_bad_arguments(sqlite_url: str) -> None:
    app = App(sqlite_url)
    task = app.task(name="idle")(lambda: None)
    handle = task.submit()
    for bad in (-1, math.nan, "5"):
        with pytest.raises(ValueError, match="timeout_s must be a number of seconds"):
            handle.wait(timeout_s=bad)  # type: ignore[arg-type]
    for by in ("b" * 201, "a\x00b", ""):
        with pytest.raises(SubmitError, match="by must"):
            handle.cancel(by=by)
    assert handle.refresh().cancel_requested_at is None
    app.close()
