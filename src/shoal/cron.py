"""Cron expressions: the five standard fields parsed, and the next tick found in a time zone.

Pure: no storage and no clock; times are seconds since the epoch and time zones IANA names read
through `zoneinfo`. The fields are minute, hour, day of month, month and day of week, each a list
of values, ranges (`1-5`), steps (`*/15`, `0-30/10`, `5/20`) and month or day names (`jan`, `mon`);
day of week 0 and 7 are both Sunday. When both day fields are restricted (neither starts with
`*`), a day matches if either does, as in every cron since Vixie's. The nicknames `@hourly`,
`@daily` (`@midnight`), `@weekly`, `@monthly` and `@yearly` (`@annually`) stand for their usual
expressions.

Ticks are moments of local wall-clock time. Around daylight-saving changes: a local time that
does not exist (skipped by a spring-forward) has no tick, and a local time that happens twice
(repeated by a fall-back) ticks once, at its first occurrence.
"""

from __future__ import annotations

import calendar
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from shoal.errors import ScheduleError

MONTH_NAMES = {name.lower(): i for i, name in enumerate(calendar.month_abbr) if name}
DAY_NAMES = {name.lower(): (i + 1) % 7 for i, name in enumerate(calendar.day_abbr)}
NICKNAMES = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
# (name, lowest, highest, names); day of week accepts 7 for Sunday and folds it onto 0.
FIELDS: tuple[tuple[str, int, int, dict[str, int]], ...] = (
    ("minute", 0, 59, {}),
    ("hour", 0, 23, {}),
    ("day of month", 1, 31, {}),
    ("month", 1, 12, MONTH_NAMES),
    ("day of week", 0, 7, DAY_NAMES),
)
# Any expression that can match at all matches within this many years (Feb 29 on a weekday
# comes round within 28), so a search that goes further has found an expression that never does.
SEARCH_YEARS = 30
MINUTE = timedelta(minutes=1)


@dataclass(frozen=True)
class Cron:
    """A parsed expression; `next_after` finds its ticks in `zone`."""

    text: str
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]  # 0 = Sunday
    any_day: bool  # the day-of-month field starts with '*'
    any_weekday: bool  # the day-of-week field starts with '*'
    zone: ZoneInfo

    def day_matches(self, day: date) -> bool:
        in_month = day.day in self.days
        in_week = day.isoweekday() % 7 in self.weekdays
        if self.any_day or self.any_weekday:
            return in_month and in_week
        return in_month or in_week

    def next_after(self, t: float) -> float:
        """The first tick strictly after `t` (seconds since the epoch)."""
        wall = datetime.fromtimestamp(t, self.zone).replace(
            tzinfo=None, second=0, microsecond=0, fold=0
        )
        while True:
            wall = self.next_wall_time(wall)
            tick = instant_of(wall, self.zone)
            if tick is not None and tick > t:
                return tick
            wall += MINUTE

    def next_wall_time(self, start: datetime) -> datetime:
        """The first local wall-clock minute at or after `start` (naive) that matches."""
        t, limit = start, start.year + SEARCH_YEARS
        while t.year <= limit:
            if t.month not in self.months:
                t = datetime(t.year + t.month // 12, t.month % 12 + 1, 1)
            elif not self.day_matches(t.date()):
                t = datetime(t.year, t.month, t.day) + timedelta(days=1)
            elif t.hour not in self.hours:
                t = t.replace(minute=0) + timedelta(hours=1)
            else:
                later = [m for m in sorted(self.minutes) if m >= t.minute]
                if later:
                    return t.replace(minute=later[0])
                t = t.replace(minute=0) + timedelta(hours=1)
        raise ScheduleError(f"cron expression {self.text!r} never matches")


def instant_of(wall: datetime, zone: ZoneInfo) -> float | None:
    """The moment local time `wall` names in `zone`: its first occurrence if it happens twice,
    None if it does not happen at all (it falls in a spring-forward gap)."""
    aware = wall.replace(tzinfo=zone, fold=0)
    if aware.astimezone(UTC).astimezone(zone).replace(tzinfo=None) != wall:
        return None
    return aware.timestamp()


def load_zone(name: str) -> ZoneInfo:
    """The IANA time zone `name`; ScheduleError, saying what is expected, if there is none."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, TypeError) as exc:
        raise ScheduleError(
            f"unknown time zone {name!r}: use an IANA name such as 'UTC', 'Europe/Paris' or "
            f"'America/New_York' ({type(exc).__name__})"
        ) from None


def parse(text: str, tz: str = "UTC") -> Cron:
    """Parse a five-field expression or a nickname; ScheduleError saying what is wrong."""
    if not isinstance(text, str):
        raise ScheduleError(f"a cron expression is text such as '*/5 * * * *', not {text!r}")
    zone = load_zone(tz)
    spec = NICKNAMES.get(text.strip().lower(), text)
    fields = spec.split()
    if len(fields) != 5:
        raise ScheduleError(
            f"cron expression {text!r} has {len(fields)} field{'' if len(fields) == 1 else 's'};"
            " it needs 5: minute hour "
            "day-of-month month day-of-week (e.g. '*/5 * * * *'), or a nickname such as @daily"
        )
    values = [parse_field(text, f, i) for i, f in enumerate(fields)]
    weekdays = frozenset(d % 7 for d in values[4])
    cron = Cron(
        text=text,
        minutes=values[0],
        hours=values[1],
        days=values[2],
        months=values[3],
        weekdays=weekdays,
        any_day=fields[2].startswith("*"),
        any_weekday=fields[4].startswith("*"),
        zone=zone,
    )
    check_possible(cron)
    return cron


def parse_field(text: str, field: str, index: int) -> frozenset[int]:
    """The values one field names: a comma-separated list of values, ranges and steps."""
    name, low, high, names = FIELDS[index]
    found: set[int] = set()
    for part in field.split(","):
        base, slash, step_text = part.partition("/")
        step = 1
        if slash:
            step = _number(text, name, step_text, {}, 1, high or 1)
        if base == "*":
            first, last = low, high
        elif "-" in base:
            a, _, b = base.partition("-")
            first, last = (_number(text, name, v, names, low, high) for v in (a, b))
            if first > last:
                raise ScheduleError(
                    f"cron expression {text!r}: the {name} range {base!r} runs backwards; "
                    f"for a range that wraps round, write two: '{a}-{high},{low}-{b}'"
                )
        else:
            first = _number(text, name, base, names, low, high)
            last = high if slash else first
        found.update(range(first, last + 1, step))
    return frozenset(found)


def _number(text: str, field: str, token: str, names: dict[str, int], low: int, high: int) -> int:
    value = names.get(token.lower()) if not token.isdigit() else int(token)
    if value is None or not low <= value <= high:
        allowed = f"{low}-{high}" + (f" or a name such as {next(iter(names))}" if names else "")
        raise ScheduleError(
            f"cron expression {text!r}: {token!r} is not a valid {field} (use {allowed})"
        )
    return value


def check_possible(cron: Cron) -> None:
    """ScheduleError for an expression whose days of month exist in none of its months."""
    if not (cron.any_weekday or cron.any_day):
        return  # either day field may match: the days of the week always come round
    longest = {m: calendar.monthrange(2000, m)[1] for m in cron.months}  # 2000 is a leap year
    if not any(d <= longest[m] for m in cron.months for d in cron.days):
        raise ScheduleError(
            f"cron expression {cron.text!r} never matches: none of its months has those days"
        )
