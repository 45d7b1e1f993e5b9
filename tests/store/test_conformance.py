"""The storage conformance suite: written once, run against every adapter.

Each test gets a fresh, initialised datastore (P = 128) through the `store` fixture, which is
parametrised over SQLite and PostgreSQL. Lease expiry is exercised with short leases and a poll
with a deadline, never a fixed sleep.
"""

from __future__ import annotations

import random
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Callable
from importlib import resources
from pathlib import Path

import pytest

from shoal.errors import IllegalTransition, NodeNameTaken, NotFound, SchemaError
from shoal.model import (
    EventKind,
    JobFilter,
    JobState,
    NewJob,
    NodeRecord,
    NodeState,
    Outcome,
    ProgressUpdate,
)
from shoal.store import Store, open_store
from shoal.store.sqlite import SCHEMA_VERSION

P = 128


def new_jobs(n: int, task: str = "t", **kw: object) -> list[NewJob]:
    return [NewJob(task, f"[{i}]", "{}", **kw) for i in range(n)]  # type: ignore[arg-type]


def start_node(store: Store, name: str, lease_s: float = 30.0) -> NodeRecord:
    node = store.register_node(name, "host", 1, 4, ["t"], lease_s)
    assert store.set_node_state(node.id, NodeState.INITIALIZING, NodeState.WAITING)
    found = store.read_node(node.id)
    assert found is not None
    return found


def until(condition: Callable[[], object], timeout_s: float = 10.0) -> object:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError("condition not met before the deadline")


def owners_of(store: Store) -> tuple[int | None, ...]:
    return store.read_cluster().owners


# -- jobs ------------------------------------------------------------------------------------


def test_submitted_jobs_get_sequential_ids_and_partition_by_modulo(store: Store) -> None:
    first = store.submit_jobs(new_jobs(3))
    second = store.submit_jobs(new_jobs(200))
    ids = first + second
    assert ids == list(range(ids[0], ids[0] + 203))
    for job_id in (ids[0], ids[130], ids[-1]):
        job = store.read_job(job_id)
        assert job is not None
        assert job.partition == job_id % P
        assert job.state is JobState.QUEUED and job.attempts == 0


def test_job_fields_round_trip(store: Store) -> None:
    [job_id] = store.submit_jobs([NewJob("resize", '["a.png"]', '{"width": 100}', 3, 2.5)])
    job = store.read_job(job_id)
    assert job is not None
    assert (job.task, job.args, job.kwargs) == ("resize", ["a.png"], {"width": 100})
    assert (job.max_attempts, job.timeout_s, job.claimer, job.result) == (3, 2.5, None, None)
    assert job.created_at == pytest.approx(store.now(), abs=5)
    assert store.read_job(job_id + 1000) is None


def test_cancel_applies_only_to_queued_jobs(store: Store) -> None:
    node = start_node(store, "a")
    a, b = store.submit_jobs(new_jobs(2))
    assert store.cancel_job(a)
    assert store.read_job(a).state is JobState.CANCELLED  # type: ignore[union-attr]
    [claimed] = store.claim_jobs(node.id, 10)
    assert claimed.id == b
    assert not store.cancel_job(b)


def test_list_jobs_filters_newest_first_and_pages(store: Store) -> None:
    ids = store.submit_jobs(new_jobs(5, task="x") + new_jobs(5, task="y"))
    page = store.list_jobs(JobFilter(task="y"), limit=3)
    assert [j.id for j in page] == ids[9:6:-1]
    more = store.list_jobs(JobFilter(task="y"), limit=3, before_id=page[-1].id)
    assert [j.id for j in more] == ids[6:4:-1]
    ranged = store.list_jobs(JobFilter(min_id=ids[1], max_id=ids[2]))
    assert {j.id for j in ranged} == {ids[1], ids[2]}
    assert len(store.list_jobs(JobFilter(state=JobState.QUEUED), limit=100)) == 10


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


def test_node_claims_only_jobs_of_its_own_section(store: Store) -> None:
    a, b = start_node(store, "a"), start_node(store, "b")
    store.submit_jobs(new_jobs(300))
    owners = owners_of(store)
    for node in (a, b):
        claimed = store.claim_jobs(node.id, 500)
        assert claimed
        assert all(owners[j.partition] == node.id for j in claimed)
        assert all(j.claimer == node.id and j.attempts == 1 for j in claimed)
    assert store.read_cluster().job_counts[JobState.QUEUED] == 0


