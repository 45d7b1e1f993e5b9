"""Property tests for the pure rebalance function: ownership, balance and stickiness."""

from __future__ import annotations

from collections import Counter

from hypothesis import given
from hypothesis import strategies as st

from shoal.assignment import moved, partition_of, rebalance, sections

node_ids = st.integers(min_value=1, max_value=40)


@st.composite
def situations(draw: st.DrawFn) -> tuple[tuple[int | None, ...], set[int], int]:
    partitions = draw(st.integers(min_value=1, max_value=160))
    owners = tuple(draw(st.lists(st.none() | node_ids, min_size=partitions, max_size=partitions)))
    live = draw(st.sets(node_ids, max_size=12))
    return owners, live, partitions


@given(situations())
def test_every_partition_has_exactly_one_live_owner(case: tuple) -> None:  # type: ignore[type-arg]
    owners, live, partitions = case
    new = rebalance(owners, live, partitions)
    assert len(new) == partitions
    if live:
        assert all(owner in live for owner in new)
    else:
        assert set(new) == {None}


@given(situations())
def test_section_sizes_differ_by_at_most_one(case: tuple) -> None:  # type: ignore[type-arg]
    owners, live, partitions = case
    counts = Counter(rebalance(owners, live, partitions))
    sizes = [counts.get(node, 0) for node in live]
    if sizes:
        assert max(sizes) - min(sizes) <= 1


@given(situations())
def test_rebalancing_a_balanced_assignment_moves_nothing(case: tuple) -> None:  # type: ignore[type-arg]
    owners, live, partitions = case
    once = rebalance(owners, live, partitions)
    assert rebalance(once, live, partitions) == once


@given(situations(), node_ids)
def test_a_node_leaving_moves_only_its_own_partitions(case: tuple, extra: int) -> None:  # type: ignore[type-arg]
    owners, live, partitions = case
    live = live | {extra}
    balanced = rebalance(owners, live, partitions)
    after = rebalance(balanced, live - {extra}, partitions)
    assert moved(balanced, after) == balanced.count(extra)


@given(situations(), st.integers(min_value=41, max_value=60))
def test_a_node_joining_moves_only_what_it_receives(case: tuple, newcomer: int) -> None:  # type: ignore[type-arg]
    owners, live, partitions = case
    balanced = rebalance(owners, live, partitions)
    after = rebalance(balanced, live | {newcomer}, partitions)
    assert moved(balanced, after) == after.count(newcomer)
    assert after.count(newcomer) == partitions // (len(live) + 1)


@given(situations())
def test_moves_are_the_fewest_any_balanced_assignment_needs(case: tuple) -> None:  # type: ignore[type-arg]
    owners, live, partitions = case
    new = rebalance(owners, live, partitions)
    if not live:
        return
    # Lower bound: orphaned partitions must move, and each live node keeps at most its quota;
    # the best case hands the larger quotas to the largest holders.
    base, extra = divmod(partitions, len(live))
    held = sorted((owners.count(n) for n in live), reverse=True)
    quotas = [base + 1] * extra + [base] * (len(live) - extra)
    kept = sum(min(h, q) for h, q in zip(held, quotas, strict=True))
    assert moved(owners, new) == partitions - kept


def test_partition_of_is_id_modulo_p() -> None:
    assert [partition_of(i, 4) for i in range(1, 9)] == [1, 2, 3, 0, 1, 2, 3, 0]


def test_sections_lists_each_owner_partitions_in_order() -> None:
    assert sections([2, 1, 2, None]) == {2: (0, 2), 1: (1,)}
