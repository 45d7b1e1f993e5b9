"""Conformance, task limits: `max_running` and `max_per_s` hold across every node of the cluster,
on every adapter: concurrent claims never exceed them, jobs skipped for a limit hold up no other
task, and every way a job leaves `running` gives its room back.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Sequence

from conformance import new_jobs, until

from shoal.model import JobFilter, JobState, NodeRecord, NodeState, Outcome, TaskLimit
from shoal.store import Store, open_store

CLAIMS_BY_TASK = True  # PostgreSQL claims both ways (tests/conftest.py)


def start_limited(
    store: Store, name: str, limits: Sequence[TaskLimit], tasks: Sequence[str] = ("t", "u")
) -> NodeRecord:
    node = store.register_node(name, "host", 1, 4, list(tasks), 30.0, list(limits))
    assert store.set_node_state(node.id, NodeState.INITIALIZING, NodeState.WAITING)
    return node


def running_of(store: Store, task: str = "t") -> int:
    return len(store.list_jobs(JobFilter(state=JobState.RUNNING, task=task), limit=100_000))


def ok(job_id: int, attempt: int = 1) -> Outcome:
    return Outcome(job_id, attempt, True, result_json="null")


def limits_of(store: Store) -> dict[str, tuple[TaskLimit, int]]:
    return {u.limit.task: (u.limit, u.running) for u in store.read_task_limits()}


def test_registration_stores_the_declared_limits_and_the_latest_wins(store: Store) -> None:
    start_limited(store, "a", [TaskLimit("t", 2, 5.0)])
    assert limits_of(store) == {"t": (TaskLimit("t", 2, 5.0), 0)}
    start_limited(store, "b", [TaskLimit("t", 7)])
    assert limits_of(store) == {"t": (TaskLimit("t", 7, None), 0)}
    start_limited(store, "c", [])  # declares t without a limit: the limit is lifted
    assert limits_of(store) == {}
    start_limited(store, "d", [TaskLimit("u", None, 1.5)], tasks=["u"])
    assert limits_of(store) == {"u": (TaskLimit("u", None, 1.5), 0)}


def test_a_claim_takes_no_more_than_max_running(store: Store) -> None:
    node = start_limited(store, "a", [TaskLimit("t", 2)])
    store.submit_jobs(new_jobs(10))
    first = store.claim_jobs(node.id, 10)
    assert len(first) == 2
    assert store.claim_jobs(node.id, 10) == []
    assert store.finish_jobs(node.id, [ok(first[0].id)]) == [True]
    again = store.claim_jobs(node.id, 10)
    assert [j.id for j in again] == [first[1].id + 1]  # the oldest queued one
    assert running_of(store) == 2
    assert limits_of(store)["t"][1] == 2


def test_a_limited_backlog_holds_up_no_other_task(store: Store) -> None:
    node = start_limited(store, "a", [TaskLimit("t", 1)])
    store.submit_jobs(new_jobs(300, task="t"))
    younger = store.submit_jobs(new_jobs(5, task="u"))
    claimed = store.claim_jobs(node.id, 10)
    assert [j.task for j in claimed].count("t") == 1
    assert sorted(j.id for j in claimed if j.task == "u") == younger
    assert store.claim_jobs(node.id, 10) == []  # t is full, u is done: nothing claimable


def test_every_way_out_of_running_gives_the_room_back(store: Store) -> None:
    node = start_limited(store, "a", [TaskLimit("t", 1)])
    store.submit_jobs(new_jobs(5, max_attempts=3))

    def claim_one() -> int:
        [job] = store.claim_jobs(node.id, 5)
        assert store.claim_jobs(node.id, 5) == []
        return job.id

    job_id = claim_one()
    assert store.finish_jobs(node.id, [ok(job_id)]) == [True]  # success
    job_id = claim_one()
    retry = Outcome(job_id, 1, False, error="boom", retry_in_s=60.0)
    assert store.finish_jobs(node.id, [retry]) == [True]  # a retry, later
    job_id = claim_one()
    assert store.release_jobs(node.id, [job_id]) == 1  # released
    job_id = claim_one()
    assert store.set_node_state(node.id, NodeState.WORKING, NodeState.DEAD)  # requeued
    other = start_limited(store, "b", [TaskLimit("t", 1)])
    [job] = store.claim_jobs(other.id, 5)
    assert store.claim_jobs(other.id, 5) == []
    assert limits_of(store)["t"][1] == running_of(store) == 1
    failed = Outcome(job.id, job.attempts, False, error="bad")
    assert store.finish_jobs(other.id, [failed]) == [True]  # failed for good
    assert limits_of(store)["t"][1] == running_of(store) == 0


def test_a_first_limit_counts_the_jobs_already_running(store: Store) -> None:
    free = start_limited(store, "a", [])
    store.submit_jobs(new_jobs(10))
    assert len(store.claim_jobs(free.id, 3)) == 3
    limited = start_limited(store, "b", [TaskLimit("t", 4)])
    assert limits_of(store)["t"][1] == 3
    took = store.claim_jobs(free.id, 10) + store.claim_jobs(limited.id, 10)
    assert len(took) == 1
    assert running_of(store) == 4


def test_concurrent_claims_never_exceed_max_running(db_url: str) -> None:
    """Four nodes, each on its own connection, claim and finish as fast as they can; at no
    moment do more than `max_running` jobs of the task run."""
    cap, total = 3, 120
    setup = open_store(db_url)
    nodes = [start_limited(setup, f"n{i}", [TaskLimit("t", cap)]) for i in range(4)]
    setup.submit_jobs(new_jobs(total))
    lock = threading.Lock()
    held = [0]
    peak = [0]
    done = [0]
    errors: list[BaseException] = []

    def work(node: NodeRecord, seed: int) -> None:
        rng = random.Random(seed)
        store = open_store(db_url)
        try:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                with lock:
                    if done[0] >= total:
                        return
                jobs = store.claim_jobs(node.id, rng.randint(1, 5))
                with lock:  # counted once the claim committed: never above the truth
                    held[0] += len(jobs)
                    peak[0] = max(peak[0], held[0])
                if jobs:
                    time.sleep(rng.random() * 0.005)
                with lock:  # counted out before the finish commits: never above the truth
                    held[0] -= len(jobs)
                assert all(store.finish_jobs(node.id, [ok(j.id, j.attempts) for j in jobs]))
                with lock:
                    done[0] += len(jobs)
        except BaseException as exc:
            errors.append(exc)
        finally:
            store.close()

    threads = [threading.Thread(target=work, args=(n, i)) for i, n in enumerate(nodes)]
    for t in threads:
        t.start()
    samples = []
    while any(t.is_alive() for t in threads):
        samples.append(running_of(setup))
    for t in threads:
        t.join()
    assert not errors, errors
    assert done[0] == total
    assert 1 <= peak[0] <= cap
    assert max(samples) <= cap
    assert limits_of(setup)["t"][1] == 0
    setup.close()


def test_a_rate_limit_admits_at_most_max_per_s_in_any_second(db_url: str) -> None:
    rate, total = 10, 25
    store = open_store(db_url)
    nodes = [start_limited(store, f"n{i}", [TaskLimit("t", None, float(rate))]) for i in range(3)]
    store.submit_jobs(new_jobs(total))
    started: list[float] = []
    deadline = time.monotonic() + 30
    while len(started) < total and time.monotonic() < deadline:
        for node in nodes:
            jobs = store.claim_jobs(node.id, 8)
            assert store.finish_jobs(node.id, [ok(j.id) for j in jobs]) == [True] * len(jobs)
            started += [j.started_at for j in jobs if j.started_at is not None]
        time.sleep(0.01)
    assert len(started) == total
    started.sort()
    # In datastore time, no window of one second holds more than `rate` starts ...
    for i in range(len(started) - rate):
        assert started[i + rate] - started[i] >= 1.0 - 1e-6, (i, started)
    # ... and the limit does not starve the task: the rate is reached, one window after another.
    assert started[-1] - started[0] < (total / rate) + 1.5
    store.close()


def test_read_task_limits_shows_use(store: Store) -> None:
    node = start_limited(store, "a", [TaskLimit("t", 5, 100.0)])
    store.submit_jobs(new_jobs(3))
    assert len(store.claim_jobs(node.id, 10)) == 3
    [use] = store.read_task_limits()
    assert (use.limit, use.running, use.recent_starts) == (TaskLimit("t", 5, 100.0), 3, 3)
    until(lambda: store.read_task_limits()[0].recent_starts == 0, timeout_s=5)


def test_a_first_limit_while_jobs_move_counts_them_exactly(db_url: str) -> None:
    """A node limits a task while another node claims and finishes its jobs as fast as it can:
    once the dust settles, the count the limit keeps is the number of jobs running."""
    setup = open_store(db_url)
    free = start_limited(setup, "free", [])
    setup.submit_jobs(new_jobs(400))
    stop = threading.Event()
    errors: list[BaseException] = []

    def churn() -> None:
        store = open_store(db_url)
        rng = random.Random(7)
        held: list[tuple[int, int]] = []
        try:
            while not stop.is_set():
                held += [(j.id, j.attempts) for j in store.claim_jobs(free.id, rng.randint(1, 4))]
                rng.shuffle(held)
                cut = rng.randint(0, len(held))
                store.finish_jobs(free.id, [ok(i, a) for i, a in held[:cut]])
                held = held[cut:]
        except BaseException as exc:
            errors.append(exc)
        finally:
            store.close()

    thread = threading.Thread(target=churn)
    thread.start()
    until(lambda: running_of(setup) > 0)
    start_limited(setup, "limiter", [TaskLimit("t", 1000)])
    until(lambda: limits_of(setup) and time.sleep(0.2) is None)
    stop.set()
    thread.join()
    assert not errors, errors
    assert limits_of(setup)["t"][1] == running_of(setup)
    setup.close()


def test_a_limit_lifted_and_declared_again_counts_afresh(store: Store) -> None:
    a = start_limited(store, "a", [TaskLimit("t", 2)])
    store.submit_jobs(new_jobs(10))
    first = store.claim_jobs(a.id, 10)
    assert len(first) == 2
    b = start_limited(store, "b", [])  # lifted: claims are not held back, nor counted
    more = store.claim_jobs(a.id, 3) + store.claim_jobs(b.id, 3)
    assert len(more) == 6
    assert store.finish_jobs(a.id, [ok(first[0].id)]) == [True]
    assert store.read_task_limits() == []
    start_limited(store, "c", [TaskLimit("t", 8)])
    assert limits_of(store)["t"][1] == running_of(store) == 7
    assert len(store.claim_jobs(a.id, 10) + store.claim_jobs(b.id, 10)) == 1
