"""Ids reserved ahead for PostgreSQL submits (`store/postgres/reserve.py`): a submit in a stream
takes the ids the previous one reserved, only while they are fresh and above every id handed out
before, and a lone submit reserves nothing. Time is passed in."""

from __future__ import annotations

from shoal.store.postgres.reserve import AHEAD_MAX, FRESH_S, IdReserve, SubmitIds


def settle(
    reserve: IdReserve, plan: SubmitIds, allocated: list[int], reserved: list[int], now: float
) -> None:
    """End a submit as the datastore would: the missing ids allocated, `reserved` reserved."""
    plan.ids.extend(allocated)
    plan.reserved = reserved
    reserve.settle(plan, now)


def test_a_lone_submit_takes_nothing_and_reserves_nothing() -> None:
    reserve = IdReserve()
    plan = reserve.plan(1, now=10.0)
    assert plan == SubmitIds([], ahead=0)


def test_a_submit_soon_after_another_reserves_for_the_next_which_takes_them() -> None:
    reserve = IdReserve()
    settle(reserve, reserve.plan(1, now=10.0), [1], [], now=10.001)
    second = reserve.plan(1, now=10.02)
    assert second == SubmitIds([], ahead=2)  # twice its size, for a next group commit
    settle(reserve, second, [2], [3, 4], now=10.021)
    third = reserve.plan(1, now=10.03)
    assert third.ids == [3] and third.ahead == 1  # topped up to two, not added to
    settle(reserve, third, [], [5], now=10.031)
    assert reserve.plan(2, now=10.04).ids == [4, 5]


def test_reserved_ids_older_than_fresh_s_are_never_used() -> None:
    reserve = IdReserve()
    settle(reserve, reserve.plan(1, now=10.0), [1], [], now=10.0)
    settle(reserve, reserve.plan(1, now=10.01), [2], [3, 4], now=10.01)
    late = reserve.plan(1, now=10.01 + FRESH_S + 0.001)
    assert late == SubmitIds([], ahead=0)  # stale, and the stream has paused


def test_a_submit_gets_a_part_from_the_reserve_and_the_rest_allocated_after_it() -> None:
    reserve = IdReserve()
    settle(reserve, reserve.plan(1, now=10.0), [1], [], now=10.0)
    settle(reserve, reserve.plan(1, now=10.01), [2], [3, 4], now=10.01)
    plan = reserve.plan(5, now=10.02)
    assert plan.ids == [3, 4] and plan.ahead == 10
    settle(reserve, plan, [7, 8, 9], [10], now=10.03)
    assert plan.ids == [3, 4, 7, 8, 9]


def test_ids_stay_above_every_id_handed_out_before() -> None:
    # A concurrent submit allocated 9 while the ids 5 and 6 sat reserved: they are dropped, so
    # a submit that begins after the other ended gets ids above its.
    reserve = IdReserve()
    settle(reserve, reserve.plan(1, now=10.0), [1], [], now=10.0)
    settle(reserve, reserve.plan(1, now=10.01), [2], [5, 6], now=10.01)
    concurrent = SubmitIds([9])
    reserve.settle(concurrent, now=10.02)
    assert reserve.plan(1, now=10.03).ids == []


def test_a_reservation_that_comes_back_late_is_used_only_above_the_highest() -> None:
    reserve = IdReserve()
    settle(reserve, reserve.plan(1, now=10.0), [1], [], now=10.0)
    slow = reserve.plan(1, now=10.01)
    settle(reserve, reserve.plan(1, now=10.01), [4], [5, 6], now=10.02)
    settle(reserve, slow, [2], [3, 7], now=10.03)  # answered after the other: 3 is below 4
    assert reserve.plan(3, now=10.04).ids == [5, 6, 7]


def test_a_submit_that_failed_still_counts_its_ids_as_handed_out() -> None:
    reserve = IdReserve()
    settle(reserve, reserve.plan(1, now=10.0), [1], [], now=10.0)
    settle(reserve, reserve.plan(1, now=10.01), [2], [3, 4], now=10.01)
    failed = reserve.plan(2, now=10.02)
    reserve.settle(failed, now=10.03)  # its INSERT never answered: nothing reserved
    assert failed.ids == [3, 4] and reserve.plan(1, now=10.04).ids == []


def test_the_reserve_holds_at_most_ahead_max_ids() -> None:
    reserve = IdReserve()
    settle(reserve, reserve.plan(1, now=10.0), [1], [], now=10.0)
    big = reserve.plan(1000, now=10.01)
    assert big.ahead == AHEAD_MAX
    settle(reserve, big, list(range(2, 1002)), list(range(2000, 2000 + 2 * AHEAD_MAX)), 10.02)
    assert reserve.plan(1000, now=10.03).ids == list(range(2000 + AHEAD_MAX, 2000 + 2 * AHEAD_MAX))
