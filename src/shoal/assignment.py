"""Which node runs which job: partitions, sections and the rebalance function.

A job's partition is its sequential id modulo P. Each live node owns a section (a set of
partitions). `rebalance` is pure: given who owns what now and who is live, it returns a new
assignment that is balanced (section sizes differ by at most one) and sticky (it moves the fewest
partitions that any balanced assignment could).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence

Owners = tuple[int | None, ...]


def partition_of(job_id: int, partitions: int) -> int:
    return job_id % partitions


def sections(owners: Sequence[int | None]) -> dict[int, tuple[int, ...]]:
    """Each owner's partitions, in ascending order."""
    out: dict[int, list[int]] = {}
    for partition, owner in enumerate(owners):
        if owner is not None:
            out.setdefault(owner, []).append(partition)
    return {node: tuple(parts) for node, parts in out.items()}


def rebalance(owners: Sequence[int | None], live: Collection[int], partitions: int) -> Owners:
    """Return the new owner of every partition.

    Every partition gets exactly one live owner when `live` is non-empty (none when it is empty).
    Quotas are P // n, and the P % n extra partitions go to the nodes that hold the most now, so
    that no node gives up a partition it could have kept. Ties break by node id, so every node that
    computes a rebalance from the same inputs gets the same answer.
    """
    if len(owners) != partitions:
        raise ValueError(f"owners has {len(owners)} entries, expected {partitions}")
    live_ids = sorted(set(live))
    if not live_ids:
        return (None,) * partitions
    held = sections([o if o in live_ids else None for o in owners])
    base, extra = divmod(partitions, len(live_ids))
    by_holding = sorted(live_ids, key=lambda node: (-len(held.get(node, ())), node))
    quota = {node: base + (1 if rank < extra else 0) for rank, node in enumerate(by_holding)}

    new: list[int | None] = [None] * partitions
    for node in live_ids:
        for partition in held.get(node, ())[: quota[node]]:
            new[partition] = node
    free = iter(p for p in range(partitions) if new[p] is None)
    for node in live_ids:
        for _ in range(quota[node] - len(held.get(node, ())[: quota[node]])):
            new[next(free)] = node
    return tuple(new)


def moved(before: Sequence[int | None], after: Sequence[int | None]) -> int:
    """How many partitions changed owner."""
    return sum(1 for a, b in zip(before, after, strict=True) if a != b)


def format_section(section: Iterable[int], sep: str = ",", empty: str = "none") -> str:
    """Compact ranges for people to read, e.g. '0-3,8,10-12'; `empty` when there are none."""
    runs: list[list[int]] = []
    for p in sorted(set(section)):
        if runs and p == runs[-1][1] + 1:
            runs[-1][1] = p
        else:
            runs.append([p, p])
    return sep.join(str(a) if a == b else f"{a}-{b}" for a, b in runs) or empty
