"""Conformance: sections that follow the load. Partitions whose runnable jobs wait behind a busy
owner are lent to a node with free slots, fenced and recorded like any rebalance, and given back
as the load evens out."""

from __future__ import annotations

from shoal.load import LoadPolicy, Move, MoveKind
from shoal.model import EventKind, NewJob, NodeRecord, NodeState, Outcome
from shoal.store import Store

CLAIMS_BY_TASK = True  # PostgreSQL claims both ways (tests/conftest.py)

NOW = LoadPolicy(min_wait_s=0.0, hold_s=0.0)  # no waiting, no hysteresis: decide on the spot


def node(store: Store, name: str, slots: int) -> NodeRecord:
    record = store.register_node(name, "host", 1, slots, ["t"], 30.0)
    assert store.set_node_state(record.id, NodeState.INITIALIZING, NodeState.WAITING)
    found = store.read_node(record.id)
    assert found is not None
    return found


def submit_to(store: Store, owner: int, count: int) -> list[int]:
    """Submit jobs until `count` landed in `owner`'s section; the others are cancelled."""
    mine: list[int] = []
    owners = store.read_cluster().owners
    while len(mine) < count:
        [job_id] = store.submit_jobs([NewJob("t", "[]", "{}")])
        if owners[job_id % len(owners)] == owner:
            mine.append(job_id)
        else:
            assert store.cancel_job(job_id)
    return mine


def test_backlog_behind_a_busy_node_is_lent_to_a_free_one(store: Store) -> None:
    busy = node(store, "busy", 1)
    free = node(store, "free", 4)
    jobs = submit_to(store, busy.id, 3)
    [running] = store.claim_jobs(busy.id, 1)  # its one slot is taken; two jobs wait
    epoch = store.read_cluster().epoch

    assert store.follow_load(NOW) >= 1

    view = store.read_cluster()
    lent = [p for p, (o, h) in enumerate(zip(view.owners, view.homes, strict=True)) if o != h]
    assert lent and all(view.owners[p] == free.id and view.homes[p] == busy.id for p in lent)
    assert view.epoch == epoch + 1
    sections = {n.id: set(n.section) for n in view.nodes}
    assert set(lent) <= sections[free.id] and not set(lent) & sections[busy.id]
    claimed = store.claim_jobs(free.id, 10)  # the free node starts the waiting jobs
    assert {j.id for j in claimed} == set(jobs) - {running.id}
    assert store.claim_jobs(busy.id, 10) == []  # a claim on a partition that moved away
    # The job in flight stays where it runs, and its outcome is still fenced to its claimer.
    assert store.finish_jobs(busy.id, [Outcome(running.id, running.attempts, True, "1")])
    [event] = [e for e in store.read_history(0) if e.kind is EventKind.LOAD_MOVE]
    assert event.epoch == epoch + 1 and event.owners == view.owners
    assert f"lent {len(lent)} from node {busy.id} to node {free.id}" in event.reason
    assert "in the last minute" in event.reason


def test_lent_partitions_go_home_once_idle(store: Store) -> None:
    busy = node(store, "busy", 1)
    free = node(store, "free", 4)
    submit_to(store, busy.id, 3)
    store.claim_jobs(busy.id, 1)
    assert store.follow_load(NOW) >= 1
    for job in store.claim_jobs(free.id, 10):
        assert store.finish_jobs(free.id, [Outcome(job.id, job.attempts, True, "1")])

    assert store.follow_load(NOW) >= 1  # nothing runnable in them now: back home

    view = store.read_cluster()
    assert view.owners == view.homes
    reasons = [e.reason for e in store.read_history(0) if e.kind is EventKind.LOAD_MOVE]
    assert len(reasons) == 2 and "gave back" in reasons[1]


def test_nothing_moves_while_the_owner_has_free_slots_or_a_move_is_recent(store: Store) -> None:
    owner = node(store, "owner", 4)
    node(store, "other", 4)
    submit_to(store, owner.id, 2)
    assert store.follow_load(NOW) == 0  # its owner can start them itself
    store.claim_jobs(owner.id, 4)
    submit_to(store, owner.id, 5)
    store.claim_jobs(owner.id, 2)  # now all four slots run
    assert store.follow_load(LoadPolicy(min_wait_s=3600.0)) == 0  # not waited long enough
    assert store.follow_load(NOW) >= 1
    assert store.follow_load(LoadPolicy(min_wait_s=0.0, hold_s=3600.0)) == 0  # hysteresis


def test_a_stale_move_is_refused_by_the_datastore(store: Store) -> None:
    a = node(store, "a", 4)
    b = node(store, "b", 4)
    owners = store.read_cluster().owners
    mine = owners.index(a.id)
    # Planned from a view in which b owned it, or towards a node that is gone: neither applies.
    assert store.apply_load_moves([Move(mine, b.id, b.id, MoveKind.LEND)]) == 0
    assert store.set_node_state(b.id, NodeState.WAITING, NodeState.DEAD)
    assert store.apply_load_moves([Move(mine, a.id, b.id, MoveKind.LEND)]) == 0
    assert store.read_cluster().owners == (a.id,) * len(owners)


def test_membership_changes_keep_a_lent_partition_with_its_live_borrower(store: Store) -> None:
    busy = node(store, "busy", 1)
    free = node(store, "free", 4)
    submit_to(store, busy.id, 3)
    store.claim_jobs(busy.id, 1)
    assert store.follow_load(NOW) >= 1
    lent = {p for p, (o, h) in enumerate(zip(*_owners_homes(store), strict=True)) if o != h}
    node(store, "third", 4)  # a membership change: homes move, the loan stays
    owners, homes = _owners_homes(store)
    assert all(owners[p] == free.id for p in lent)
    assert set(homes) == {busy.id, free.id} | {max(h for h in homes if h is not None)}
    assert store.set_node_state(free.id, NodeState.WAITING, NodeState.DEAD)  # the borrower goes
    owners, homes = _owners_homes(store)
    assert owners == homes and free.id not in owners


def _owners_homes(store: Store) -> tuple[tuple[int | None, ...], tuple[int | None, ...]]:
    view = store.read_cluster()
    return view.owners, view.homes


def test_a_partition_moved_by_a_join_may_be_lent_at_once(store: Store) -> None:
    # The hold keeps load moves from flapping; a node joining is no load move, so the partitions
    # it took may be lent on at once.
    node(store, "first", 4)
    busy = node(store, "busy", 1)  # joining moves half the partitions to it
    node(store, "free", 4)
    submit_to(store, busy.id, 3)
    store.claim_jobs(busy.id, 1)
    assert store.follow_load(LoadPolicy(min_wait_s=0.0, hold_s=3600.0)) >= 1
