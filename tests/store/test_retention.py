"""Conformance, retention: old finished jobs are deleted by state, age and task, in bounded
batches that keep the counters equal to a full count; old history goes, the views of the present
keep what they are built from.
"""

from __future__ import annotations

import threading
from collections import Counter

from conformance import new_jobs, start_node

from shoal.model import JobFilter, JobState, NodeState, Outcome
from shoal.store import Store, open_store
from shoal.store.rules import DAY_S, PruneRule, Retention, prune_rules


def finish_some(store: Store, task: str, ok: int, failed: int = 0, cancelled: int = 0) -> None:
    """Submit and end jobs of `task`: `ok` succeeded, `failed` failed, `cancelled` cancelled."""
    node = start_node(store, f"finisher-{task}-{ok}-{failed}-{cancelled}", tasks=[task])
    store.submit_jobs(new_jobs(ok + failed, task=task, max_attempts=1))
    claimed = store.claim_jobs(node.id, ok + failed)
    assert len(claimed) == ok + failed
    outcomes = [
        Outcome(j.id, j.attempts, True, "1")
        if i < ok
        else Outcome(j.id, j.attempts, False, error="boom")
        for i, j in enumerate(claimed)
    ]
    assert all(store.finish_jobs(node.id, outcomes))
    for job_id in store.submit_jobs(new_jobs(cancelled, task=task)):
        assert store.cancel_job(job_id)
    assert store.set_node_state(node.id, NodeState.WORKING, NodeState.DEAD)


def stored(store: Store) -> Counter[tuple[str, JobState]]:
    """Jobs per (task, state), counted row by row."""
    return Counter((j.task, j.state) for j in store.list_jobs(JobFilter(), limit=1_000_000))


def assert_counts_are_a_full_count(store: Store) -> None:
    direct = stored(store)
    assert store.count_jobs_by_task() == {k: n for k, n in direct.items() if n}
    by_state = {s: sum(n for (_, st), n in direct.items() if st is s) for s in JobState}
    assert store.read_cluster().job_counts == by_state


def prune_all(store: Store, rule: PruneRule, limit: int = 1000) -> dict[str, int]:
    total: Counter[str] = Counter()
    while True:
        deleted = store.prune_jobs(rule, limit)
        total.update(deleted)
        if sum(deleted.values()) < limit:
            return dict(total)


def test_prune_deletes_only_the_state_and_age_its_rule_names(store: Store) -> None:
    finish_some(store, "t", ok=3, failed=2, cancelled=1)
    store.submit_jobs(new_jobs(1))  # still queued: never pruned
    now = store.now()
    assert store.prune_jobs(PruneRule(JobState.SUCCEEDED, now - 3600)) == {}
    assert store.count_prunable(PruneRule(JobState.SUCCEEDED, now + 1)) == {"t": 3}
    assert store.prune_jobs(PruneRule(JobState.SUCCEEDED, now + 1)) == {"t": 3}
    assert stored(store) == {
        ("t", JobState.FAILED): 2,
        ("t", JobState.CANCELLED): 1,
        ("t", JobState.QUEUED): 1,
    }
    assert store.prune_jobs(PruneRule(JobState.CANCELLED, now + 1)) == {"t": 1}
    assert_counts_are_a_full_count(store)


def test_each_task_keeps_its_own_age_and_the_rest_the_default(store: Store) -> None:
    finish_some(store, "short", ok=2, failed=1)
    finish_some(store, "long", ok=2, failed=1)
    finish_some(store, "plain", ok=2, failed=1)
    tasks = {
        "short": Retention(succeeded_s=DAY_S),
        "long": Retention(succeeded_s=60 * DAY_S, failed_s=float("inf")),
    }
    eight_days_on = store.now() + 8 * DAY_S
    for rule in prune_rules(eight_days_on, Retention(), tasks):
        prune_all(store, rule)
    # a week for succeeded jobs by default, a day for "short", two months for "long"; failures
    # are kept a month, "long"'s for ever
    assert stored(store) == {
        ("short", JobState.FAILED): 1,
        ("long", JobState.SUCCEEDED): 2,
        ("long", JobState.FAILED): 1,
        ("plain", JobState.FAILED): 1,
    }
    for rule in prune_rules(eight_days_on + 30 * DAY_S, Retention(), tasks):
        prune_all(store, rule)
    assert stored(store) == {("long", JobState.SUCCEEDED): 2, ("long", JobState.FAILED): 1}
    assert_counts_are_a_full_count(store)


