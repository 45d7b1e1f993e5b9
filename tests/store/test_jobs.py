"""Conformance, jobs: submitting, reading, listing and claiming, on every adapter (cancelling
is in test_cancel).

Each test gets a fresh, initialised datastore (P = 128) through the `store` fixture, which is
parametrised over SQLite and PostgreSQL (see `conformance` for the shared helpers).
"""

from __future__ import annotations

import threading
import time

import pytest
from conformance import P, new_jobs, owners_of, start_node

from shoal.model import (
    CancelResult,
    JobFilter,
    JobState,
    NewJob,
    NodeRecord,
    NodeState,
    Outcome,
)
from shoal.store import Store, open_store, rules

CLAIMS_BY_TASK = True  # PostgreSQL claims both ways (tests/conftest.py)

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


def test_list_jobs_filters_newest_first_and_pages(store: Store) -> None:
    ids = store.submit_jobs(new_jobs(5, task="x") + new_jobs(5, task="y"))
    page = store.list_jobs(JobFilter(task="y"), limit=3)
    assert [j.id for j in page] == ids[9:6:-1]
    more = store.list_jobs(JobFilter(task="y"), limit=3, before_id=page[-1].id)
    assert [j.id for j in more] == ids[6:4:-1]
    ranged = store.list_jobs(JobFilter(min_id=ids[1], max_id=ids[2]))
    assert {j.id for j in ranged} == {ids[1], ids[2]}
    assert len(store.list_jobs(JobFilter(state=JobState.QUEUED), limit=100)) == 10


# -- claiming --------------------------------------------------------------------------------


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


def test_a_job_due_later_is_parked_until_unparked_ahead_of_its_time(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A job queued to run more than PARK_AFTER_S ahead is out of the claims' way until a
    node's housekeeping unparks it; one due sooner is not parked."""
    monkeypatch.setattr(rules, "PARK_AFTER_S", 0.2)
    node = start_node(store, "a")
    [soon] = store.submit_jobs(new_jobs(1, delay_s=0.1))
    [later, much_later] = store.submit_jobs(new_jobs(1, delay_s=0.5) + new_jobs(1, delay_s=3600))
    time.sleep(0.6)  # both are due, but one is parked
    assert [j.id for j in store.claim_jobs(node.id, 10)] == [soon]
    assert store.unpark_due(0.1) == 1  # the one due: not the one due in an hour
    assert [j.id for j in store.claim_jobs(node.id, 10)] == [later]
    assert store.unpark_due(3600.0) == 1 and store.unpark_due(3600.0) == 0
    assert store.claim_jobs(node.id, 10) == []  # unparked an hour ahead: still not due
    job = store.read_job(much_later)
    assert job is not None and job.state is JobState.QUEUED


def test_a_retry_with_a_long_backoff_is_parked(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(rules, "PARK_AFTER_S", 0.2)
    node = start_node(store, "a")
    [job_id] = store.submit_jobs(new_jobs(1))
    [job] = store.claim_jobs(node.id, 1)
    failed = Outcome(job_id, job.attempts, False, None, error="boom", retry_in_s=0.5)
    assert store.finish_jobs(node.id, [failed]) == [True]
    time.sleep(0.6)
    assert store.claim_jobs(node.id, 1) == []
    assert store.unpark_due(0.0) == 1
    [again] = store.claim_jobs(node.id, 1)
    assert again.id == job_id and again.attempts == 2


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


def test_ids_no_job_can_have_answer_no_such_job(store: Store) -> None:
    for job_id in (0, -1, 2**63, 2**64, 10**30):
        assert store.read_job(job_id) is None
        assert store.cancel_job(job_id) is CancelResult.NOT_FOUND
    [real] = store.submit_jobs(new_jobs(1))
    assert store.read_job(real) is not None and store.cancel_job(real)
