"""Submit-time checks, shared by the Python API and `shoal submit`: nothing bad is ever queued."""

from __future__ import annotations

import math
from typing import Any

import pytest

from shoal.app import MAX_RETRIES, App, build_job, check_text
from shoal.errors import ConfigError, PayloadError, SubmitError


def job(**overrides: Any) -> Any:
    given: dict[str, Any] = {
        "task": "work",
        "args": [1],
        "kwargs": {},
        "what": ("--args", "--kwargs"),
        "max_payload_bytes": 1000,
        "retries": 3,
        "timeout_s": None,
        "delay_s": 0.0,
    }
    given.update(overrides)
    task, args, kwargs = given.pop("task"), given.pop("args"), given.pop("kwargs")
    return build_job(task, args, kwargs, **given)


def test_a_good_job_is_encoded() -> None:
    new = job(args=[1, "a"], kwargs={"k": True}, retries=2, timeout_s=5.0, delay_s=1.5)
    assert (new.task, new.args_json, new.kwargs_json) == ("work", '[1,"a"]', '{"k":true}')
    assert (new.max_attempts, new.timeout_s, new.delay_s) == (3, 5.0, 1.5)


def test_the_size_cap_applies_to_args_and_kwargs_together() -> None:
    half = "x" * 600  # each under the 1000-byte cap, together over it
    with pytest.raises(PayloadError, match=r"--args and --kwargs together are .* over the 1000"):
        job(args=[half], kwargs={"k": half})


@pytest.mark.parametrize("delay_s", [math.nan, math.inf, -1.0])
def test_a_delay_that_is_not_finite_or_negative_is_refused(delay_s: float) -> None:
    with pytest.raises(SubmitError, match="delay_s must be a finite number"):
        job(delay_s=delay_s)


@pytest.mark.parametrize("timeout_s", [math.nan, math.inf, 0.0])
def test_a_time_limit_that_is_not_finite_and_positive_is_refused(timeout_s: float) -> None:
    with pytest.raises(SubmitError, match="timeout_s must be a finite number"):
        job(timeout_s=timeout_s)


@pytest.mark.parametrize("retries", [-1, MAX_RETRIES + 1, 10**20])
def test_retries_outside_the_cap_are_refused(retries: int) -> None:
    with pytest.raises(SubmitError, match=f"between 0 and {MAX_RETRIES}"):
        job(retries=retries)


def test_arguments_nested_too_deeply_are_a_payload_error() -> None:
    deep: list[Any] = []
    for _ in range(100_000):
        deep = [deep]
    with pytest.raises(PayloadError, match="nested too deeply"):
        job(args=deep, max_payload_bytes=10_000_000)


def test_a_task_name_with_undecodable_bytes_is_refused() -> None:
    with pytest.raises(SubmitError, match=r"the task name 'w\\udcff' is not valid UTF-8"):
        job(task="w\udcff")
    with pytest.raises(ConfigError):
        check_text("db\udcff", "the datastore URL", ConfigError)


def test_the_python_api_refuses_what_the_cli_refuses() -> None:
    app = App("sqlite:///never-opened.db", max_payload_bytes=1000)

    @app.task(retries=2)
    def work(*args: Any, **kwargs: Any) -> None: ...

    assert work.new_job([1], {}).max_attempts == 3
    assert work.new_job([1], {}, retries=0, timeout_s=2.0).max_attempts == 1
    with pytest.raises(SubmitError, match="delay_s"):
        work.new_job([], {}, math.nan)
    with pytest.raises(PayloadError, match="together"):
        work.new_job(["x" * 600], {"k": "x" * 600})
    for bad in ({"timeout_s": math.inf}, {"timeout_s": math.nan}, {"retries": MAX_RETRIES + 1}):
        with pytest.raises(ValueError, match="must be"):
            app.task(name=f"t{len(app.tasks)}", **bad)(lambda: None)