def test_claim_takes_oldest_first_and_moves_node_to_working(store: Store) -> None:
    node = start_node(store, "a")
    ids = store.submit_jobs(new_jobs(10))
    claimed = store.claim_jobs(node.id, 4)
    assert [j.id for j in claimed] == ids[:4]
    assert store.read_node(node.id).state is NodeState.WORKING  # type: ignore[union-attr]


def test_initializing_node_cannot_claim(store: Store) -> None:
    start_node(store, "a")
    fresh = store.register_node("b", "host", 2, 4, ["t"], 30.0)
    store.submit_jobs(new_jobs(50))
    assert store.claim_jobs(fresh.id, 50) == []


def test_delayed_job_is_not_claimed_before_its_time(store: Store) -> None:
    node = start_node(store, "a")
    store.submit_jobs(new_jobs(1, delay_s=3600.0))
    assert store.claim_jobs(node.id, 10) == []


# -- fencing ---------------------------------------------------------------------------------


def test_finish_is_fenced_by_claimer_and_attempt(store: Store) -> None:
    a, b = start_node(store, "a"), start_node(store, "b")
    store.submit_jobs(new_jobs(20))
    [job] = store.claim_jobs(a.id, 1)
    wrong = [
        Outcome(job.id, job.attempts + 1, True, "1"),
        Outcome(job.id, job.attempts, True, "1"),
    ]
    assert store.finish_jobs(b.id, wrong[1:]) == [False]
    assert store.finish_jobs(a.id, wrong) == [False, True]
    assert store.finish_jobs(a.id, wrong[1:]) == [False]  # a second outcome never applies
    done = store.read_job(job.id)
    assert done is not None and done.state is JobState.SUCCEEDED and done.result == 1
    assert store.read_node(a.id).processed == 1  # type: ignore[union-attr]


def test_progress_is_fenced(store: Store) -> None:
    node = start_node(store, "a")
    store.submit_jobs(new_jobs(1))
    [job] = store.claim_jobs(node.id, 1)
    updates = [
        ProgressUpdate(job.id, job.attempts, 0.5, "half"),
        ProgressUpdate(job.id, job.attempts + 1, 0.9, "stale"),
    ]
    assert store.record_progress(node.id, updates) == 1
    seen = store.read_job(job.id)
    assert seen is not None and (seen.progress, seen.progress_message) == (0.5, "half")


def test_retry_requeues_with_backoff_and_keeps_the_error(store: Store) -> None:
    node = start_node(store, "a")
    store.submit_jobs(new_jobs(1))
    [job] = store.claim_jobs(node.id, 1)
    retry = Outcome(job.id, 1, False, error="boom", traceback="tb", retry_in_s=3600.0)
    assert store.finish_jobs(node.id, [retry]) == [True]
    again = store.read_job(job.id)
    assert again is not None and again.state is JobState.QUEUED and again.error == "boom"
    assert again.run_after > store.now() + 3000
    assert store.claim_jobs(node.id, 1) == []
    assert store.read_node(node.id).failed == 1  # type: ignore[union-attr]


def test_final_failure_records_error_and_traceback(store: Store) -> None:
    node = start_node(store, "a")
    store.submit_jobs(new_jobs(1))
    [job] = store.claim_jobs(node.id, 1)
    store.finish_jobs(node.id, [Outcome(job.id, 1, False, error="ValueError: x", traceback="T")])
    failed = store.read_job(job.id)
    assert failed is not None and failed.state is JobState.FAILED
    assert (failed.error, failed.traceback) == ("ValueError: x", "T")
    assert failed.finished_at is not None


def test_released_jobs_return_to_queue_without_counting_the_attempt(store: Store) -> None:
    node = start_node(store, "a")
    store.submit_jobs(new_jobs(3))
    claimed = store.claim_jobs(node.id, 3)
    assert store.release_jobs(node.id, [j.id for j in claimed]) == 3
    again = store.claim_jobs(node.id, 3)
    assert [j.attempts for j in again] == [1, 1, 1]


