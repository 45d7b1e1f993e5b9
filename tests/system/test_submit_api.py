"""The submitter's Python API against a real datastore: validation before anything is written."""

from __future__ import annotations

import pytest

from shoal import App, NotFound, PayloadError, UnknownTask, WaitTimeout
from shoal.model import JobState


@pytest.fixture
def app(db_url: str) -> App:
    app = App(db=db_url, max_payload_bytes=1000)

    @app.task
    def resize(path: str, width: int) -> dict[str, object]:
        return {"path": path, "width": width}

    return app


def total_jobs(app: App) -> int:
    return sum(app.store.read_cluster().job_counts.values())


def test_submit_returns_a_queued_handle(app: App) -> None:
    handle = app.tasks["resize"].submit("a.png", width=100)
    assert handle.state is JobState.QUEUED
    assert handle.refresh().kwargs == {"width": 100}
    assert app.job(handle.id).id == handle.id
    assert handle.result is None
    with pytest.raises(WaitTimeout):
        handle.wait(timeout_s=0.05)


@pytest.mark.parametrize(
    ("args", "kwargs", "message"),
    [
        (("a.png",), {"width": object()}, "must be JSON"),
        (("a.png",), {"width": float("nan")}, "must be JSON"),
        (("x" * 2000, 1), {}, "over the 1000-byte cap"),
        (("a.png",), {"height": 1}, "bad arguments for task 'resize'"),
    ],
)
def test_bad_arguments_are_refused_before_writing(
    app: App, args: tuple[object, ...], kwargs: dict[str, object], message: str
) -> None:
    with pytest.raises(PayloadError, match=message):
        app.tasks["resize"].submit(*args, **kwargs)
    assert total_jobs(app) == 0


def test_submit_many_is_all_or_nothing(app: App) -> None:
    task = app.tasks["resize"]
    handles = task.submit_many([("a.png", 100), {"path": "b.png", "width": 50}])
    assert [h.refresh().args for h in handles] == [["a.png", 100], []]
    assert handles[1].id == handles[0].id + 1
    with pytest.raises(PayloadError, match="item 2 of the batch"):
        task.submit_many([("c.png", 1), ("d.png", 2), ("e.png", object())])
    assert total_jobs(app) == 2


def test_unknown_names_are_clear_errors(app: App) -> None:
    with pytest.raises(UnknownTask, match="this app registers: resize"):
        app.submit("nosuch")
    with pytest.raises(NotFound):
        app.job(10_000)


def test_duplicate_task_names_are_refused(app: App) -> None:
    with pytest.raises(ValueError, match="already registered"):
        app.task(name="resize")(lambda: None)
