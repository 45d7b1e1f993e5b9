"""Checking what the datastore says a node runs against what the node knows.

With asynchronous replication, a failover can lose the last commits before it: outcomes the node
recorded (and forgot) come back as jobs `running` under it, which no one would ever finish; a
claim the node gave up on may have left jobs running under it that it never received. After
each interruption of the datastore, and now and then regardless, the node lists what the
datastore has running under it: an outcome it still remembers is recorded again, anything else
it does not hold is released to the queue.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Collection, Sequence
from dataclasses import dataclass

from shoal.model import Outcome


class RecentOutcomes:
    """Outcomes recorded lately, oldest first, bounded in age, count and bytes of results."""

    def __init__(
        self, keep_s: float = 300.0, max_count: int = 100_000, max_bytes: int = 32_000_000
    ) -> None:
        self.keep_s = keep_s
        self.max_count = max_count
        self.max_bytes = max_bytes
        self._kept: OrderedDict[tuple[int, int], tuple[float, Outcome]] = OrderedDict()
        self._bytes = 0

    def add(self, outcomes: Sequence[Outcome], now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        for outcome in outcomes:
            self._kept[(outcome.job_id, outcome.attempt)] = (now, outcome)
            self._bytes += _size(outcome)
        while self._kept and (
            len(self._kept) > self.max_count
            or self._bytes > self.max_bytes
            or next(iter(self._kept.values()))[0] < now - self.keep_s
        ):
            _, (_, dropped) = self._kept.popitem(last=False)
            self._bytes -= _size(dropped)

    def get(self, job_id: int, attempt: int) -> Outcome | None:
        kept = self._kept.get((job_id, attempt))
        return kept[1] if kept else None

    def __len__(self) -> int:
        return len(self._kept)


def _size(outcome: Outcome) -> int:
    return len(outcome.result_json or "") + len(outcome.error or "") + len(outcome.traceback or "")


@dataclass(frozen=True)
class Reconciliation:
    record_again: list[Outcome]  # recorded once, lost by the datastore: record them again
    release: list[int]  # running under the node, unknown to it: back to the queue


def reconcile(
    running: Sequence[tuple[int, int]], held: Collection[int], recent: RecentOutcomes
) -> Reconciliation:
    """What to do about each (job id, attempt) the datastore has running under the node."""
    record_again: list[Outcome] = []
    release: list[int] = []
    for job_id, attempt in running:
        if job_id in held:
            continue
        outcome = recent.get(job_id, attempt)
        if outcome is not None:
            record_again.append(outcome)
        else:
            release.append(job_id)
    return Reconciliation(record_again, release)
