"""Nothing a task does can take a worker slot or the node down: a real one-slot node on a
thread runs tasks that raise exceptions with hostile messages, return values too deep to encode
and report progress the datastore cannot hold as it is; each attempt ends with a reason, and
the node's one worker goes on to the next job."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from typing import Any

import pytest

import shoal
from shoal.app import App
from shoal.model import Job, JobState, NewJob
from shoal.node import Node, NodeConfig
from shoal.store.sqlite import SqliteStore

from steered import until

FAST = {"heartbeat_s": 0.02, "lease_s": 30.0, "poll_s": 0.005, "progress_flush_s": 0.01}


class Unprintable(Exception):
    def __str__(self) -> str:
        raise RuntimeError("no message for you")


class Hostile:
    def __repr__(self) -> str:
        raise RuntimeError("no repr either")

    __str__ = __repr__


def hostile_app(store: SqliteStore, go_on: threading.Event) -> App:
    app = App()
    app.use_store(store)

    @app.task(name="unprintable", retries=0)
    def unprintable() -> None:
        raise Unprintable()

    @app.task(name="deep", retries=0)
    def deep() -> Any:
        value: list[Any] = []
        for _ in range(100_000):
            value = [value]
        return value

    @app.task(name="hostile_result", retries=0)
    def hostile_result() -> Any:
        return {"x": Hostile()}

    @app.task(name="hostile_progress", retries=0)
    def hostile_progress(message: str) -> str:
        shoal.progress(0.5, message)
        assert go_on.wait(10.0)
        return "done"

    @app.task(name="ok", retries=0)
    def ok() -> int:
        return 1

    return app


@pytest.fixture
def go_on() -> Iterator[threading.Event]:
    event = threading.Event()
    yield event
    event.set()


@pytest.fixture
def node(sqlite_store: SqliteStore, go_on: threading.Event) -> Iterator[Node]:
    config = NodeConfig(name="alpha", concurrency=1, **FAST)  # type: ignore[arg-type]
    node = Node(hostile_app(sqlite_store, go_on), sqlite_store, config).start()
    yield node
    node.request_stop(grace_s=0.0)
    node.stop()


def finished(store: SqliteStore, job_id: int) -> Job:
    def done() -> Job | None:
        job = store.read_job(job_id)
        return job if job is not None and job.state.is_final else None

    return until(done, f"job {job_id} to finish")


def submit(store: SqliteStore, task: str, args: str = "[]") -> int:
    [job_id] = store.submit_jobs([NewJob(task, args, "{}", max_attempts=1)])
    return job_id


def test_hostile_exceptions_and_results_fail_the_attempt_and_keep_the_slot(
    node: Node, sqlite_store: SqliteStore
):
    expected = {
        "unprintable": "Unprintable (its message could not be read: RuntimeError)",
        "deep": "the result is nested too deeply",
        "hostile_result": "must be JSON",
    }
    for task, reason in expected.items():
        job = finished(sqlite_store, submit(sqlite_store, task))
        assert job.state is JobState.FAILED and reason in (job.error or ""), task
    ok = finished(sqlite_store, submit(sqlite_store, "ok"))  # the one slot still works
    assert ok.state is JobState.SUCCEEDED and ok.result == 1
    assert node.exit_code is None


@pytest.mark.parametrize(
    ("message", "stored"), [("a\x00b", "a\\x00b"), ("x\ud800y", "x\\ud800y"), ("m" * 9000, None)]
)
def test_hostile_progress_is_stored_escaped_and_capped(
    node: Node, sqlite_store: SqliteStore, go_on: threading.Event, message: str, stored: str
):
    job_id = submit(sqlite_store, "hostile_progress", json.dumps([message]))

    def reported() -> Job | None:
        job = sqlite_store.read_job(job_id)
        return job if job is not None and job.progress == 0.5 else None

    job = until(reported, "the progress to be written")
    if stored is None:
        assert job.progress_message == "m" * 500
    else:
        assert job.progress_message == stored
    go_on.set()
    assert finished(sqlite_store, job_id).state is JobState.SUCCEEDED
    assert node.exit_code is None
