"""Ids reserved ahead: why a PostgreSQL submit in a steady stream costs one round trip, not two.

A submit must know its ids before it sends its INSERT: a retry after the connection broke
mid-commit looks those ids up to tell whether the commit went in (`jobs.submit`). Asking the
sequence for them (ALLOCATE_IDS) is a round trip of its own. So every SUBMIT also takes `nextval`
for this store's next submit, which uses those ids instead while they are fresh: a submitter
that keeps submitting pays one round trip per submit, and one that submits now and then pays
two, as before, since ids it would hold for long would put its jobs ahead of younger ones.

Why it is as retry-safe as asking first: the ids are still known before the INSERT is sent, and
a sequence hands a value out once, so an id reserved by an earlier INSERT is as much this
submit's own as one just allocated. Once, that is, if the sequence's advance survives a crash of
the server: a reservation is kept only from an INSERT whose transaction committed, and that
commit flushed it to disk (an aborted transaction flushes nothing, and after a crash the sequence
could hand its values out again, to a submit whose job a retry would then take for its own). A
reservation whose answer was lost with its connection, or whose transaction did not commit, is
simply never used: a gap in the ids, as a rolled back insert leaves.

What it costs: a few `nextval` calls inside the INSERT's own transaction (no commit of their
own), the last reservation of each burst of submits left unused, and a job whose id is up to
FRESH_S older than its submit.

Not psycopg's pipeline mode: it would send ALLOCATE_IDS and the INSERT together, so the INSERT
would have to name ids the client had not yet seen; a connection that broke before any answer
came back could leave a committed batch the retry cannot find, and it would submit it again.
Nor a token per submit stored with each job, as claims do: that is a column and an index more
for every job written, where this costs nothing per job.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass, field

# How long reserved ids stay usable. Ids decide the order of runnable jobs of equal priority in
# a partition, so a job under a reserved id may start ahead of jobs that other processes
# submitted up to this long before it (its own process's jobs keep their order: see IdReserve).
# Between processes that order is loose anyway (a submit holds its id for a round trip and a
# commit before others see it, and it reaches a node through a notification and a claim), and
# 100 ms stays well below anything a user orders by hand or by `delay_s`. It is long enough for
# every submitter whose round trips matter: one that submits less than ten times a second
# spends under one percent of its time on the round trip this saves.
FRESH_S = 0.1
# Most ids kept reserved: SUBMIT reserves, for the next submit, up to twice what this one
# wrote (the next group commit holds the calls that queued meanwhile, about as many), topping
# up what is left rather than adding, so a steady stream leaves no id unused. Bulk submits past
# this go on asking the sequence first, their extra round trip spread over many jobs.
AHEAD_MAX = 64


@dataclass
class SubmitIds:
    """One submit's ids as they become known: a retry must know what its earlier try learnt."""

    ids: list[int]  # the jobs' ids: first those taken from the reserve, then allocated ones
    ahead: int = 0  # how many ids its INSERT reserves for this store's next submit
    reserved: list[int] = field(default_factory=list)  # what its INSERT reserved, once answered


class IdReserve:
    """The ids a store's INSERTs reserved for its next submits. Thread-safe; shared by the
    store's threads and its asyncio sides, since all of them submit for one process (an App
    holds one store): ids stay increasing across every submit of the store.

    `now` is a monotonic clock reading, passed in so tests control it.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._ids: list[tuple[int, float]] = []  # (id, when reserved), by id
        self._highest = 0  # the highest id handed to a submit of this store
        self._last_end = -math.inf  # when this store's latest submit ended

    def plan(self, n: int, now: float) -> SubmitIds:
        """The ids reserved for a submit of `n` jobs that begins `now` (fresh ones above every id
        handed out before, oldest first, at most `n`), and how many its INSERT should reserve.

        It reserves only while submits follow each other within FRESH_S: a lone submit would
        leave its reservation to go stale, an id lost for nothing.
        """
        with self._lock:
            self._ids = [
                (i, at) for i, at in self._ids if i > self._highest and now - at <= FRESH_S
            ]
            taken = [i for i, _ in self._ids[:n]]
            del self._ids[:n]
            if taken:
                self._highest = taken[-1]
            streaming = now - self._last_end <= FRESH_S
            ahead = max(0, min(2 * n, AHEAD_MAX) - len(self._ids)) if streaming else 0
            return SubmitIds(taken, ahead)

    def settle(self, submit: SubmitIds, now: float) -> None:
        """Record a submit that ended `now`, written or not: its ids were handed out (later
        submits get higher ones), and what its INSERT reserved is for the next."""
        with self._lock:
            self._highest = max([self._highest, *submit.ids])
            self._last_end = now
            kept = {i: at for i, at in self._ids if i > self._highest}
            kept.update((i, now) for i in submit.reserved if i > self._highest)
            self._ids = sorted(kept.items())[-AHEAD_MAX:]
