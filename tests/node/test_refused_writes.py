"""A datastore that refuses writes (down, or its disk full): the node backs off instead of
retrying, and logging, thousands of times a second, and records everything once it can."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence

import pytest

from shoal.errors import DatastoreUnavailable
from shoal.model import JobState, NewJob, Outcome
from shoal.node import Node
from shoal.store.sqlite import SqliteStore

from steered import Steered, until


class FullDisk(SqliteStore):
    """Outcomes cannot be written while `full`; counts the attempts."""

    full = True
    tries = 0

    def finish_jobs(self, node_id: int, outcomes: Sequence[Outcome]) -> list[bool]:
        if self.full:
            self.tries += 1
            raise DatastoreUnavailable("database or disk is full")
        return super().finish_jobs(node_id, outcomes)


def test_refused_outcomes_are_retried_with_backoff_then_recorded(
    make_node: Callable[..., Node],
    sqlite_store: SqliteStore,
    steered: Steered,
    db_path: str,
    caplog: pytest.LogCaptureFixture,
):
    disk = FullDisk(db_path)
    node = make_node("alpha", store=disk)
    until(lambda: node.wait(node.step(time.monotonic())) or node.loop, "registered")
    [job_id] = sqlite_store.submit_jobs([NewJob("hold", "[]", "{}", max_attempts=1)])
    until(
        lambda: (
            node.wait(node.step(time.monotonic()))
            or (
                steered.have_started(sqlite_store.running_attempts(node.node_id))
                and sqlite_store.running_attempts(node.node_id)
            )
        ),
        "the job started",
    )
    steered.succeed(job_id)
    with caplog.at_level(logging.WARNING, logger="shoal.node"):
        deadline = time.monotonic() + 1.5
        while time.monotonic() < deadline:
            node.wait(node.step(time.monotonic()))
    # Pauses of 0.05, 0.1, 0.2, 0.4, 0.8 s: a handful of tries, not thousands.
    assert 2 <= disk.tries <= 8, disk.tries
    refused = [r for r in caplog.records if "cannot record" in r.getMessage()]
    assert 2 <= len(refused) <= 8 and "retrying in" in refused[-1].getMessage()

    disk.full = False

    def recorded() -> bool:
        node.wait(node.step(time.monotonic()))
        job = sqlite_store.read_job(job_id)
        return job is not None and job.state is JobState.SUCCEEDED

    until(recorded, "the outcome recorded once the disk has room")
