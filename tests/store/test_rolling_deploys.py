"""Conformance, rolling deploys: a node claims only jobs of the tasks it registers, and a node
that registers a task takes the jobs of that task waiting in sections whose owner lacks it.

Old nodes (without task "new") and new ones run side by side: a job of "new" whose partition an
old node owns is neither failed nor stuck; while no live node registers its task it stays queued.
"""

from __future__ import annotations

from collections import Counter

from conformance import new_jobs

from shoal.model import JobFilter, JobState, NodeRecord, NodeState
from shoal.store import Store

CLAIMS_BY_TASK = True  # PostgreSQL claims both ways (tests/conftest.py)


def start(store: Store, name: str, tasks: list[str]) -> NodeRecord:
    node = store.register_node(name, "host", 1, 4, tasks, 30.0)
    assert store.set_node_state(node.id, NodeState.INITIALIZING, NodeState.WAITING)
    return node


def queued(store: Store) -> Counter[str]:
    return Counter(j.task for j in store.list_jobs(JobFilter(state=JobState.QUEUED), limit=1000))


def assert_counts_exact(store: Store) -> None:
    direct = Counter((j.task, j.state) for j in store.list_jobs(JobFilter(), limit=10_000))
    assert store.count_jobs_by_task() == {k: n for k, n in direct.items() if n}


def test_a_node_claims_only_jobs_of_the_tasks_it_registers(store: Store) -> None:
    old = start(store, "old", ["t"])
    store.submit_jobs(new_jobs(5, task="new") + new_jobs(5, task="t"))
    claimed = store.claim_jobs(old.id, 100)
    assert sorted(j.task for j in claimed) == ["t"] * 5
    assert store.claim_jobs(old.id, 100) == []  # the idle look finds nothing either
    assert queued(store) == {"new": 5}
    assert store.claim_stranded(old.id, 100) == []  # nobody lacks what old has


def test_jobs_of_a_task_the_owner_lacks_go_to_a_node_that_has_it(store: Store) -> None:
    old = start(store, "old", ["t"])
    new = start(store, "new", ["t", "new"])
    ids = store.submit_jobs(new_jobs(40, task="new") + new_jobs(40, task="t"))
    by_old = store.claim_jobs(old.id, 1000)
    by_new = store.claim_jobs(new.id, 1000)
    assert {j.task for j in by_old} == {"t"}
    assert by_old and any(j.task == "new" for j in by_new)
    left = queued(store)
    assert set(left) == {"new"}  # those in old's section
    taken = store.claim_stranded(new.id, 1000)
    assert len(taken) == left["new"] and {j.task for j in taken} == {"new"}
    assert all(j.claimer == new.id and j.attempts == 1 for j in taken)
    assert all(j.state is JobState.RUNNING for j in taken)
    held = {j.id for j in [*by_old, *by_new, *taken]}
    assert held == set(ids) and not queued(store)
    assert store.claim_stranded(new.id, 1000) == []
    assert_counts_exact(store)


def test_a_stranded_claim_takes_the_oldest_first_and_no_more_than_asked(store: Store) -> None:
    old = start(store, "old", ["t"])
    ids = store.submit_jobs(new_jobs(30, task="new"))
    new = start(store, "new", ["t", "new"])
    in_old = [j.id for j in store.list_jobs(JobFilter(state=JobState.QUEUED), limit=100)]
    mine = {j.id for j in store.claim_jobs(new.id, 100)}
    stranded = sorted(set(ids) - mine)
    assert stranded and set(stranded) <= set(in_old)
    taken = store.claim_stranded(new.id, 3)
    assert [j.id for j in taken] == stranded[:3]
    assert store.claim_jobs(old.id, 100) == []
    assert_counts_exact(store)


def test_a_job_whose_task_no_live_node_registers_stays_queued(store: Store) -> None:
    old = start(store, "old", ["t"])
    other = start(store, "other", ["t", "u"])
    [job_id] = store.submit_jobs(new_jobs(1, task="gone"))
    assert store.claim_jobs(old.id, 10) == [] and store.claim_jobs(other.id, 10) == []
    assert store.claim_stranded(old.id, 10) == [] and store.claim_stranded(other.id, 10) == []
    job = store.read_job(job_id)
    assert job is not None and job.state is JobState.QUEUED and job.attempts == 0


def test_a_paused_node_takes_no_stranded_jobs(store: Store) -> None:
    start(store, "old", ["t"])
    new = start(store, "new", ["t", "new"])
    store.submit_jobs(new_jobs(20, task="new"))
    store.request_pause("new", True)
    assert store.claim_stranded(new.id, 100) == []


def test_a_backlog_of_a_task_no_node_registers_holds_up_no_other_job(store: Store) -> None:
    """More than 4 such jobs per partition (of 128): claims go task by task past them."""
    node = start(store, "a", ["t"])
    store.submit_jobs(new_jobs(1_000, task="gone"))
    younger = store.submit_jobs(new_jobs(5, task="t"))
    first = store.claim_jobs(node.id, 3)
    assert [j.id for j in first + store.claim_jobs(node.id, 10)] == younger
    assert [j.id for j in first] == younger[:3]
    assert store.claim_jobs(node.id, 10) == []
    assert queued(store) == {"gone": 1_000}


def test_the_backlog_counts_only_jobs_their_partition_s_owner_can_take(store: Store) -> None:
    node = start(store, "a", ["t"])
    for gone, total in ((5, 3), (1_000, 6)):  # a few waiting, and past 4 per partition
        store.submit_jobs(new_jobs(gone, task="gone") + new_jobs(3, task="t"))
        backlog = store.read_load().backlog
        assert sum(b.runnable for b in backlog.values()) == total
    other = start(store, "b", ["t", "gone"])
    owners = store.read_load().owners
    backlog = store.read_load().backlog
    gone_at_b = sum(
        1
        for j in store.list_jobs(JobFilter(state=JobState.QUEUED, task="gone"), limit=2_000)
        if owners[j.id % len(owners)] == other.id
    )
    assert sum(b.runnable for b in backlog.values()) == 6 + gone_at_b
    assert node.id in owners and gone_at_b > 0
