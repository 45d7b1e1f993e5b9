"""Periodic schedules: when a schedule's ticks fall, and which of them a node should fire now.

Pure: no storage, no clock. A schedule's timetable is a cron expression in a time zone
(`shoal.cron`) or a fixed interval whose ticks are the multiples of it since the epoch, so every
node computes the same ticks. `plan_ticks` is the rule every node applies at datastore time `now`
to a schedule settled up to `fired_through`: each tick that is due and at most MISSED_AFTER_S
late gets its own job; older ticks were missed, and the schedule's `missed` policy says whether
they get one catch-up job (`once`) or none (`skip`). `is_my_turn` spreads the work: a tick is
first the turn of the node owning the partition it hashes to, then, TURN_GRACE_S later, of any
node. The datastore makes sure only one node's plan for a given starting point is ever recorded,
whoever's turn it was.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Collection
from dataclasses import dataclass
from typing import Protocol

from shoal import cron
from shoal.errors import ScheduleError
from shoal.model import Missed, ScheduleSpec

# A tick this late is still on time and gets its own job: it covers a heartbeat cycle, a busy
# datastore and a node taking over from one that died. Later than that, it was missed.
MISSED_AFTER_S = 10.0
MIN_EVERY_S = 1.0  # nodes look for due ticks once a heartbeat: a shorter interval cannot be kept
MAX_EVERY_S = 366 * 86400.0 * 10
MAX_TICKS_PER_ROUND = 100  # on-time ticks fired in one transaction; the rest wait a heartbeat
# Whose turn a tick is: the node owning the tick's partition fires it at once; any other node
# only once it is this late, which covers an owner that died, froze or is between heartbeats.
TURN_GRACE_S = 2.0
# A missed stretch is searched backwards from its end in windows of growing size, so finding the
# latest missed tick costs the ticks of one window, not of the whole outage.
FIRST_WINDOW_S = 3600.0


class Timetable(Protocol):
    def next_after(self, t: float) -> float: ...


@dataclass(frozen=True)
class Every:
    """Ticks at every whole multiple of `seconds` since the epoch."""

    seconds: float

    def next_after(self, t: float) -> float:
        """The first multiple of `seconds` strictly after `t`."""
        k = math.floor(t / self.seconds)
        while k * self.seconds > t:  # t / seconds may have rounded up past a tick
            k -= 1
        while k * self.seconds <= t:
            k += 1
        return k * self.seconds


@dataclass(frozen=True)
class Tick:
    at: float
    catch_up: bool = False


@dataclass(frozen=True)
class Plan:
    """What to record: the ticks to fire, and the new `fired_through` (after the last tick
    looked at, fired or skipped). Nothing to write when `through` is the old one."""

    ticks: tuple[Tick, ...]
    through: float


def turn_partition(name: str, tick: float, partitions: int) -> int:
    """The partition whose owner fires this tick first: spread over the partitions by a stable
    hash, so that no one node fires every schedule."""
    return zlib.crc32(f"{name}@{float(tick)!r}".encode()) % partitions


def is_my_turn(
    name: str, tick: float, now: float, section: Collection[int], partitions: int
) -> bool:
    """Whether a node owning `section` should fire `tick` at datastore time `now`: it owns the
    tick's partition, or the tick is TURN_GRACE_S late (whoever's turn it was did not)."""
    return now - tick >= TURN_GRACE_S or turn_partition(name, tick, partitions) in section


def check_timing(
    cron_text: str | None, every_s: float | None, tz: str | None, missed: str
) -> tuple[str, Missed]:
    """The zone name and policy of a schedule declared with these; ScheduleError, saying what
    to change, for anything a schedule cannot be made of."""
    if (cron_text is None) == (every_s is None):
        raise ScheduleError("a schedule needs exactly one of cron='...' or every_s=...")
    try:
        policy = Missed(missed)
    except ValueError:
        raise ScheduleError(f"missed must be 'once' or 'skip', not {missed!r}") from None
    if every_s is not None:
        if tz is not None:
            raise ScheduleError("tz applies to cron schedules; an every_s interval has no zone")
        if isinstance(every_s, bool) or not isinstance(every_s, int | float):
            raise ScheduleError(f"every_s must be a number of seconds, not {every_s!r}")
        if not MIN_EVERY_S <= every_s <= MAX_EVERY_S:  # NaN fails too
            raise ScheduleError(
                f"every_s must be between {MIN_EVERY_S:g} and {MAX_EVERY_S:g} seconds, "
                f"not {every_s}"
            )
        return "UTC", policy
    assert cron_text is not None
    zone = tz or "UTC"
    cron.parse(cron_text, zone)
    return zone, policy


def timetable_of(spec: ScheduleSpec) -> Timetable:
    """The timetable a declared schedule fires by (ScheduleError for a malformed one)."""
    if spec.cron is not None:
        return cron.parse(spec.cron, spec.tz)
    assert spec.every_s is not None
    return Every(spec.every_s)


def plan_ticks(
    timetable: Timetable,
    fired_through: float,
    now: float,
    missed: Missed,
    missed_after_s: float = MISSED_AFTER_S,
    limit: int = MAX_TICKS_PER_ROUND,
) -> Plan:
    """The ticks to fire at datastore time `now` for a schedule settled up to `fired_through`.

    Ticks in (fired_through, now] are due. Those at most `missed_after_s` old are fired one job
    each, oldest first, at most `limit` of them. Older ones were missed: with `Missed.ONCE` the
    latest of them is fired as one catch-up job standing for them all, with `Missed.SKIP` none.
    """
    first = timetable.next_after(fired_through)
    if first > now:
        return Plan((), fired_through)
    ticks: list[Tick] = []
    start = fired_through
    cutoff = now - missed_after_s
    if first <= cutoff:
        start = latest_at_or_before(timetable, cutoff, fired_through)
        if missed is Missed.ONCE:
            ticks.append(Tick(start, catch_up=True))
    tick = timetable.next_after(start)
    while tick <= now and len(ticks) < limit:
        ticks.append(Tick(tick))
        start, tick = tick, timetable.next_after(tick)
    return Plan(tuple(ticks), start)


def latest_at_or_before(timetable: Timetable, t: float, after: float) -> float:
    """The latest tick in (after, t]; the caller knows there is one."""
    window = FIRST_WINDOW_S
    while True:
        begin = max(after, t - window)
        found, tick = None, timetable.next_after(begin)
        while tick <= t:
            found, tick = tick, timetable.next_after(tick)
        if found is not None:
            return found
        if begin <= after:
            raise AssertionError("no tick in the range the caller promised one")
        window *= 4
