"""Property tests for the pure rebalance function: ownership, weighted balance, stickiness and
spread."""

from __future__ import annotations

import math
from collections import Counter

from hypothesis import assume, given
from hypothesis import strategies as st

from shoal.assignment import longest_run, moved, partition_of, quotas, rebalance, sections

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


@st.composite
def weighted(draw: st.DrawFn) -> tuple[tuple[int | None, ...], dict[int, int], int]:
    owners, live, partitions = draw(situations())
    weights = {node: draw(st.integers(min_value=1, max_value=64)) for node in live}
    return owners, weights, partitions


@given(weighted())
def test_weighted_shares_are_within_one_partition_of_the_ideal(case: tuple) -> None:  # type: ignore[type-arg]
    owners, weights, partitions = case
    new = rebalance(owners, weights, partitions, weights)
    total = sum(weights.values())
    for node, weight in weights.items():
        assert abs(new.count(node) - partitions * weight / total) < 1
    if weights:
        assert all(owner in weights for owner in new)


@given(weighted())
def test_weighted_rebalance_is_deterministic_and_stable(case: tuple) -> None:  # type: ignore[type-arg]
    owners, weights, partitions = case
    once = rebalance(owners, weights, partitions, weights)
    assert rebalance(owners, sorted(weights, reverse=True), partitions, weights) == once
    assert rebalance(once, weights, partitions, weights) == once


@given(weighted())
def test_weighted_moves_are_the_fewest_any_weighted_assignment_needs(case: tuple) -> None:  # type: ignore[type-arg]
    owners, weights, partitions = case
    if not weights:
        return
    new = rebalance(owners, weights, partitions, weights)
    # Each node keeps at most its quota, which is the floor or (for some) the ceiling of its
    # ideal share; the best case gives the ceilings to nodes holding more than their floor.
    total = sum(weights.values())
    floors = {n: partitions * w // total for n, w in weights.items()}
    can_round_up = {n for n, w in weights.items() if partitions * w % total}
    held = {n: owners.count(n) for n in weights}
    spare = partitions - sum(floors.values())
    kept = sum(min(held[n], floors[n]) for n in weights)
    kept += min(spare, sum(1 for n in can_round_up if held[n] > floors[n]))
    assert moved(owners, new) == partitions - kept


@given(st.integers(min_value=2, max_value=300), st.integers(min_value=2, max_value=12))
def test_nodes_joining_one_by_one_get_spread_sections(partitions: int, nodes: int) -> None:
    owners: tuple[int | None, ...] = (None,) * partitions
    for count in range(1, nodes + 1):
        owners = rebalance(owners, range(1, count + 1), partitions)
    if partitions >= 2 * nodes:
        assert longest_run(owners) <= 4  # consecutive ids reach different nodes


def test_two_nodes_alternate_partitions() -> None:
    one = rebalance((None,) * 8, [1], 8)
    assert rebalance(one, [1, 2], 8) == (1, 2, 1, 2, 1, 2, 1, 2)


@given(st.dictionaries(node_ids, st.integers(1, 32), min_size=2, max_size=8), st.integers(16, 512))
def test_a_fresh_weighted_assignment_is_spread(weights: dict[int, int], partitions: int) -> None:
    owners = rebalance((None,) * partitions, weights, partitions, weights)
    biggest = max(owners.count(node) for node in weights)
    assume(biggest < partitions)  # a node whose share rounds to nothing leaves nothing to spread
    # The biggest section, spread as evenly as it can be among the others, has runs of
    # biggest / (the rest) rounded up; one more at most.
    assert longest_run(owners) <= math.ceil(biggest / (partitions - biggest)) + 1


def test_quotas_round_toward_what_nodes_hold() -> None:
    # 10 partitions over weights 1:1:1 -> 4, 3, 3; the 4 goes to the node holding the most.
    assert quotas({1: 1, 2: 1, 3: 1}, {1: 0, 2: 0, 3: 7}, 10) == {1: 3, 2: 3, 3: 4}
    assert quotas({1: 1, 2: 8}, {}, 128) == {1: 14, 2: 114}


def test_longest_run_wraps_around() -> None:
    assert longest_run((1, 2, 2, 1)) == 2 and longest_run((1, 1, 2, 1)) == 3
    assert longest_run((5, 5)) == 2 and longest_run(()) == 0


def test_partition_of_is_id_modulo_p() -> None:
    assert [partition_of(i, 4) for i in range(1, 9)] == [1, 2, 3, 0, 1, 2, 3, 0]


def test_sections_lists_each_owner_partitions_in_order() -> None:
    assert sections([2, 1, 2, None]) == {2: (0, 2), 1: (1,)}