def test_batches_are_bounded_and_counters_equal_a_full_count_after_each(store: Store) -> None:
    finish_some(store, "a", ok=15, failed=3)
    finish_some(store, "b", ok=10)
    rule = PruneRule(JobState.SUCCEEDED, store.now() + 1)
    sizes = []
    while True:
        deleted = store.prune_jobs(rule, limit=10)
        sizes.append(sum(deleted.values()))
        assert_counts_are_a_full_count(store)
        if sizes[-1] < 10:
            break
    assert sizes == [10, 10, 5, 0][: len(sizes)] and sum(sizes) == 25
    assert stored(store) == {("a", JobState.FAILED): 3}


def test_a_node_prunes_only_the_partitions_it_owns(store: Store) -> None:
    finish_some(store, "t", ok=40)
    a = start_node(store, "a")
    b = start_node(store, "b")
    a_section = set(store.read_node(a.id).section)  # type: ignore[union-attr]
    assert a_section and len(a_section) < 128
    rule = PruneRule(JobState.SUCCEEDED, store.now() + 1)
    deleted = store.prune_jobs(rule, node_id=a.id)
    left = store.list_jobs(JobFilter(), limit=100)
    assert {j.partition for j in left}.isdisjoint(a_section)
    assert deleted == {"t": 40 - len(left)}
    assert sum(store.prune_jobs(rule, node_id=b.id).values()) == len(left)
    assert stored(store) == {}
    assert_counts_are_a_full_count(store)


def test_a_rule_for_some_tasks_leaves_the_others(store: Store) -> None:
    finish_some(store, "x", ok=2)
    finish_some(store, "y", ok=3)
    finish_some(store, "z", ok=1)
    before = store.now() + 1
    assert store.prune_jobs(PruneRule(JobState.SUCCEEDED, before, ("x",))) == {"x": 2}
    assert store.prune_jobs(PruneRule(JobState.SUCCEEDED, before, None, ("y",))) == {"z": 1}
    assert stored(store) == {("y", JobState.SUCCEEDED): 3}


def test_history_prune_keeps_what_the_views_of_now_are_built_from(store: Store) -> None:
    a = start_node(store, "a")
    start_node(store, "b")
    assert store.record_sample(0.001)
    now = store.now()
    assert store.read_history_start() is not None
    events, samples = store.count_prunable_history(now + 1)
    assert events > 0 and samples == 1
    assert store.prune_history(now + 1, limit=1) == (1, 1)
    assert store.prune_history(now + 1) == (events - 1, 0)
    assert store.count_prunable_history(now + 1) == (0, 0)
    kept = store.read_history(0)
    assert {e.node_name for e in kept if e.kind.value == "node_state"} == {"a", "b"}
    assert sum(1 for e in kept if e.kind.value == "rebalance") == 1
    assert store.read_last_rebalance(now + 1) is not None
    assert {n.name for n in store.read_node_states_at(now + 1)} == {"a", "b"}
    assert store.read_node(a.id) is not None


def test_nodes_and_a_one_off_run_prune_at_once_each_row_once(store: Store, db_url: str) -> None:
    finish_some(store, "t", ok=300)
    nodes = [start_node(store, "a").id, start_node(store, "b").id, None]  # None: `shoal prune`
    rule = PruneRule(JobState.SUCCEEDED, store.now() + 1)
    totals: list[int] = []

    def prune(node_id: int | None) -> None:
        own = open_store(db_url)
        try:
            done = 0
            while True:
                n = sum(own.prune_jobs(rule, 20, node_id).values())
                done += n
                if n < 20:
                    break
            totals.append(done)
        finally:
            own.close()

    threads = [threading.Thread(target=prune, args=(n,)) for n in nodes]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    # rows one run skipped while another held them are left for the next pass
    rest = sum(prune_all(store, rule, 20).values())
    assert sum(totals) + rest == 300 and len(totals) == 3
    assert stored(store) == {}
    assert_counts_are_a_full_count(store)
