"""Conformance, nodes: registering, state changes, sections, death, recovery, pause, wake-ups.

Lease expiry is exercised with short leases and a poll with a deadline, never a fixed sleep.
"""

from __future__ import annotations

import threading
import time
from collections import Counter

import pytest
from conformance import P, new_jobs, owners_of, start_node, until

from shoal.errors import IllegalTransition, NodeNameTaken, NotFound
from shoal.model import (
    EventKind,
    JobState,
    NodeRecord,
    NodeState,
    Outcome,
)
from shoal.store import Store

# -- nodes and sections ----------------------------------------------------------------------


def test_registered_node_starts_initializing_and_owns_nothing(store: Store) -> None:
    node = store.register_node("a", "host", 42, 4, ["t", "u"], 30.0)
    assert node.state is NodeState.INITIALIZING
    assert node.section == ()
    assert set(owners_of(store)) == {None}
    assert store.known_tasks() == {"t", "u"}


def test_second_live_node_with_same_name_is_refused(store: Store) -> None:
    start_node(store, "a")
    with pytest.raises(NodeNameTaken, match="'a'"):
        store.register_node("a", "host", 2, 4, ["t"], 30.0)


def test_name_is_free_again_once_the_holder_lease_expires(store: Store) -> None:
    start_node(store, "a", lease_s=0.2)

    def register() -> NodeRecord | None:
        try:
            return store.register_node("a", "host", 2, 4, ["t"], 30.0)
        except NodeNameTaken:
            return None

    assert until(register)


def test_activated_nodes_partition_all_partitions_evenly(store: Store) -> None:
    nodes = [start_node(store, name) for name in "abc"]
    owners = owners_of(store)
    assert len(owners) == P
    counts = Counter(owners)
    assert set(counts) == {n.id for n in nodes}
    assert max(counts.values()) - min(counts.values()) <= 1
    view = store.read_cluster()
    sections = {n.id: set(n.section) for n in view.nodes}
    assert set().union(*sections.values()) == set(range(P))
    assert sum(len(s) for s in sections.values()) == P


def test_state_change_is_conditional_and_recorded(store: Store) -> None:
    node = start_node(store, "a")
    assert not store.set_node_state(node.id, NodeState.INITIALIZING, NodeState.WAITING)
    with pytest.raises(IllegalTransition):
        store.set_node_state(node.id, NodeState.WAITING, NodeState.INITIALIZING)
    events = store.read_history(0)
    transitions = [(e.from_state, e.to_state) for e in events if e.kind is EventKind.NODE_STATE]
    assert transitions == [
        (None, NodeState.INITIALIZING),
        (NodeState.INITIALIZING, NodeState.WAITING),
    ]
    rebalances = [e for e in events if e.kind is EventKind.REBALANCE]
    assert len(rebalances) == 1 and rebalances[0].owners == (node.id,) * P


# -- death and recovery ----------------------------------------------------------------------


def test_expired_lease_declares_node_dead_and_requeues_its_jobs(store: Store) -> None:
    a = start_node(store, "a", lease_s=0.3)
    b = start_node(store, "b")
    store.submit_jobs(new_jobs(40))
    held = store.claim_jobs(a.id, 40)
    assert held
    dead = until(store.mark_dead_nodes)
    assert dead == [a.id]
    assert store.heartbeat(a.id, 30.0) is None
    assert set(owners_of(store)) == {b.id}
    claimed = store.claim_jobs(b.id, 100)
    assert {j.id for j in held} <= {j.id for j in claimed}
    assert all(j.attempts == 2 for j in claimed if j.id in {h.id for h in held})
    late = [Outcome(j.id, j.attempts, True, "0") for j in held]
    assert store.finish_jobs(a.id, late) == [False] * len(held)


def test_dead_node_job_without_attempts_left_fails_with_reason(store: Store) -> None:
    a = start_node(store, "a", lease_s=0.3)
    start_node(store, "b")
    store.submit_jobs(new_jobs(200, max_attempts=1))
    held = store.claim_jobs(a.id, 1)
    until(store.mark_dead_nodes)
    job = store.read_job(held[0].id)
    assert job is not None and job.state is JobState.FAILED
    assert "died" in (job.error or "")


def test_departed_node_jobs_record_why_on_every_adapter_alike(store: Store) -> None:
    # The reason is the caller's text whatever it holds: a node name that looks like one of the
    # marks the per-job tail is filled in by stays as it was.
    a = start_node(store, "a{attempt}")
    store.submit_jobs(new_jobs(1, max_attempts=1) + new_jobs(1, max_attempts=3))
    last, spare = sorted(store.claim_jobs(a.id, 2), key=lambda j: j.id)
    assert store.set_node_state(a.id, NodeState.WORKING, NodeState.DEAD, "told to stop")
    failed, requeued = store.read_job(last.id), store.read_job(spare.id)
    assert failed is not None and failed.state is JobState.FAILED
    assert failed.error == (
        "node a{attempt} stopped: told to stop during attempt 1 of 1; no attempts left"
    )
    assert requeued is not None and requeued.state is JobState.QUEUED
    assert requeued.error == "node a{attempt} stopped: told to stop during attempt 1; requeued"
    assert requeued.claimer is None and requeued.attempts == 1


