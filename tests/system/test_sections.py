"""Sections that follow the work, with real node processes: spread sections put a burst on every
node, short jobs do not wait behind long ones while slots are free, shares follow slots, and at
every sampled moment each partition has exactly one owner. The tests assert order and shares,
not timing."""

from __future__ import annotations

import itertools
from collections import Counter
from pathlib import Path

from test_cluster import wait_live

from shoal.model import JobState, NewJob, NodeState
from shoal.store import Store, open_store

from realnodes import Cluster, until


def submit(store: Store, task: str, args: list[str], count: int) -> list[int]:
    return store.submit_jobs([NewJob(task, f"[{', '.join(args)}]", "{}")] * count)


def finished(store: Store, ids: list[int]) -> bool:
    return all((job := store.read_job(i)) is not None and job.state.is_final for i in ids)


def assert_one_owner_each(store: Store) -> None:
    """In one snapshot: the owners cover every partition, and each live node's section is
    exactly the partitions the owners give it (no partition in two sections)."""
    view = store.read_cluster()
    owned: dict[int, set[int]] = {}
    for partition, owner in enumerate(view.owners):
        assert owner is not None, f"partition {partition} has no owner"
        owned.setdefault(owner, set()).add(partition)
    live = [n for n in view.nodes if n.state in (NodeState.WAITING, NodeState.WORKING)]
    for node in live:
        assert set(node.section) == owned.get(node.id, set()), node.name
    assert sum(len(n.section) for n in live) == view.partitions


def test_a_burst_reaches_every_node_and_no_partition_has_two_owners(cluster: Cluster) -> None:
    store = open_store(cluster.url)
    cluster.start("a", "--concurrency", "4")
    wait_live(store, {"a"})
    cluster.start("b", "--concurrency", "4")
    nodes = wait_live(store, {"a", "b"})
    ids = submit(store, "work", ["1", "0.2"], 40)
    while not finished(store, ids):  # sample ownership throughout the run
        assert_one_owner_each(store)
    ran = Counter(store.read_job(i).claimer for i in ids)  # type: ignore[union-attr]
    assert set(ran) == set(nodes.values())
    assert all(12 <= n <= 28 for n in ran.values()), ran  # about half each
    # Consecutive ids go to different nodes: sections are spread, not ranges.
    claimers = [store.read_job(i).claimer for i in ids]  # type: ignore[union-attr]
    assert sum(a != b for a, b in itertools.pairwise(claimers)) >= 30


def test_short_jobs_do_not_wait_behind_long_ones_while_slots_are_free(
    cluster: Cluster, tmp_path: Path
) -> None:
    store = open_store(cluster.url)
    cluster.start("a", "--concurrency", "4")
    wait_live(store, {"a"})
    cluster.start("b", "--concurrency", "4")
    wait_live(store, {"a", "b"})
    marker = tmp_path / "release-the-long-jobs"
    long_ids = submit(store, "hold", [f'"{marker}"', "60"], 4)
    short_ids = submit(store, "work", ["1", "0.05"], 20)
    until(lambda: finished(store, short_ids), timeout_s=60, what="the short jobs")
    # Every short job is done while the long ones still run: none waited behind them.
    assert all(store.read_job(i).state is JobState.RUNNING for i in long_ids)  # type: ignore[union-attr]
    marker.touch()
    until(lambda: finished(store, long_ids), timeout_s=30, what="the long jobs")
    last_short = max(store.read_job(i).finished_at for i in short_ids)  # type: ignore[union-attr,type-var]
    first_long = min(store.read_job(i).finished_at for i in long_ids)  # type: ignore[union-attr,type-var]
    assert last_short < first_long


def test_shares_follow_slots(cluster: Cluster) -> None:
    store = open_store(cluster.url)
    cluster.start("small", "--concurrency", "1")
    wait_live(store, {"small"})
    cluster.start("big", "--concurrency", "8")
    nodes = wait_live(store, {"small", "big"})
    view = store.read_cluster()
    section = {n.name: len(n.section) for n in view.nodes if n.name in nodes}
    ideal = view.partitions / 9
    assert abs(section["small"] - ideal) < 1 and abs(section["big"] - 8 * ideal) < 1
    ids = submit(store, "work", ["1", "0.02"], 90)
    until(lambda: finished(store, ids), timeout_s=60, what="the jobs")
    ran = Counter(store.read_job(i).claimer for i in ids)  # type: ignore[union-attr]
    assert ran[nodes["big"]] >= 70, ran  # about 8 of every 9 jobs
