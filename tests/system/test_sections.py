"""Sections that follow the work, with real node processes: spread sections put a burst on every
node, short jobs do not wait behind long ones while slots are free, shares follow slots, a
heavy-tailed mix on nodes of unequal slots keeps its short jobs clear of its long ones, and at
every sampled moment each partition has exactly one owner. The tests assert order and shares,
not timing."""

from __future__ import annotations

import itertools
import random
from collections import Counter
from pathlib import Path

from test_cluster import wait_live

from shoal.load import LoadPolicy
from shoal.model import JobState, NewJob, NodeState
from shoal.store import Store, open_store

from realnodes import Cluster, until

LONG_S = (1.0, 1.5)  # the long jobs' durations are drawn within these bounds
SHORT_MAX_S = 0.2  # the short jobs' cap, far below the shortest long one


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


def heavy_tailed_mix(seed: int, long: int, short: int) -> tuple[list[float], list[float]]:
    """Log-normal durations, the same on every run: `long` jobs around 1.25 s (within
    `LONG_S`), longest first, and `short` ones with a median of 30 ms (capped at `SHORT_MAX_S`)."""
    draw = random.Random(seed)
    lo, hi = LONG_S
    long_s = [round(min(hi, max(lo, draw.lognormvariate(0, 0.15) * 1.25)), 3) for _ in range(long)]
    short_s = [round(min(SHORT_MAX_S, draw.lognormvariate(0, 1.0) * 0.03), 3) for _ in range(short)]
    return sorted(long_s, reverse=True), short_s


def warm_up(store: Store) -> int:
    """One no-op job per partition, all run: every node's worker process has loaded the app when
    the measured jobs arrive. Returns the last job id."""
    ids = submit(store, "work", ["0"], store.read_cluster().partitions)
    until(lambda: finished(store, ids), timeout_s=30, what="the warm-up jobs")
    return max(ids)


def wait_settled(store: Store) -> None:
    """Until every section is at home and no partition has changed owner for the load policy's
    hold: a partition that moved more recently, by a join as much as by a loan, is not lent."""
    hold_s = LoadPolicy().hold_s

    def settled() -> bool:
        view = store.read_cluster()
        last = store.read_last_rebalance(view.now)
        return view.owners == view.homes and last is not None and view.now - last.at >= hold_s

    until(settled, what="sections settled")


def lay_out(
    owners: tuple[int | None, ...], first_id: int, long_on: list[int], long_s: list[float]
) -> dict[int, float]:
    """Where the long jobs go in a submit whose first job gets `first_id`: `long_s[k]` at the
    earliest place whose job falls in a partition of node `long_on[k]` (a job's partition is its
    id modulo the partition count). Returns place -> seconds."""
    places: dict[int, float] = {}
    for node, seconds in zip(long_on, long_s, strict=True):
        place = next(
            k
            for k in itertools.count()
            if k not in places and owners[(first_id + k) % len(owners)] == node
        )
        places[place] = seconds
    return places


def test_heavy_tailed_mix_keeps_short_jobs_clear_of_long_ones_on_unequal_nodes(
    sqlite_cluster: Cluster,
) -> None:
    cluster = sqlite_cluster
    store = open_store(cluster.url)
    slots = {"one": 1, "two": 2, "four": 4, "eight": 8}
    for name, count in slots.items():
        cluster.start(name, "--concurrency", str(count))
    nodes = wait_live(store, set(slots))
    first_id = warm_up(store) + 1
    wait_settled(store)
    long_s, short_s = heavy_tailed_mix(seed=1, long=4, short=56)
    # A long job at the head of every node's section, the longest on the 1-slot node: the short
    # jobs behind it there finish before it only by moving to nodes with free slots.
    owners = store.read_cluster().owners
    long_on = [nodes[name] for name in slots]
    places = lay_out(owners, first_id, long_on, long_s)
    rest = iter(short_s)
    seconds = [places[k] if k in places else next(rest) for k in range(len(long_s) + len(short_s))]
    ids = store.submit_jobs([NewJob("work", f"[{i}, {s}]", "{}") for i, s in enumerate(seconds)])
    assert ids[0] == first_id  # the partitions `lay_out` chose are the jobs' own
    long_ids = [ids[k] for k in places]  # in the order of `long_on`
    short_ids = [i for k, i in enumerate(ids) if k not in places]

    def sampled_finished() -> bool:  # sample ownership throughout the run
        assert_one_owner_each(store)
        return finished(store, ids)

    until(sampled_finished, timeout_s=60, what="the heavy-tailed mix")
    jobs = {job.id: job for job in map(store.read_job, ids) if job is not None}
    assert jobs.keys() == set(ids)
    for job in jobs.values():
        assert job.state is JobState.SUCCEEDED and job.attempts == 1, job
    done = {i: job.finished_at for i, job in jobs.items() if job.finished_at is not None}
    ran = Counter(job.claimer for job in jobs.values())
    assert [jobs[i].claimer for i in long_ids] == long_on  # each long job where it was placed
    # Every short job, those in the 1-slot node's section included, finishes before the last
    # long one: none queued behind a long job while other nodes had free slots.
    last_long = max(done[i] for i in long_ids)
    late = [i for i in short_ids if done[i] > last_long]
    assert not late, f"short jobs finished after the last long one: {late}"
    assert all(ran[node] >= 1 for node in nodes.values()), ran
    assert ran[nodes["eight"]] > ran[nodes["one"]], ran