def test_state_change_records_the_given_reason_or_the_state_machines(store: Store) -> None:
    node = store.register_node("a", "host", 1, 4, ["t"], 30.0)
    assert store.set_node_state(node.id, NodeState.INITIALIZING, NodeState.WAITING)
    assert store.set_node_state(node.id, NodeState.WAITING, NodeState.PAUSED, "operator asked")
    with pytest.raises(IllegalTransition):
        store.set_node_state(node.id, NodeState.PAUSED, NodeState.WORKING, "never written")
    reasons = [e.reason for e in store.read_history(0) if e.kind is EventKind.NODE_STATE]
    assert reasons == ["registered", "registered and granted a section", "operator asked"]
    found = store.read_node(node.id)
    assert found is not None and found.state is NodeState.PAUSED


def test_pause_of_an_unknown_or_dead_node_says_which(store: Store) -> None:
    a = start_node(store, "a")
    with pytest.raises(NotFound, match=r"no node with id or name 'ghost'; see `shoal status`"):
        store.request_pause("ghost", True)
    assert store.set_node_state(a.id, NodeState.WAITING, NodeState.DEAD)
    with pytest.raises(NotFound, match=rf"node a \(id {a.id}\) is dead; it cannot pause"):
        store.request_pause(str(a.id), True)
    with pytest.raises(NotFound, match="is dead"):
        store.request_pause("a", False)


def test_taken_name_says_who_holds_it_and_for_how_long(store: Store) -> None:
    a = start_node(store, "a")
    with pytest.raises(NodeNameTaken) as taken:
        store.register_node("a", "host", 2, 4, ["t"], 30.0)
    text = str(taken.value)
    assert text.startswith(f"a live node named 'a' already exists (id {a.id}, waiting)")
    lease = float(text.split("its lease ends in ")[1].split("s.")[0])
    assert 0.0 < lease <= 30.0 and text.endswith("Pick another --name, or stop that node first.")


def test_live_node_heartbeat_extends_lease(store: Store) -> None:
    a = start_node(store, "a", lease_s=0.5)
    for _ in range(5):
        beat = store.heartbeat(a.id, 0.5)
        assert beat is not None and beat.state is NodeState.WAITING
        assert len(beat.section) == P
        time.sleep(0.15)  # heartbeats are due periodically; this is the period, not a wait
        assert store.mark_dead_nodes() == []


def test_stopping_a_node_requeues_its_jobs_and_hands_its_section_over(store: Store) -> None:
    a, b = start_node(store, "a"), start_node(store, "b")
    store.submit_jobs(new_jobs(20))
    held = store.claim_jobs(a.id, 20)
    state = store.read_node(a.id).state  # type: ignore[union-attr]
    assert store.set_node_state(a.id, state, NodeState.DEAD, "stopped")
    assert set(owners_of(store)) == {b.id}
    assert {j.id for j in store.claim_jobs(b.id, 100)} >= {j.id for j in held}


# -- pause -----------------------------------------------------------------------------------


def test_pause_request_gives_the_section_away_and_resume_takes_one_back(store: Store) -> None:
    a, b = start_node(store, "a"), start_node(store, "b")
    paused = store.request_pause("a", True)
    assert paused.pause_requested and paused.section == ()
    assert set(owners_of(store)) == {b.id}
    store.submit_jobs(new_jobs(10))
    assert store.claim_jobs(a.id, 10) == []
    assert store.set_node_state(a.id, NodeState.WAITING, NodeState.PAUSED)
    store.request_pause(str(a.id), False)
    assert set(owners_of(store)) == {b.id}  # a paused node rejoins when it resumes itself
    assert store.set_node_state(a.id, NodeState.PAUSED, NodeState.WAITING)
    assert set(owners_of(store)) == {a.id, b.id}
    with pytest.raises(NotFound):
        store.request_pause("nobody", True)


def test_a_pause_request_may_say_why_in_the_history(store: Store) -> None:
    start_node(store, "a")
    since = store.now() - 1
    store.request_pause("a", True, "its worker process cannot load the app")
    store.request_pause("a", False)
    reasons = [e.reason for e in store.read_history(since) if e.kind == "pause_request"]
    assert reasons[-2:] == [
        "pause requested: its worker process cannot load the app",
        "resume requested",
    ], reasons


# -- capabilities ----------------------------------------------------------------------------


def test_wake_ups_behave_as_the_store_declares(store: Store) -> None:
    node = start_node(store, "n")
    store.wait_for_work(node.id, 0.01)  # a first call may report what it could have missed
    if not store.supports_wakeups:
        started = time.monotonic()
        assert store.wait_for_work(node.id, 0.05) is False
        assert time.monotonic() - started >= 0.05  # it waits: a node polling on it cannot spin
        return
    woke: list[bool] = []
    waiter = threading.Thread(target=lambda: woke.append(store.wait_for_work(node.id, 30.0)))
    waiter.start()
    store.submit_jobs(new_jobs(1))
    waiter.join(10.0)
    assert woke == [True]
