"""A real node on a thread works through a backlog by priority, then by age, and the app's
keyed submits reach it as one job."""

from __future__ import annotations

from collections.abc import Callable

from shoal.app import App
from shoal.model import JobState, NodeState
from shoal.node import Node
from shoal.store.sqlite import SqliteStore

from steered import Steered, until


def test_a_node_runs_its_backlog_highest_priority_first(
    make_node: Callable[..., Node], sqlite_store: SqliteStore, steered: Steered, app: App
):
    hold = app.get_task("hold")
    priorities = [0, 3, -5, 3, 10, 0, 7, -5, 10, 1]
    handles = [hold.submit_with(priority=p) for p in priorities]
    expected = [h.id for _, h in sorted(zip(priorities, handles, strict=True), key=lambda x: -x[0])]
    node = make_node("alpha", concurrency=1).start()
    ran: list[int] = []
    while len(ran) < len(handles):  # one slot: the started attempts come one at a time

        def started() -> int | None:
            new = sorted(steered.started_jobs() - set(ran))
            assert len(new) <= 1, f"{new} started at once on one slot"
            return new[0] if new else None

        job_id = until(started, "the next job started")
        ran.append(job_id)
        steered.succeed(job_id)
    assert ran == expected
    until(lambda: all(h.state is JobState.SUCCEEDED for h in handles), "all recorded")
    assert node.stop() == 0


def test_keyed_submits_from_the_app_make_one_job_while_it_is_held(
    make_node: Callable[..., Node], sqlite_store: SqliteStore, steered: Steered, app: App
):
    hold = app.get_task("hold")
    first = hold.submit_with(key="invoice-42", key_window_s=3600)
    again = hold.submit_with(key="invoice-42")
    batch = hold.submit_many([(), (), ()], keys=["invoice-42", "invoice-43", "invoice-43"])
    assert first.created and not again.created and again.id == first.id
    assert [h.id for h in batch] == [first.id, batch[1].id, batch[1].id]
    assert [h.created for h in batch] == [False, True, False]
    node = make_node("alpha").start()
    until(lambda: node.state is NodeState.WORKING, "alpha working")
    for job_id in (first.id, batch[1].id):
        until(lambda i=job_id: steered.have_started([(i, 1)]), f"job {job_id} started")
        steered.succeed(job_id)
    until(
        lambda: first.state is JobState.SUCCEEDED and batch[1].state is JobState.SUCCEEDED,
        "both recorded",
    )
    after = hold.submit_with(key="invoice-42")
    assert not after.created and after.id == first.id  # within its window
    assert sqlite_store.read_cluster().job_counts[JobState.SUCCEEDED] == 2
    assert node.stop() == 0
