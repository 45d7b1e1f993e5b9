"""Conformance, unique keys: a submit whose key a job holds (queued, running, or finished within
its window) returns that job instead of creating one, on every adapter, atomically across
connections, and the job counts count only the jobs created.
"""

from __future__ import annotations

import threading

from conformance import start_node, until

from shoal.model import JobState, NewJob, Outcome, Submitted
from shoal.store import Store, open_store
from shoal.store.rules import PruneRule


def keyed(key: str | None, window_s: float = 0.0, n: int = 0) -> NewJob:
    return NewJob("t", f"[{n}]", "{}", key=key, key_window_s=window_s)


def queued(store: Store) -> int:
    return store.read_cluster().job_counts[JobState.QUEUED]


def finish(store: Store, node_id: int, job_id: int) -> None:
    [claimed] = [j for j in store.claim_jobs(node_id, 10) if j.id == job_id]
    assert store.finish_jobs(node_id, [Outcome(job_id, claimed.attempts, True, "1")]) == [True]


def test_a_held_key_returns_the_queued_or_running_job(store: Store) -> None:
    [first] = store.submit([keyed("invoice-42", n=1)])
    assert first.created
    assert store.submit([keyed("invoice-42", n=2)]) == [Submitted(first.job_id, False)]
    node = start_node(store, "a")
    assert [j.id for j in store.claim_jobs(node.id, 10)] == [first.job_id]
    assert store.submit([keyed("invoice-42", n=3)]) == [Submitted(first.job_id, False)]
    job = store.read_job(first.job_id)
    assert job is not None and job.args == [1] and job.key == "invoice-42"
    counts = store.read_cluster().job_counts
    assert counts[JobState.RUNNING] == 1 and counts[JobState.QUEUED] == 0


def test_a_finished_job_lets_its_key_go_without_a_window(store: Store) -> None:
    node = start_node(store, "a")
    [first] = store.submit([keyed("k")])
    finish(store, node.id, first.job_id)
    [second] = store.submit([keyed("k")])
    assert second.created and second.job_id != first.job_id
    [cancelled] = store.submit([keyed("c")])
    assert store.cancel_job(cancelled.job_id)
    assert store.submit([keyed("c")])[0].created
    assert queued(store) == 2


def test_a_finished_job_holds_its_key_for_its_window_then_lets_it_go(store: Store) -> None:
    node = start_node(store, "a")
    [first] = store.submit([keyed("report", window_s=0.5)])
    finish(store, node.id, first.job_id)
    # The window is the holder's: a later submit's own window does not shorten it.
    assert store.submit([keyed("report", window_s=0.0)]) == [Submitted(first.job_id, False)]
    assert queued(store) == 0
    again = until(lambda: [s for s in store.submit([keyed("report")]) if s.created])
    assert isinstance(again, list) and again[0].job_id != first.job_id
    assert queued(store) == 1


def test_a_cancelled_job_holds_its_key_for_its_window_too(store: Store) -> None:
    [first] = store.submit([keyed("k", window_s=3600)])
    assert store.cancel_job(first.job_id)
    assert store.submit([keyed("k")]) == [Submitted(first.job_id, False)]


def test_a_pruned_job_lets_its_key_go_even_within_its_window(store: Store) -> None:
    node = start_node(store, "a")
    [first] = store.submit([keyed("k", window_s=3600)])
    finish(store, node.id, first.job_id)
    assert store.prune_jobs(PruneRule(JobState.SUCCEEDED, store.now() + 1)) == {"t": 1}
    [second] = store.submit([keyed("k")])
    assert second.created and second.job_id != first.job_id
    assert store.submit([keyed("k")]) == [Submitted(second.job_id, False)]


def test_a_batch_collapses_its_duplicate_keys_and_finds_held_ones(store: Store) -> None:
    [held] = store.submit([keyed("held")])
    done = store.submit(
        [keyed("a", n=1), keyed("held"), keyed(None), keyed("a", n=2), keyed("b"), keyed(None)]
    )
    a, found, plain, a_again, b, plain_again = done
    assert (a.created, found, plain.created, b.created, plain_again.created) == (
        True,
        Submitted(held.job_id, False),
        True,
        True,
        True,
    )
    assert a_again == Submitted(a.job_id, False)
    assert len({a.job_id, plain.job_id, b.job_id, plain_again.job_id, held.job_id}) == 5
    job = store.read_job(a.job_id)
    assert job is not None and job.args == [1]
    assert queued(store) == 5
    assert store.submit_jobs([keyed("a"), keyed("b")]) == [a.job_id, b.job_id]


def test_concurrent_submits_of_one_key_make_one_job(store: Store, db_url: str) -> None:
    # Per round, a new key and one whose finished job let it go; each raced by 8 connections.
    node = start_node(store, "a")
    keys = [f"{kind}-{r}" for r in range(3) for kind in ("new", "freed")]
    expired = {}
    for key in keys[1::2]:
        [done] = store.submit([keyed(key)])
        finish(store, node.id, done.job_id)
        expired[key] = done.job_id
    results: dict[str, list[Submitted]] = {key: [] for key in keys}
    lock = threading.Lock()
    start = threading.Barrier(8)

    def submitter(n: int) -> None:
        own = open_store(db_url)  # each submitter has its own connection, as processes do
        try:
            for key in keys:
                start.wait()
                [done] = own.submit([keyed(key, n=n)])
                with lock:
                    results[key].append(done)
        finally:
            own.close()

    threads = [threading.Thread(target=submitter, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for key in keys:
        assert len(results[key]) == 8
        assert len({s.job_id for s in results[key]}) == 1, (key, results[key])
        assert sum(s.created for s in results[key]) == 1
        assert results[key][0].job_id != expired.get(key)
    assert queued(store) == len(keys)