def test_running_attempts_are_what_the_node_holds_and_nothing_else(store: Store) -> None:
    a = start_node(store, "a")
    b = start_node(store, "b")
    store.submit_jobs(new_jobs(6))
    mine = store.claim_jobs(a.id, 3) + store.claim_jobs(b.id, 3)
    mine = [j for j in mine if j.claimer == a.id]
    assert mine
    store.finish_jobs(a.id, [Outcome(mine[0].id, mine[0].attempts, True, "1")])
    assert store.running_attempts(a.id) == [(j.id, j.attempts) for j in mine[1:]]
    assert store.interruptions == 0


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


# -- races -----------------------------------------------------------------------------------


def test_concurrent_claims_claim_each_job_exactly_once(store: Store, db_url: str) -> None:
    nodes = [start_node(store, f"n{i}") for i in range(4)]
    ids = store.submit_jobs(new_jobs(600))
    claims: list[tuple[int, int, int]] = []
    lock = threading.Lock()
    owners = owners_of(store)

    def worker(node: NodeRecord) -> None:
        own = open_store(db_url)  # each worker has its own connection, as nodes do
        try:
            while batch := own.claim_jobs(node.id, 7):
                with lock:
                    claims.extend((j.id, j.partition, node.id) for j in batch)
        finally:
            own.close()

    threads = [threading.Thread(target=worker, args=(n,)) for n in nodes + nodes]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(c[0] for c in claims) == ids
    assert all(owners[part] == node for _, part, node in claims)


# -- history and views -----------------------------------------------------------------------


def test_past_moment_shows_states_and_sections_as_they_were(store: Store) -> None:
    a = start_node(store, "a")
    before = store.now()
    until(lambda: store.now() > before)
    b = start_node(store, "b")
    then = {n.id: n for n in store.read_node_states_at(before)}
    assert set(then) == {a.id}
    assert then[a.id].state is NodeState.WAITING and len(then[a.id].section) == P
    now = {n.id: n for n in store.read_node_states_at(store.now())}
    assert len(now[a.id].section) == len(now[b.id].section) == P // 2


def test_sample_is_written_once_per_interval(store: Store) -> None:
    store.submit_jobs(new_jobs(5))
    assert store.record_sample(3600.0)
    assert not store.record_sample(3600.0)
    [sample] = store.read_samples(0)
    assert sample.queued == 5 and sample.interval_s == 3600.0


def test_counts_by_task_and_finished_list(store: Store) -> None:
    node = start_node(store, "a")
    store.submit_jobs(new_jobs(2, task="t") + new_jobs(1, task="u"))
    since = store.now()
    for job in store.claim_jobs(node.id, 1):
        store.finish_jobs(node.id, [Outcome(job.id, 1, True, "null")])
    counts = store.count_jobs_by_task()
    assert counts[("t", JobState.SUCCEEDED)] == 1 and counts[("u", JobState.QUEUED)] == 1
    assert [j.task for j in store.list_finished(since - 1)] == ["t"]


# -- job counts ------------------------------------------------------------------------------


def counted_directly(store: Store) -> Counter[tuple[str, JobState]]:
    """Jobs per (task, state), counted row by row: what the counters must always say."""
    return Counter((j.task, j.state) for j in store.list_jobs(JobFilter(), limit=1_000_000))


def assert_counts_match(store: Store, step: str) -> None:
    direct = counted_directly(store)
    assert store.count_jobs_by_task() == {k: n for k, n in direct.items() if n}, step
    by_state = {s: sum(n for (_, st), n in direct.items() if st is s) for s in JobState}
    assert store.read_cluster().job_counts == by_state, step


