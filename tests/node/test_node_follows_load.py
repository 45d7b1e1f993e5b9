"""Real nodes stepped by the test: jobs waiting behind a busy node start on a node with free
slots, and the lent partitions go home once the load evens out."""

from __future__ import annotations

import time
from collections.abc import Callable

from shoal.model import EventKind, NewJob
from shoal.node import Node
from shoal.store.sqlite import SqliteStore

from steered import Steered, until


def turn(*nodes: Node) -> None:
    for node in nodes:
        node.wait(min(node.step(time.monotonic()), 0.01))


def test_jobs_waiting_behind_a_busy_node_start_on_a_free_one(
    make_node: Callable[..., Node], sqlite_store: SqliteStore, steered: Steered
):
    busy, free = make_node("busy", concurrency=1), make_node("free", concurrency=4)
    until(lambda: turn(busy, free) or (busy.loop and free.loop), "both registered")
    owners = sqlite_store.read_cluster().owners
    ids: list[int] = []  # three long jobs in the busy node's section (the rest cancelled)
    while len(ids) < 3:
        [job_id] = sqlite_store.submit_jobs([NewJob("hold", "[]", "{}", max_attempts=1)])
        if owners[job_id % len(owners)] == busy.node_id:
            ids.append(job_id)
        else:
            assert sqlite_store.cancel_job(job_id)

    def started_by() -> list[int] | None:
        turn(busy, free)
        jobs = [job for i in ids if (job := sqlite_store.read_job(i)) and job.claimer]
        if len(jobs) < 3 or not steered.have_started([(j.id, j.attempts) for j in jobs]):
            return None
        return [j.claimer for j in jobs if j.claimer is not None]

    # The busy node can run one; the two waiting behind it move to the node with free slots.
    assert sorted(until(started_by, "all three jobs started")) == sorted(
        [busy.node_id, free.node_id, free.node_id]
    )
    [lent] = [e for e in sqlite_store.read_history(0) if e.kind is EventKind.LOAD_MOVE]
    assert (
        "lent " in lent.reason and f"from node {busy.node_id} to node {free.node_id}" in lent.reason
    )

    for job_id in ids:
        steered.succeed(job_id)

    def home_again() -> bool:
        turn(busy, free)
        view = sqlite_store.read_cluster()
        return view.owners == view.homes

    until(home_again, "the lent partition gone home")


def test_jobs_claimed_ahead_behind_a_slow_job_go_to_a_free_node(
    make_node: Callable[..., Node], sqlite_store: SqliteStore, steered: Steered
):
    # A budget of 0.2 s of work claimed ahead: the quick jobs below (a few ms each, however
    # slowly this test steps them) make the busy node claim ahead, while a running job older
    # than the budget stops it.
    busy = make_node("busy", concurrency=1, prefetch_budget_s=0.2)
    free = make_node("free", concurrency=4)
    until(lambda: turn(busy, free) or (busy.loop and free.loop), "both registered")
    owners = sqlite_store.read_cluster().owners

    def submit_to_busy(count: int) -> list[int]:
        ids: list[int] = []
        while len(ids) < count:
            [job_id] = sqlite_store.submit_jobs([NewJob("hold", "[]", "{}", max_attempts=1)])
            if owners[job_id % len(owners)] == busy.node_id:
                ids.append(job_id)
            else:
                assert sqlite_store.cancel_job(job_id)
        return ids

    def started(job_id: int) -> int | None:
        turn(busy, free)
        job = sqlite_store.read_job(job_id)
        if job and job.claimer and steered.have_started([(job.id, job.attempts)]):
            return job.claimer
        return None

    # Quick jobs first: the busy node learns to claim ahead.
    for job_id in submit_to_busy(3):
        until(lambda j=job_id: started(j), "a quick job started")
        steered.succeed(job_id)
    assert busy.loop is not None
    until(lambda: turn(busy, free) or not busy.loop.held, "the quick jobs recorded")
    assert busy.loop.prefetch() > 0

    # Then a slow one and four behind it, all at once: the busy node takes them together, runs
    # the slow one and gives back the others, which start on the free node meanwhile.
    slow, *behind = submit_to_busy(5)
    assert until(lambda: started(slow), "the slow job started") == busy.node_id
    for job_id in behind:
        assert until(lambda j=job_id: started(j), "a job behind the slow one started") == (
            free.node_id
        )
        job = sqlite_store.read_job(job_id)
        assert job is not None and job.attempts == 1  # given back uncharged
    steered.succeed(slow)
    for job_id in behind:
        steered.succeed(job_id)
