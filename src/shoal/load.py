"""Sections that follow the load: which partitions to lend to a node with free slots, and when
to give them back. Pure: no storage, no clock of its own.

Membership and capacity decide each partition's *home* (see `assignment.rebalance`). A partition
is *lent* when its owner for now differs from its home. `plan_load_moves` looks at one moment of
the cluster (free slots per node, runnable backlog per partition) and returns the moves that
would put waiting jobs in front of free slots:

- **lend**: a partition with runnable jobs that have waited at least `min_wait_s`, owned by a node
  with no free slot, goes to the live node with the most free slots and nothing runnable of its
  own. Each receiver is lent only about as much backlog as it has free slots.
- **return**: a lent partition goes home once it has nothing runnable and has been away
  `hold_s`, or at once when its home has free slots while the borrower has none.

At most `max_moves` moves per plan, and a partition lent less than `hold_s` ago never moves again
(hysteresis: no flapping between two busy nodes). Every move is applied like any other rebalance:
one fenced transaction that bumps the epoch and records the reason.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum


class MoveKind(StrEnum):
    LEND = "lend"
    RETURN = "return"


@dataclass(frozen=True)
class LoadPolicy:
    min_wait_s: float = 0.2  # a job waiting this long while a slot is free elsewhere: move it
    hold_s: float = 2.0  # a moved partition stays put at least this long
    max_moves: int = 16  # moves in one plan: bounds the rate, one plan per check


@dataclass(frozen=True)
class NodeLoad:
    slots: int  # worker slots (its concurrency)
    busy: int  # attempts it is running or holds claimed

    @property
    def free(self) -> int:
        return max(0, self.slots - self.busy)


@dataclass(frozen=True)
class Backlog:
    runnable: int  # queued jobs whose run-after time has come
    oldest_wait_s: float  # how long the oldest of them has been runnable


@dataclass(frozen=True)
class Move:
    partition: int
    source: int | None
    target: int
    kind: MoveKind


def plan_load_moves(
    owners: Sequence[int | None],
    homes: Sequence[int | None],
    nodes: Mapping[int, NodeLoad],
    backlog: Mapping[int, Backlog],
    moved_ago_s: Mapping[int, float],
    policy: LoadPolicy = LoadPolicy(),
) -> list[Move]:
    """The moves to make now (see the module doc). `nodes` holds the live, eligible nodes only;
    `backlog` the partitions with runnable jobs; `moved_ago_s` how long ago each partition last
    moved (absent: long ago). Deterministic: ties break by partition and node id."""
    settled = {p for p in range(len(owners)) if moved_ago_s.get(p, float("inf")) >= policy.hold_s}
    moves = _returns(owners, homes, nodes, backlog, settled)
    taken = {m.partition for m in moves}
    moves += _lends(owners, nodes, backlog, settled - taken, policy.min_wait_s)
    return moves[: policy.max_moves]


def _returns(
    owners: Sequence[int | None],
    homes: Sequence[int | None],
    nodes: Mapping[int, NodeLoad],
    backlog: Mapping[int, Backlog],
    settled: set[int],
) -> list[Move]:
    moves = []
    for partition in sorted(settled):
        owner, home = owners[partition], homes[partition]
        if owner == home or home is None or home not in nodes:
            continue  # not lent, or its home is gone (membership rebalancing handles that)
        idle = partition not in backlog
        borrower = nodes.get(owner) if owner is not None else None
        home_has_room = nodes[home].free > 0 and (borrower is None or borrower.free == 0)
        if idle or home_has_room:
            moves.append(Move(partition, owner, home, MoveKind.RETURN))
    return moves


def _lends(
    owners: Sequence[int | None],
    nodes: Mapping[int, NodeLoad],
    backlog: Mapping[int, Backlog],
    movable: set[int],
    min_wait_s: float,
) -> list[Move]:
    busy_with_own = {owners[p] for p in backlog}
    room = {
        node: load.free
        for node, load in nodes.items()
        if load.free > 0 and node not in busy_with_own
    }
    waiting = sorted(
        (
            p
            for p in backlog
            if p in movable
            and backlog[p].oldest_wait_s >= min_wait_s
            and _is_stuck(owners[p], nodes)
        ),
        key=lambda p: (-backlog[p].oldest_wait_s, p),
    )
    moves = []
    for partition in waiting:
        if not room:
            break
        target = min(room, key=lambda node: (-room[node], node))
        moves.append(Move(partition, owners[partition], target, MoveKind.LEND))
        room[target] -= backlog[partition].runnable
        if room[target] <= 0:
            del room[target]
    return moves


def _is_stuck(owner: int | None, nodes: Mapping[int, NodeLoad]) -> bool:
    """Its owner cannot start its jobs soon: no free slot, or the owner is not live (a node that
    stopped heartbeating: its running jobs wait for its lease, its queued ones need not)."""
    return owner is not None and (owner not in nodes or nodes[owner].free == 0)


def apply_moves(owners: Sequence[int | None], moves: Sequence[Move]) -> tuple[int | None, ...]:
    """The owners after `moves`; a move whose source no longer owns its partition is skipped
    (the datastore refuses it the same way: a fenced update)."""
    new = list(owners)
    for move in moves:
        if new[move.partition] == move.source:
            new[move.partition] = move.target
    return tuple(new)
