"""Group commit for submits (`store/batcher.py`): concurrent calls share a write, each gets its
own ids, a failed write fails every call in it, and a lone call waits for nothing."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Sequence

import pytest

from shoal.model import NewJob
from shoal.store import batcher as batcher_module
from shoal.store.batcher import MAX_SHARED_JOBS, AsyncSubmitBatcher, SubmitBatcher


def jobs(n: int) -> list[NewJob]:
    return [NewJob("t", "[]", "{}")] * n


class Writer:
    """A datastore stand-in: hands out sequential ids; the first write can be held open."""

    def __init__(self) -> None:
        self.next_id = 1
        self.writes: list[int] = []
        self.hold = threading.Event()
        self.held = threading.Event()
        self.fail: Exception | None = None

    def __call__(self, batch: Sequence[NewJob]) -> list[int]:
        if not self.writes:
            self.held.set()
            self.hold.wait(5)
        self.writes.append(len(batch))
        if self.fail is not None:
            raise self.fail
        ids = list(range(self.next_id, self.next_id + len(batch)))
        self.next_id += len(batch)
        return ids


def test_a_lone_call_writes_at_once() -> None:
    writer = Writer()
    writer.hold.set()
    batcher = SubmitBatcher(writer)
    assert batcher.submit(jobs(2)) == [1, 2]
    assert batcher.submit(jobs(1)) == [3]
    assert writer.writes == [2, 1]


def test_calls_made_during_a_write_share_the_next_one() -> None:
    writer = Writer()
    batcher = SubmitBatcher(writer)
    results: dict[int, list[int]] = {}

    def call(index: int, count: int) -> None:
        results[index] = batcher.submit(jobs(count))

    first = threading.Thread(target=call, args=(0, 1))
    first.start()
    assert writer.held.wait(5)
    others = [threading.Thread(target=call, args=(i, i)) for i in range(1, 6)]
    for thread in others:
        thread.start()
    while len(batcher._queue) < 5:  # every other call queued behind the held write
        threading.Event().wait(0.001)
    writer.hold.set()
    for thread in [first, *others]:
        thread.join(5)
    assert writer.writes == [1, 15]  # one write for the five calls that queued meanwhile
    ids = sorted(i for r in results.values() for i in r)
    assert ids == list(range(1, 17))
    assert all(len(results[i]) == max(i, 1) for i in results)
    assert all(r == list(range(r[0], r[0] + len(r))) for r in results.values())


def test_a_failed_write_fails_every_call_in_it_and_the_next_call_still_leads() -> None:
    writer = Writer()
    writer.fail = RuntimeError("disk full")
    batcher = SubmitBatcher(writer)
    errors: list[BaseException] = []

    def call() -> None:
        try:
            batcher.submit(jobs(1))
        except RuntimeError as exc:
            errors.append(exc)

    first = threading.Thread(target=call)
    first.start()
    assert writer.held.wait(5)
    second = threading.Thread(target=call)
    second.start()
    while len(batcher._queue) < 1:
        threading.Event().wait(0.001)
    writer.hold.set()
    first.join(5)
    second.join(5)
    assert [str(e) for e in errors] == ["disk full", "disk full"]
    writer.fail = None
    assert batcher.submit(jobs(1)) == [1]


def test_a_leader_waits_for_the_callers_of_the_last_write_when_they_come_straight_back(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Threads that submit in a loop: without the wait, the first back from a shared write
    leads alone and the rest share the next one (writes of 1, k, 1, k...)."""
    monkeypatch.setattr(batcher_module, "COMEBACK_S", 5.0)
    monkeypatch.setattr(batcher_module, "GATHER_S", 5.0)
    writer = Writer()
    batcher = SubmitBatcher(writer)
    first = threading.Thread(target=batcher.submit, args=(jobs(1),))
    first.start()
    assert writer.held.wait(5)
    others = [threading.Thread(target=batcher.submit, args=(jobs(1),)) for _ in range(2)]
    for thread in others:
        thread.start()
    while len(batcher._queue) < 2:
        threading.Event().wait(0.001)
    writer.hold.set()
    for thread in [first, *others]:
        thread.join(5)
    assert writer.writes == [1, 2]
    # The last write held two calls: a leader now waits for a second one before writing.
    leader = threading.Thread(target=batcher.submit, args=(jobs(1),))
    leader.start()
    leader.join(0.2)
    assert leader.is_alive() and writer.writes == [1, 2]
    assert batcher.submit(jobs(1)) == [5]  # joins the waiting leader: ids 4 and 5, one write
    leader.join(5)
    assert writer.writes == [1, 2, 2]


def test_a_lone_submitter_never_waits_for_others(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(batcher_module, "COMEBACK_S", 5.0)
    monkeypatch.setattr(batcher_module, "GATHER_S", 5.0)
    writer = Writer()
    writer.hold.set()
    batcher = SubmitBatcher(writer)
    started = time.monotonic()
    assert [batcher.submit(jobs(1)) for _ in range(20)] == [[i] for i in range(1, 21)]
    assert time.monotonic() - started < 2.5  # a wait for a sibling would take 5 s
    assert writer.writes == [1] * 20


def test_a_large_call_goes_alone() -> None:
    writer = Writer()
    writer.hold.set()
    assert len(SubmitBatcher(writer).submit(jobs(MAX_SHARED_JOBS))) == MAX_SHARED_JOBS


def test_coroutines_submitting_together_share_a_write() -> None:
    writes: list[int] = []
    counter = iter(range(1, 10_000))

    async def write(batch: Sequence[NewJob]) -> list[int]:
        writes.append(len(batch))
        await asyncio.sleep(0.01)
        return [next(counter) for _ in batch]

    async def main() -> list[list[int]]:
        batcher = AsyncSubmitBatcher(write)
        return await asyncio.gather(*(batcher.submit(jobs(1 + i % 2)) for i in range(10)))

    results = asyncio.run(main())
    assert writes == [15]
    assert sorted(i for r in results for i in r) == list(range(1, 16))


def test_a_failed_async_write_fails_its_callers() -> None:
    async def write(batch: Sequence[NewJob]) -> list[int]:
        raise RuntimeError("gone")

    async def main() -> None:
        batcher = AsyncSubmitBatcher(write)
        outcomes = await asyncio.gather(
            *(batcher.submit(jobs(1)) for _ in range(3)), return_exceptions=True
        )
        assert all(isinstance(o, RuntimeError) for o in outcomes)

    asyncio.run(main())
    with pytest.raises(RuntimeError):
        asyncio.run(AsyncSubmitBatcher(write).submit(jobs(1)))
