"""Retry control on real nodes in-process: `retry_on` retries only the listed exceptions,
`Retry(in_s=...)` from a task retries after its delay and fails, saying why, past the last
attempt; and a node prunes finished jobs past their age from its own section."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from shoal import App, Retry, current_job
from shoal.model import Job, JobFilter, JobState, NewJob
from shoal.node import Node, NodeConfig
from shoal.node.retention import PRUNE_EVERY_S, Pruner
from shoal.store.rules import DAY_S, Retention
from shoal.store.sqlite import SqliteStore

from steered import until

app = App(db="sqlite:///unused.db", retention=Retention(failed_s=2 * DAY_S))
# Fast timers with a long lease, as in conftest.py (not imported: other folders have a conftest).
FAST = {"heartbeat_s": 0.02, "lease_s": 30.0, "poll_s": 0.005, "progress_flush_s": 0.01}


@app.task(retries=2, backoff_s=0.0, retry_on=(ConnectionError, TimeoutError))
def refused() -> None:
    raise ConnectionRefusedError("nobody home")


@app.task(retries=5, backoff_s=0.0, retry_on=ConnectionError)
def wrong_value() -> None:
    raise ValueError("not a network problem")


@app.task(retries=1)
def second_time_lucky() -> int:
    job = current_job()
    assert job is not None
    if job.attempt == 1:
        raise Retry(in_s=0)
    return job.attempt


@app.task(retries=1)
def never_ready() -> None:
    raise Retry(in_s=0, reason="still warming up")


@app.task(retries=3)
def later() -> None:
    raise Retry(in_s=3600)


@app.task(keep_succeeded_s=DAY_S)
def brief() -> str:
    return "ok"


@app.task
def plain() -> str:
    return "ok"


@pytest.fixture
def node(sqlite_store: SqliteStore) -> Iterator[Node]:
    started = Node(app, sqlite_store, NodeConfig(name="retrier", **FAST)).start()
    yield started
    started.stop()


def submit(store: SqliteStore, task: str, retries: int) -> int:
    [job_id] = store.submit_jobs([NewJob(task, "[]", "{}", max_attempts=retries + 1)])
    return job_id


def ended(store: SqliteStore, job_id: int) -> Job:
    def final() -> Job | None:
        job = store.read_job(job_id)
        return job if job is not None and job.state.is_final else None

    return until(final, f"job {job_id} to end")


def test_a_listed_exception_is_retried_until_attempts_run_out(
    node: Node, sqlite_store: SqliteStore
) -> None:
    job = ended(sqlite_store, submit(sqlite_store, "refused", 2))
    assert job.state is JobState.FAILED and job.attempts == 3
    assert job.error == "ConnectionRefusedError: nobody home"


def test_an_unlisted_exception_fails_at_once_with_its_error(
    node: Node, sqlite_store: SqliteStore
) -> None:
    job = ended(sqlite_store, submit(sqlite_store, "wrong_value", 5))
    assert job.state is JobState.FAILED and job.attempts == 1
    assert job.error == "ValueError: not a network problem"


def test_a_raised_retry_runs_the_job_again(node: Node, sqlite_store: SqliteStore) -> None:
    job = ended(sqlite_store, submit(sqlite_store, "second_time_lucky", 1))
    assert job.state is JobState.SUCCEEDED and job.result == 2 and job.attempts == 2


def test_a_retry_past_the_last_attempt_fails_saying_why(
    node: Node, sqlite_store: SqliteStore
) -> None:
    job = ended(sqlite_store, submit(sqlite_store, "never_ready", 1))
    assert job.state is JobState.FAILED and job.attempts == 2
    assert job.error == (
        "Retry: the task asked to be retried in 0s: still warming up; "
        "no attempts left (attempt 2 of 2)"
    )


def test_a_retry_waits_for_its_delay(node: Node, sqlite_store: SqliteStore) -> None:
    job_id = submit(sqlite_store, "later", 3)

    def requeued() -> Job | None:
        job = sqlite_store.read_job(job_id)
        return (
            job if job is not None and job.attempts == 1 and job.state is JobState.QUEUED else None
        )

    job = until(requeued, "the job back in the queue")
    assert job.run_after - sqlite_store.now() > 3500


def test_a_node_prunes_by_each_tasks_age_and_the_apps(
    node: Node, sqlite_store: SqliteStore
) -> None:
    ids = [submit(sqlite_store, t, 0) for t in ("brief", "plain", "wrong_value")]
    for job_id in ids:
        ended(sqlite_store, job_id)
    pruner = Pruner.for_app(sqlite_store, app, node.node_id)
    now = sqlite_store.now()
    first = pruner.run_once(now + 1.5 * DAY_S)
    assert first is not None and first.jobs == {("brief", JobState.SUCCEEDED): 1}
    assert pruner.run_once(now + 1.5 * DAY_S + 1) is None  # nothing was left due: wait a pass
    later = pruner.run_once(now + 1.5 * DAY_S + PRUNE_EVERY_S)
    assert later is not None and later.job_count == 0
    # three days on: past the app's two days for failures, not the week for succeeded jobs
    last = pruner.run_once(now + 3 * DAY_S)
    assert last is not None and last.jobs == {("wrong_value", JobState.FAILED): 1}
    assert [j.task for j in sqlite_store.list_jobs(JobFilter())] == ["plain"]


def test_a_backlog_is_pruned_a_batch_per_pass_at_every_heartbeat(
    node: Node, sqlite_store: SqliteStore
) -> None:
    for job_id in [submit(sqlite_store, "plain", 0) for _ in range(5)]:
        ended(sqlite_store, job_id)
    pruner = Pruner(sqlite_store, Retention(), {}, node.node_id, batch=2)
    week_on = sqlite_store.now() + 8 * DAY_S
    sizes = []
    while True:
        pruned = pruner.run_once(week_on)  # the same moment: due again only while a backlog is
        if pruned is None:
            break
        sizes.append(pruned.job_count)
    assert sizes == [2, 2, 1]
    assert not pruner.has_backlog and pruner.next_at == week_on + PRUNE_EVERY_S
