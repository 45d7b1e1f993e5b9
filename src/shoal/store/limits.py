"""The pure rules of per-task limits that both dialects follow: how much room a task has.

A task may cap how many of its jobs run at once across the cluster (`max_running`) and how
many start per second (`max_per_s`). The rate is a sliding window over the latest starts, not a
token bucket, so that a whole number N means what it says: never more than N starts in any one
second. A limits row keeps the start times of the latest `k` starts (`rate_window`); a claim
admits a job of the task only while both caps leave room, and records its start. SQLite runs
these functions inside its write transaction; PostgreSQL states the same rules in SQL inside
CLAIM (`postgres/queries.py`), built from the same window.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence

from shoal.model import TaskLimit

# The fastest rate a task may declare. The datastore keeps one start time per start the window
# allows, rewritten by every claim of the task, so the window must stay small.
MAX_PER_S = 10_000.0
# The most running jobs a task may declare: the datastores count them in 32-bit integers.
MAX_RUNNING = 1_000_000


def rate_window(max_per_s: float) -> tuple[int, float]:
    """(k, window_s): at most k starts in any window of window_s seconds.

    k is `max_per_s` rounded up and the window k / max_per_s, so the long-run rate is exactly
    `max_per_s`: 10 allows 10 starts in any second, 0.5 one start in any 2 seconds, 2.5 three
    in any 1.2 seconds (so never more than 3 in one second).
    """
    k = max(1, math.ceil(max_per_s))
    return k, k / max_per_s


def recent_starts(starts: Sequence[float], now: float, max_per_s: float) -> int:
    """How many of `starts` fall within the window that ends at `now`."""
    _, window_s = rate_window(max_per_s)
    return sum(1 for at in starts if at > now - window_s)


def room(limit: TaskLimit, running: int, starts: Sequence[float], now: float) -> int | None:
    """How many more jobs of the task may start at `now`; None if it has no limit."""
    rooms = []
    if limit.max_running is not None:
        rooms.append(max(0, limit.max_running - running))
    if limit.max_per_s is not None:
        k, _ = rate_window(limit.max_per_s)
        rooms.append(max(0, k - recent_starts(starts, now, limit.max_per_s)))
    return min(rooms) if rooms else None


def record_starts(
    starts: Sequence[float], now: float, n: int, max_per_s: float | None
) -> tuple[float, ...]:
    """The start times to keep after `n` jobs started at `now`: those still in the window,
    then the new ones, at most k in all (the latest). Empty without a rate limit."""
    if max_per_s is None:
        return ()
    k, window_s = rate_window(max_per_s)
    kept = [at for at in starts if at > now - window_s] + [now] * n
    return tuple(kept[-k:])


def pick_within_limits(
    candidates: Iterable[tuple[int, str]], rooms: Mapping[str, int], limit: int
) -> list[int]:
    """The ids to claim from `candidates` ((id, task), oldest first): at most `limit`, and of a
    task in `rooms` at most its room. Tasks not in `rooms` have no limit."""
    left = dict(rooms)
    picked: list[int] = []
    for job_id, task in candidates:
        if len(picked) >= limit:
            break
        if task in left:
            if left[task] <= 0:
                continue
            left[task] -= 1
        picked.append(job_id)
    return picked


def declared(
    tasks: Iterable[str], limits: Iterable[TaskLimit]
) -> tuple[list[TaskLimit], list[str]]:
    """What a registration writes: (the limits the node declares, to create or overwrite;
    the node's tasks it declares no limit for, whose stored limits are cleared).

    The latest registration wins: a deploy that changes a limit takes effect as soon as its
    first node registers. A task limited again after its limits were lifted counts its running
    jobs afresh, as a task limited for the first time does.
    """
    limited = sorted((lim for lim in limits if lim.max_running or lim.max_per_s), key=_task)
    named = {lim.task for lim in limited}
    return limited, sorted(set(tasks) - named)


def changes(
    stored: Mapping[str, TaskLimit], limited: Iterable[TaskLimit], cleared: Iterable[str]
) -> list[tuple[str, TaskLimit | None, TaskLimit | None]]:
    """(task, before, after) for each task whose limits a registration changes, given the
    limits `stored` before it (None: no limit)."""
    out: list[tuple[str, TaskLimit | None, TaskLimit | None]] = []
    for limit in limited:
        if stored.get(limit.task) != limit:
            out.append((limit.task, stored.get(limit.task), limit))
    out.extend((task, stored[task], None) for task in cleared if task in stored)
    return sorted(out, key=lambda change: change[0])


def _task(limit: TaskLimit) -> str:
    return limit.task
