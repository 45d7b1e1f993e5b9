"""Cancelling running jobs on real `shoal node` processes, from the command line and the API: the
job ends cancelled, never succeeded, whether its task stops by itself or has to be stopped."""

from __future__ import annotations

import json
import time

import pytest

from shoal import App, JobHandle
from shoal.model import CancelResult, Job, JobState, NodeState
from shoal.store import open_store
from shoal.store.texts import CANCELLED_RUNNING

from realnodes import Cluster, shoal, until


def started_app(cluster: Cluster, *extra: str) -> App:
    from systasks import app

    cluster.start("a", *extra)
    store = open_store(cluster.url)
    until(lambda: any(n.state is NodeState.WAITING for n in store.read_cluster().nodes))
    app.use_store(store)
    return app


def running(handle: JobHandle) -> Job:
    return until(lambda: (j := handle.refresh()).state is JobState.RUNNING and j, what="running")


def ended(handle: JobHandle, timeout_s: float = 10.0) -> Job:
    return until(lambda: (j := handle.refresh()).state.is_final and j, timeout_s, "the job's end")


@pytest.mark.parametrize("pool", ["thread", "process"])
def test_shoal_cancel_stops_a_running_job_that_then_ends_cancelled(
    cluster: Cluster, pool: str
) -> None:
    app = started_app(cluster, "--pool", pool)
    handle = app.tasks["obedient"].submit(60.0)
    job_id = str(running(handle).id)
    said = shoal("cancel", job_id, "--db", cluster.url, "--by", "ops on call")
    asked = time.monotonic()  # the request is recorded by now; the rest is the node's doing
    assert said.returncode == 0, said.stderr
    assert said.stdout.startswith(f"cancel requested for job {job_id}") or (
        said.stdout.strip() == f"job {job_id} cancelled"
    )
    job = ended(handle)
    assert time.monotonic() - asked < 2.0
    assert job.state is JobState.CANCELLED and job.attempts == 1
    assert (
        job.error
        == CANCELLED_RUNNING + "the task stopped on a cancel request: stopped between two steps"
    )
    shown = json.loads(shoal("job", job_id, "--json", "--db", cluster.url).stdout)
    assert shown["state"] == "cancelled" and shown["cancel_requested_by"] == "ops on call"
    again = shoal("cancel", job_id, "--db", cluster.url)
    assert again.returncode == 1
    assert f"job {job_id} already cancelled; there is nothing to cancel" in again.stderr
    assert "cancel requested by ops on call" in cluster.log("a")
    # The node goes on: the next job of the same task runs to its end.
    assert app.tasks["obedient"].submit(0.05).wait(timeout_s=30) == "never asked"


@pytest.mark.parametrize("pool", ["thread", "process"])
def test_a_task_that_ignores_the_cancel_is_stopped_after_its_grace_and_never_succeeds(
    cluster: Cluster, pool: str
) -> None:
    app = started_app(cluster, "--pool", pool)
    handle = app.tasks["deaf"].submit(4.0)
    running(handle)
    assert handle.cancel() is CancelResult.REQUESTED
    job = ended(handle)
    assert job.state is JobState.CANCELLED and job.attempts == 1
    killed = "process was killed" if pool == "process" else "thread was abandoned"
    assert job.error is not None and job.error.startswith(
        CANCELLED_RUNNING + "the task did not stop within 1s of the request"
    )
    assert killed in job.error
    # Past the moment the task would have finished by itself, the job is still cancelled.
    later = app.tasks["work"].submit(1, 3.5)
    assert later.wait(timeout_s=30) == 2
    assert handle.refresh().state is JobState.CANCELLED
    assert handle.refresh().result is None


def test_status_and_job_show_a_running_job_being_cancelled(
    cluster: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "200")  # `shoal status` tables wide enough to read
    app = started_app(cluster)
    handle = app.tasks["unheeding"].submit(60.0)  # its grace outlasts the test
    job_id = str(running(handle).id)
    assert handle.cancel(by="ops") is CancelResult.REQUESTED
    status = shoal("status", "--db", cluster.url)
    assert "cancel requested" in status.stdout, status.stdout
    shown = json.loads(shoal("job", job_id, "--json", "--db", cluster.url).stdout)
    assert shown["state"] == "running" and shown["cancel_requested_by"] == "ops"
    assert shown["cancel_requested_at"] is not None
    again = shoal("cancel", job_id, "--db", cluster.url)
    assert again.returncode == 0 and "was already asked to cancel by ops" in again.stdout


def test_cancel_of_an_unknown_job_is_a_clear_error(cluster: Cluster) -> None:
    said = shoal("cancel", "424242", "--db", cluster.url)
    assert said.returncode == 1 and "no job with id 424242" in said.stderr
    assert "Traceback" not in said.stderr
    blank = shoal("cancel", "1", "--by", "", "--db", cluster.url)
    assert blank.returncode == 1 and "--by takes 1 to 200 characters" in blank.stderr