def test_counts_follow_every_state_change(store: Store) -> None:
    rng = random.Random(20240611)
    node = start_node(store, "a")
    held: dict[int, int] = {}  # job id -> attempt, for jobs node a holds
    for step in range(120):
        op = rng.choice(
            ["submit", "submit", "claim", "claim", "finish", "finish", "release"]
            + ["cancel"]
            + (["die"] if step % 30 == 29 else [])
        )
        if op == "submit":
            store.submit_jobs(
                new_jobs(rng.randint(1, 6), task=rng.choice("tu"), max_attempts=rng.randint(1, 3))
            )
        elif op == "claim":
            held.update((j.id, j.attempts) for j in store.claim_jobs(node.id, rng.randint(1, 5)))
        elif op == "finish" and held:
            picked = rng.sample(sorted(held), rng.randint(1, len(held)))
            outcomes = [_random_outcome(rng, job_id, held.pop(job_id)) for job_id in picked]
            assert all(store.finish_jobs(node.id, outcomes))
        elif op == "release" and held:
            picked = rng.sample(sorted(held), rng.randint(1, len(held)))
            assert store.release_jobs(node.id, picked) == len(picked)
            for job_id in picked:
                del held[job_id]
        elif op == "cancel":
            queued = store.list_jobs(JobFilter(state=JobState.QUEUED), limit=20)
            if queued:
                assert store.cancel_job(rng.choice(queued).id)
        elif op == "die":  # a second node claims, then its lease runs out
            doomed = start_node(store, f"d{step}", lease_s=0.3)
            assert store.claim_jobs(doomed.id, 10) is not None
            assert until(store.mark_dead_nodes) == [doomed.id]
        assert_counts_match(store, f"step {step}: {op}")
    assert store.record_sample(3600.0)
    [sample] = store.read_samples(0)
    direct = counted_directly(store)
    assert sample.queued == sum(n for (_, s), n in direct.items() if s is JobState.QUEUED)
    assert sample.running == sum(n for (_, s), n in direct.items() if s is JobState.RUNNING)


def _random_outcome(rng: random.Random, job_id: int, attempt: int) -> Outcome:
    kind = rng.choice(["success", "retry", "failure"])
    if kind == "success":
        return Outcome(job_id, attempt, True, "1")
    retry = 0.0 if kind == "retry" else None
    return Outcome(job_id, attempt, False, error="boom", traceback="tb", retry_in_s=retry)


def test_opening_a_v1_sqlite_file_migrates_it_and_backfills_the_counts(tmp_path: Path) -> None:
    path = tmp_path / "v1.db"
    script = resources.files("shoal.store.sqlite").joinpath("migrations/0001_initial.sql").read_text()
    with sqlite3.connect(path) as conn:  # a file as Shoal 1 left it
        conn.executescript(script)
        conn.execute("INSERT INTO shoal_meta (key, value) VALUES ('schema_version', '1')")
        conn.execute(
            "INSERT INTO cluster (id, partitions, next_job_id, created_at) VALUES (1, 128, 1201, 0)"
        )
        conn.executemany("INSERT INTO partitions (partition) VALUES (?)", [(p,) for p in range(P)])
        states = ["queued", "succeeded", "failed", "cancelled"]
        conn.executemany(
            "INSERT INTO jobs (id, partition, task, args, kwargs, state, max_attempts, run_after,"
            " created_at) VALUES (?, ?, ?, '[]', '{}', ?, 1, 0, 0)",
            [(i, i % P, "a" if i % 3 == 0 else "b", states[i % 4]) for i in range(1, 1201)],
        )
    url = f"sqlite:///{path}"
    with pytest.raises(SchemaError, match="shoal init"):
        open_store(url, create=False)  # only a store that may create migrates
    store = open_store(url)
    try:
        counts = store.count_jobs_by_task()
        assert counts[("a", JobState.QUEUED)] == 100 and counts[("b", JobState.FAILED)] == 200
        assert sum(counts.values()) == 1200
        node = start_node(store, "n")
        assert len(store.claim_jobs(node.id, 10)) == 10
        assert_counts_match(store, "after a claim on the migrated file")
    finally:
        store.close()
    with sqlite3.connect(path) as conn:
        names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='index'")}
        version = conn.execute("SELECT value FROM shoal_meta WHERE key='schema_version'").fetchone()
    assert version == (str(SCHEMA_VERSION),) and SCHEMA_VERSION == 2
    assert {"jobs_final", "jobs_task_id"} <= names and not {"jobs_state", "jobs_task"} & names
    again = open_store(url)  # a second open finds nothing left to do
    try:
        assert_counts_match(again, "reopened")
    finally:
        again.close()


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
