"""Conformance, priorities: within a section a node claims the highest priority first, then the
oldest job, on every adapter, and a job keeps its priority through a retry.
"""

from __future__ import annotations

from conformance import P, start_node

from shoal.model import JobState, NewJob, Outcome
from shoal.store import Store

CLAIMS_BY_TASK = True  # PostgreSQL claims both ways (tests/conftest.py)


def job(priority: int, n: int = 0) -> NewJob:
    return NewJob("t", f"[{n}]", "{}", priority=priority)


def test_a_backlog_is_claimed_by_priority_then_by_id(store: Store) -> None:
    priorities = [0, 5, -3, 5, 100, 0, -100, 7, 0, 5]
    ids = store.submit_jobs([job(p, i) for i, p in enumerate(priorities)])
    node = start_node(store, "a")
    claimed = [store.claim_jobs(node.id, 1) for _ in ids]
    assert all(len(batch) == 1 for batch in claimed)
    by_priority = sorted(zip(priorities, ids, strict=True), key=lambda pair: (-pair[0], pair[1]))
    assert [batch[0].id for batch in claimed] == [i for _, i in by_priority]
    assert [batch[0].priority for batch in claimed] == sorted(priorities, reverse=True)


def test_a_batch_claim_takes_the_highest_priorities_in_claim_order(store: Store) -> None:
    low = store.submit_jobs([job(0, i) for i in range(300)])
    high = store.submit_jobs([job(10, i) for i in range(6)])
    urgent = store.submit_jobs([job(50)])
    node = start_node(store, "a")
    batch = store.claim_jobs(node.id, 10)
    assert [j.id for j in batch] == urgent + high + low[:3]
    counts = store.read_cluster().job_counts
    assert counts[JobState.RUNNING] == 10 and counts[JobState.QUEUED] == 297


def test_no_job_starts_while_one_of_higher_priority_waits_in_its_section(store: Store) -> None:
    # Every high-priority job lands in one partition: a claim reads only the first few jobs of
    # each partition, and must still not take a low one while that partition holds more.
    [probe] = store.submit_jobs([job(0)])
    hot = (probe + 1) % P
    ids = store.submit_jobs([job(9 if (probe + 1 + k) % P == hot else 0, k) for k in range(P * 12)])
    assert ids[0] == probe + 1
    high = {i for i in ids if i % P == hot}
    node = start_node(store, "a")
    claimed: list[int] = []
    while not high <= set(claimed):
        batch = store.claim_jobs(node.id, 8)
        assert batch, "the backlog ran dry before every high-priority job was claimed"
        claimed += [j.id for j in batch]
    assert set(claimed[: len(high)]) == high


def test_a_retried_job_keeps_its_priority_and_goes_first_again(store: Store) -> None:
    [plain] = store.submit_jobs([job(0)])
    [urgent] = store.submit_jobs([job(20)])
    node = start_node(store, "a")
    [first] = store.claim_jobs(node.id, 1)
    assert first.id == urgent
    retry = Outcome(urgent, first.attempts, False, error="boom", retry_in_s=0.0)
    assert store.finish_jobs(node.id, [retry]) == [True]
    again = store.claim_jobs(node.id, 2)
    assert [j.id for j in again] == [urgent, plain]
    assert again[0].attempts == 2 and again[0].priority == 20


def test_priority_and_key_round_trip(store: Store) -> None:
    [job_id] = store.submit_jobs([NewJob("t", "[]", "{}", priority=-7, key="invoice-42")])
    found = store.read_job(job_id)
    assert found is not None and (found.priority, found.key) == (-7, "invoice-42")
    [plain] = store.submit_jobs([NewJob("t", "[]", "{}")])
    found = store.read_job(plain)
    assert found is not None and (found.priority, found.key) == (0, None)
