"""The cron parser and its next tick: table tests for the syntax and the daylight-saving edges,
property tests against a minute-by-minute oracle in zones with and without DST."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from functools import cache
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shoal import cron
from shoal.errors import ScheduleError, ShoalError

PARIS = "Europe/Paris"


def at(zone: str, *parts: int) -> float:
    return datetime(*parts, tzinfo=ZoneInfo(zone)).timestamp()  # type: ignore[misc]


def walls(expr: str, zone: str, start: float, count: int) -> list[str]:
    """The next `count` ticks after `start`, as local wall times with their UTC offset."""
    c, out, t = cron.parse(expr, zone), [], start
    for _ in range(count):
        t = c.next_after(t)
        out.append(datetime.fromtimestamp(t, ZoneInfo(zone)).strftime("%Y-%m-%d %H:%M %z"))
    return out


@pytest.mark.parametrize(
    ("expr", "field", "values"),
    [
        ("*/15 * * * *", "minutes", {0, 15, 30, 45}),
        ("5-20/5 * * * *", "minutes", {5, 10, 15, 20}),
        ("50/5 * * * *", "minutes", {50, 55}),
        ("1,2,3-4 * * * *", "minutes", {1, 2, 3, 4}),
        ("0 9-17/4 * * *", "hours", {9, 13, 17}),
        ("0 0 * jan,MAR-may *", "months", {1, 3, 4, 5}),
        ("0 0 * * mon-fri", "weekdays", {1, 2, 3, 4, 5}),
        ("0 0 * * 7", "weekdays", {0}),
        ("0 0 * * 5-7", "weekdays", {5, 6, 0}),
        ("0 0 * * Sun,sat", "weekdays", {0, 6}),
    ],
)
def test_fields_name_the_values_cron_gives_them(expr: str, field: str, values: set[int]) -> None:
    assert getattr(cron.parse(expr), field) == frozenset(values)


@pytest.mark.parametrize(
    ("nickname", "same_as"),
    [("@hourly", "0 * * * *"), ("@daily", "0 0 * * *"), ("@midnight", "0 0 * * *"),
     ("@weekly", "0 0 * * 0"), ("@monthly", "0 0 1 * *"), ("@yearly", "0 0 1 1 *"),
     ("@annually", "0 0 1 1 *")],
)  # fmt: skip
def test_nicknames_stand_for_their_expressions(nickname: str, same_as: str) -> None:
    start = at("UTC", 2026, 5, 17, 13, 7)
    assert walls(nickname, "UTC", start, 3) == walls(same_as, "UTC", start, 3)


def test_restricted_day_fields_match_either_and_a_star_day_field_matches_both() -> None:
    start = at("UTC", 2026, 1, 31, 12)  # a Saturday
    either = walls("0 0 13 * fri", "UTC", start, 4)
    assert either == [
        "2026-02-06 00:00 +0000",  # a Friday
        "2026-02-13 00:00 +0000",  # the 13th (also a Friday)
        "2026-02-20 00:00 +0000",
        "2026-02-27 00:00 +0000",
    ]
    # `*/2` starts with a star, so the fields are ANDed: odd days that are Fridays.
    assert walls("0 0 */2 * fri", "UTC", start, 2) == [
        "2026-02-13 00:00 +0000",
        "2026-02-27 00:00 +0000",
    ]


def test_february_29th_is_found_years_ahead() -> None:
    assert walls("0 12 29 2 *", "UTC", at("UTC", 2025, 3, 1), 2) == [
        "2028-02-29 12:00 +0000",
        "2032-02-29 12:00 +0000",
    ]


def test_a_local_time_skipped_by_spring_forward_does_not_tick() -> None:
    # Paris moved from 02:00 to 03:00 on 2026-03-29: 02:30 did not exist that day.
    assert walls("30 2 * * *", PARIS, at(PARIS, 2026, 3, 28, 12), 2) == [
        "2026-03-30 02:30 +0200",
        "2026-03-31 02:30 +0200",
    ]
    assert walls("*/30 * * * *", PARIS, at(PARIS, 2026, 3, 29, 1, 15), 3) == [
        "2026-03-29 01:30 +0100",
        "2026-03-29 03:00 +0200",
        "2026-03-29 03:30 +0200",
    ]


def test_a_local_time_repeated_by_fall_back_ticks_once_at_its_first_occurrence() -> None:
    # Paris moved from 03:00 back to 02:00 on 2026-10-25: 02:00-02:59 happened twice.
    assert walls("30 2 * * *", PARIS, at(PARIS, 2026, 10, 24, 12), 2) == [
        "2026-10-25 02:30 +0200",
        "2026-10-26 02:30 +0100",
    ]
    assert walls("*/30 * * * *", PARIS, at(PARIS, 2026, 10, 25, 1, 45), 4) == [
        "2026-10-25 02:00 +0200",
        "2026-10-25 02:30 +0200",
        "2026-10-25 03:00 +0100",  # the second 02:00 and 02:30 do not tick again
        "2026-10-25 03:30 +0100",
    ]


def test_from_inside_the_repeated_hour_the_next_tick_is_after_it() -> None:
    second_pass = datetime(2026, 10, 25, 2, 10, tzinfo=ZoneInfo(PARIS), fold=1).timestamp()
    assert walls("30 2 * * *", PARIS, second_pass, 1) == ["2026-10-26 02:30 +0100"]


@pytest.mark.parametrize(
    ("expr", "complaint"),
    [
        ("* * * *", "has 4 fields"),
        ("* * * * * *", "has 6 fields"),
        ("60 * * * *", "'60' is not a valid minute"),
        ("* 24 * * *", "'24' is not a valid hour"),
        ("* * 0 * *", "'0' is not a valid day of month"),
        ("* * * 13 *", "'13' is not a valid month"),
        ("* * * * 8", "'8' is not a valid day of week"),
        ("* * * smarch *", "'smarch' is not a valid month"),
        ("* * * * funday", "'funday' is not a valid day of week"),
        ("*/0 * * * *", "'0' is not a valid minute"),
        ("30-10 * * * *", "runs backwards"),
        ("1,,2 * * * *", "'' is not a valid minute"),
        ("0 0 30 2 *", "never matches"),
        ("0 0 31 4,6,9,11 *", "never matches"),
        ("@fortnightly", "has 1 field"),
    ],
)
def test_malformed_expressions_are_refused_saying_what_is_wrong(expr: str, complaint: str) -> None:
    with pytest.raises(ScheduleError, match=complaint) as caught:
        cron.parse(expr)
    assert isinstance(caught.value, ShoalError)


@pytest.mark.parametrize("zone", ["Mars/Olympus_Mons", "", "../../etc/passwd", "Europe/"])
def test_an_unknown_time_zone_is_refused(zone: str) -> None:
    with pytest.raises(ScheduleError, match="unknown time zone"):
        cron.parse("* * * * *", zone)


def test_thirty_first_of_a_month_skips_shorter_months() -> None:
    assert walls("0 0 31 * *", "UTC", at("UTC", 2026, 1, 31, 1), 3) == [
        "2026-03-31 00:00 +0000",
        "2026-05-31 00:00 +0000",
        "2026-07-31 00:00 +0000",
    ]


# -- properties, against an oracle that walks every minute ---------------------------------------

ZONES = ["UTC", PARIS, "America/New_York", "Australia/Lord_Howe", "Asia/Kolkata"]
HORIZON_MIN = 2 * 24 * 60


@cache
def transitions(zone: str) -> tuple[float, ...]:
    """Moments in 2025-2027 when the zone's UTC offset changes, to the hour."""
    z, found = ZoneInfo(zone), []
    t = datetime(2025, 1, 1, tzinfo=UTC)
    offset = t.astimezone(z).utcoffset()
    while t.year < 2028:
        t += timedelta(hours=1)
        now = t.astimezone(z).utcoffset()
        if now != offset:
            found.append(t.timestamp())
            offset = now
    return tuple(found) or (t.timestamp(),)


