"""Conformance, the asyncio side and shared commits: `Store.async_jobs` and concurrent submits.

Each test gets a fresh datastore on every adapter. Coroutines run under `asyncio.run`, one loop
per call (two in one test show that each loop gets its own side). A job ends here through the
store's own node operations (claim, finish), so no node runs.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from conformance import new_jobs, start_node, until

from shoal.model import JobState, Outcome
from shoal.store import Store

T = TypeVar("T")


def run(store: Store, coroutine: Coroutine[Any, Any, T]) -> T:
    """Run `coroutine` in a new loop and close the store's asyncio side before the loop ends."""

    async def main() -> T:
        try:
            return await coroutine
        finally:
            await store.aclose_async()

    return asyncio.run(main())


def finish_all(store: Store, node_id: int, ok: bool = True) -> list[int]:
    """Claim every queued job for `node_id` and record a final outcome for each."""
    jobs = store.claim_jobs(node_id, 100)
    outcomes = [
        Outcome(j.id, j.attempts, ok, "7" if ok else None, None if ok else "boom") for j in jobs
    ]
    assert all(store.finish_jobs(node_id, outcomes))
    return [j.id for j in jobs]


def test_async_submits_are_committed_with_sequential_ids(store: Store) -> None:
    async def submit() -> tuple[list[int], list[int]]:
        jobs = store.async_jobs()
        return await jobs.submit_jobs(new_jobs(1)), await jobs.submit_jobs(new_jobs(3))

    first, more = run(store, submit())
    ids = first + more
    assert ids == list(range(ids[0], ids[0] + 4))
    for job_id in ids:  # read back through the blocking side: committed, not just returned
        job = store.read_job(job_id)
        assert job is not None and job.state is JobState.QUEUED
    assert store.read_cluster().job_counts.get(JobState.QUEUED) == 4


def test_concurrent_async_submits_each_get_their_own_ids(store: Store) -> None:
    async def submit() -> list[list[int]]:
        jobs = store.async_jobs()
        return await asyncio.gather(*(jobs.submit_jobs(new_jobs(1 + i % 3)) for i in range(60)))

    batches = run(store, submit())
    assert [len(b) for b in batches] == [1 + i % 3 for i in range(60)]
    ids = [i for b in batches for i in b]
    assert len(set(ids)) == len(ids) == 120
    assert all(b == list(range(b[0], b[0] + len(b))) for b in batches)  # a call's ids in order
    assert store.read_cluster().job_counts.get(JobState.QUEUED) == 120


def test_async_read_job_and_no_such_job(store: Store) -> None:
    [job_id] = store.submit_jobs(new_jobs(1))

    async def read() -> tuple[Any, Any]:
        jobs = store.async_jobs()
        return await jobs.read_job(job_id), await jobs.read_job(job_id + 1000)

    found, missing = run(store, read())
    assert found is not None and found.id == job_id and found.args_json == "[0]"
    assert missing is None


def test_wait_for_end_returns_once_the_job_ends(store: Store) -> None:
    node = start_node(store, "n1")
    [job_id] = store.submit_jobs(new_jobs(1))

    async def wait() -> float:
        jobs = store.async_jobs()
        waiter = asyncio.ensure_future(jobs.wait_for_end(job_id, 30.0))
        await asyncio.sleep(0.3)  # the waiter is waiting
        assert not waiter.done()
        ended_at = time.monotonic()
        await asyncio.get_running_loop().run_in_executor(None, finish_all, store, node.id)
        await waiter
        return time.monotonic() - ended_at

    took_s = run(store, wait())
    assert took_s < 0.5  # heard (or polled for, every 10 ms on SQLite), not read at the 1 s mark
    job = store.read_job(job_id)
    assert job is not None and job.state is JobState.SUCCEEDED


def test_wait_for_end_returns_at_once_for_an_ended_or_missing_job(store: Store) -> None:
    node = start_node(store, "n1")
    [job_id] = store.submit_jobs(new_jobs(1))
    finish_all(store, node.id, ok=False)

    async def wait() -> float:
        jobs = store.async_jobs()
        started = time.monotonic()
        await jobs.wait_for_end(job_id, 20.0)
        await jobs.wait_for_end(job_id + 1000, 20.0)
        return time.monotonic() - started

    assert run(store, wait()) < 5.0


def test_wait_for_end_gives_up_after_its_timeout(store: Store) -> None:
    [job_id] = store.submit_jobs(new_jobs(1))

    async def wait() -> float:
        started = time.monotonic()
        await store.async_jobs().wait_for_end(job_id, 0.3)
        return time.monotonic() - started

    assert 0.25 <= run(store, wait()) < 5.0
    job = store.read_job(job_id)
    assert job is not None and job.state is JobState.QUEUED


def test_each_event_loop_gets_its_own_async_side(store: Store) -> None:
    async def submit() -> list[int]:
        return await store.async_jobs().submit_jobs(new_jobs(1))

    first = run(store, submit())
    second = run(store, submit())  # a new loop: the first loop's pool must not be reused
    assert second[0] > first[0]


def test_threads_submitting_at_once_share_commits_and_lose_nothing(store: Store) -> None:
    results: list[list[int]] = []
    lock = threading.Lock()

    def submitter() -> None:
        for _ in range(25):
            ids = store.submit_jobs(new_jobs(1))
            with lock:
                results.append(ids)

    threads = [threading.Thread(target=submitter) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    ids = [i for r in results for i in r]
    assert len(ids) == len(set(ids)) == 200
    assert store.read_cluster().job_counts.get(JobState.QUEUED) == 200
    assert all(store.read_job(i) is not None for i in ids[::17])


def test_wait_for_end_hears_a_cancel_and_a_dead_nodes_failed_job(store: Store) -> None:
    node = start_node(store, "n1", lease_s=0.3)
    [cancelled] = store.submit_jobs(new_jobs(1))
    [orphan] = store.submit_jobs(new_jobs(1, max_attempts=1))

    async def wait_for(job_id: int, end: Callable[[], object]) -> float:
        """Seconds from the end of `end()` (which ends the job) until the waiter returns."""
        jobs = store.async_jobs()
        waiter = asyncio.ensure_future(jobs.wait_for_end(job_id, 30.0))
        await asyncio.sleep(0.3)  # the waiter is waiting
        assert not waiter.done()
        await asyncio.get_running_loop().run_in_executor(None, end)
        ended_at = time.monotonic()
        await waiter
        return time.monotonic() - ended_at

    async def both() -> tuple[float, float]:
        first = await wait_for(cancelled, lambda: store.cancel_job(cancelled, by="ops"))
        assert [j.id for j in store.claim_jobs(node.id, 10)] == [orphan]
        return first, await wait_for(orphan, lambda: until(store.mark_dead_nodes))

    took_cancel_s, took_death_s = run(store, both())
    job = store.read_job(orphan)
    assert job is not None and job.state is JobState.FAILED
    # Heard (or polled for, every 10 ms on SQLite), not read at the 1 s mark.
    assert took_cancel_s < 0.5 and took_death_s < 0.5
