"""The load rule: lend backlog to free slots, give it back, never flap."""

from __future__ import annotations

from shoal.load import Backlog, LoadPolicy, Move, MoveKind, NodeLoad, apply_moves, plan_load_moves

POLICY = LoadPolicy(min_wait_s=0.2, hold_s=2.0, max_moves=16)


def test_backlog_of_a_busy_node_is_lent_to_the_node_with_free_slots() -> None:
    owners = homes = (1, 2, 1, 2)
    nodes = {1: NodeLoad(slots=4, busy=4), 2: NodeLoad(slots=4, busy=0)}
    backlog = {0: Backlog(3, 0.5), 2: Backlog(5, 0.3)}
    moves = plan_load_moves(owners, homes, nodes, backlog, {}, POLICY)
    assert moves[0] == Move(0, 1, 2, MoveKind.LEND)  # the longest wait first
    assert apply_moves(owners, moves)[0] == 2


def test_receivers_get_about_as_much_backlog_as_they_have_free_slots() -> None:
    owners = homes = (1, 1, 1, 1, 2)
    nodes = {1: NodeLoad(8, 8), 2: NodeLoad(2, 0)}
    backlog = {p: Backlog(2, 1.0 - p / 10) for p in range(4)}
    moves = plan_load_moves(owners, homes, nodes, backlog, {}, POLICY)
    assert [m.partition for m in moves] == [0]  # two jobs fill two free slots


def test_fresh_backlog_and_free_owners_stay_put() -> None:
    owners = homes = (1, 2)
    backlog = {0: Backlog(3, 0.1)}  # not waited long enough yet
    assert plan_load_moves(owners, homes, {1: NodeLoad(1, 1), 2: NodeLoad(4, 0)}, backlog, {}) == []
    waited = {0: Backlog(3, 5.0)}  # its owner has a free slot: it will start them itself
    assert plan_load_moves(owners, homes, {1: NodeLoad(4, 2), 2: NodeLoad(4, 0)}, waited, {}) == []


def test_a_node_with_its_own_backlog_is_not_lent_more() -> None:
    owners = homes = (1, 2)
    nodes = {1: NodeLoad(1, 1), 2: NodeLoad(4, 0)}
    backlog = {0: Backlog(3, 1.0), 1: Backlog(1, 0.0)}
    assert plan_load_moves(owners, homes, nodes, backlog, {}) == []


def test_lent_partitions_go_home_when_idle_or_when_home_has_room() -> None:
    homes = (1, 1, 1)
    owners = (2, 2, 1)
    nodes = {1: NodeLoad(4, 0), 2: NodeLoad(4, 4)}
    backlog = {1: Backlog(2, 0.0)}
    moves = plan_load_moves(owners, homes, nodes, backlog, {}, POLICY)
    assert moves == [Move(0, 2, 1, MoveKind.RETURN), Move(1, 2, 1, MoveKind.RETURN)]


def test_a_partition_that_just_moved_stays_put() -> None:
    homes = (1, 1)
    owners = (2, 1)
    nodes = {1: NodeLoad(4, 0), 2: NodeLoad(4, 4)}
    assert plan_load_moves(owners, homes, nodes, {}, {0: 0.5}, POLICY) == []
    assert plan_load_moves(owners, homes, nodes, {}, {0: 2.5}, POLICY) != []


def test_moves_per_plan_are_bounded() -> None:
    owners = homes = (1,) * 64 + (2,)
    nodes = {1: NodeLoad(1, 1), 2: NodeLoad(1000, 0)}
    backlog = {p: Backlog(1, 1.0) for p in range(64)}
    assert len(plan_load_moves(owners, homes, nodes, backlog, {}, POLICY)) == 16


def test_a_move_whose_source_lost_the_partition_is_refused() -> None:
    assert apply_moves((1, 3), [Move(1, 2, 1, MoveKind.LEND)]) == (1, 3)