def oracle_next(c: cron.Cron, t: float, horizon_min: int) -> float | None:
    """The first tick after `t` within the horizon, by looking at every minute: a UTC minute is
    a tick if its local wall time matches and it is that wall time's first occurrence."""
    u = (int(t) // 60) * 60
    for _ in range(horizon_min):
        u += 60
        local = datetime.fromtimestamp(u, c.zone)
        wall = local.replace(tzinfo=None)
        matches = (
            local.minute in c.minutes
            and local.hour in c.hours
            and local.month in c.months
            and c.day_matches(local.date())
        )
        if matches and cron.instant_of(wall, c.zone) == u and u > t:
            return float(u)
    return None


field_values = {
    "minute": st.sampled_from(["*", "*/7", "0", "30", "0-10", "15,45", "*/20", "59"]),
    "hour": st.sampled_from(["*", "2", "1-3", "*/5", "0,12", "23", "2,3"]),
    "dom": st.sampled_from(["*", "1", "15-20", "*/3", "28-31", "13"]),
    "month": st.sampled_from(["*", "3", "10,11", "*/2", "jan-jun", "1-12"]),
    "dow": st.sampled_from(["*", "0", "mon-fri", "6,7", "*/2", "3"]),
}
expressions = st.builds(
    lambda m, h, d, mo, w: f"{m} {h} {d} {mo} {w}",
    *field_values.values(),
)


@st.composite
def moments(draw: st.DrawFn) -> tuple[str, float]:
    zone = draw(st.sampled_from(ZONES))
    if draw(st.booleans()):  # near a daylight-saving change, where the edge cases live
        base = draw(st.sampled_from(transitions(zone)))
        return zone, base + draw(st.floats(-3 * 86400, 3 * 86400))
    return zone, draw(st.floats(at("UTC", 2025, 1, 1), at("UTC", 2027, 12, 1)))


@settings(max_examples=100, deadline=None)
@given(expressions, moments())
def test_next_tick_is_the_first_matching_moment_after_t(expr: str, moment: tuple) -> None:  # type: ignore[type-arg]
    zone, t = moment
    c = cron.parse(expr, zone)
    tick = c.next_after(t)
    assert tick > t
    assert tick % 60 == 0
    expected = oracle_next(c, t, HORIZON_MIN)
    if expected is None:
        assert tick > t + (HORIZON_MIN - 1) * 60
    else:
        assert tick == expected


@settings(max_examples=60, deadline=None)
@given(expressions, moments())
def test_ticks_strictly_increase_and_each_wall_time_ticks_once(expr: str, moment: tuple) -> None:  # type: ignore[type-arg]
    zone, t = moment
    c = cron.parse(expr, zone)
    ticks = [t]
    for _ in range(20):
        ticks.append(c.next_after(ticks[-1]))
    assert all(a < b for a, b in itertools.pairwise(ticks))
    wall_times = [datetime.fromtimestamp(x, c.zone).replace(tzinfo=None, fold=0) for x in ticks[1:]]
    assert len(set(wall_times)) == len(wall_times)
