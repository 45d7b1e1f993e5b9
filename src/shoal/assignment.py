"""Which node runs which job: partitions, sections and the rebalance function.

A job's partition is its sequential id modulo P. Each live node owns a section (a set of
partitions). `rebalance` is pure: given who owns what now, who is live and each node's capacity
(its worker slots), it returns a new assignment in which

- every partition has exactly one live owner (none when no node is live);
- each node's share follows its capacity: within one partition of P * slots / all slots;
- the fewest partitions move that any such assignment could move (sticky);
- sections are spread over the partition space rather than ranges, so consecutive job ids land on
  different nodes: a burst of submits reaches every node at once.

Ties break by node id, so every node that computes a rebalance from the same inputs gets the same
answer.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence

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


def quotas(weights: Mapping[int, int], held: Mapping[int, int], partitions: int) -> dict[int, int]:
    """How many partitions each node should own: its weighted share, rounded so that they sum
    to `partitions`.

    Each quota is the floor or the ceiling of `partitions * weight / total weight` (equal when
    that is whole). The partitions left over after the floors go first to nodes that already hold
    more than their floor (so none gives up a partition it could keep), then by the largest
    remainder, then by how many they hold, then by id.
    """
    total = sum(weights.values())
    if total <= 0:
        raise ValueError("weights must be positive")
    out: dict[int, int] = {}
    remainders: dict[int, int] = {}
    for node, weight in weights.items():
        if weight <= 0:
            raise ValueError(f"node {node} has weight {weight}; weights must be positive")
        out[node], remainders[node] = divmod(partitions * weight, total)
    left = partitions - sum(out.values())
    candidates = sorted(
        (node for node in weights if remainders[node] > 0),
        key=lambda node: (
            held.get(node, 0) <= out[node],
            -remainders[node],
            -held.get(node, 0),
            node,
        ),
    )
    for node in candidates[:left]:
        out[node] += 1
    return out


def rebalance(
    owners: Sequence[int | None],
    live: Collection[int],
    partitions: int,
    weights: Mapping[int, int] | None = None,
) -> Owners:
    """Return the new owner of every partition (see the module doc for what holds).

    `weights` gives each live node's capacity (default 1 each: equal sections). A node keeps an
    evenly spaced subset of what it holds; the partitions that must move are dealt out in
    partition order, interleaving the nodes that receive them, so each section stays spread.
    """
    if len(owners) != partitions:
        raise ValueError(f"owners has {len(owners)} entries, expected {partitions}")
    live_ids = sorted(set(live))
    if not live_ids:
        return (None,) * partitions
    weight_of = {node: (weights or {}).get(node, 1) for node in live_ids}
    held = sections([o if o in weight_of else None for o in owners])
    quota = quotas(weight_of, {n: len(p) for n, p in held.items()}, partitions)

    new: list[int | None] = [None] * partitions
    wanted = {}
    for node in live_ids:
        kept = _spread_subset(held.get(node, ()), quota[node])
        for partition in kept:
            new[partition] = node
        wanted[node] = quota[node] - len(kept)
    free = [p for p in range(partitions) if new[p] is None]
    for partition, node in zip(free, _interleave(wanted), strict=True):
        new[partition] = node
    return tuple(new)


def _spread_subset(parts: Sequence[int], keep: int) -> list[int]:
    """`keep` of `parts` (ascending), evenly spaced, so what is given away is spread too."""
    if keep >= len(parts):
        return list(parts)
    return [parts[(i * len(parts)) // keep] for i in range(keep)]


def _interleave(wanted: Mapping[int, int]) -> list[int]:
    """A sequence naming each node `wanted[node]` times, with every node's turns spread evenly.

    Built from the node wanting least upwards: each next node's turns are spread evenly among
    the sequence so far, so the biggest node's runs are as short as its share allows and the
    smaller nodes never bunch together and leave it a long run. Ties by id.
    """
    takers = sorted((node for node, n in wanted.items() if n > 0), key=lambda n: (wanted[n], -n))
    out: list[int] = []
    for node in takers:
        out = _merge_evenly(node, wanted[node], out)
    return out


def _merge_evenly(node: int, count: int, others: list[int]) -> list[int]:
    """`count` turns of `node` placed evenly among `others` (kept in order), centred."""
    total = count + len(others)
    rest = iter(others)
    merged = []
    for i in range(total):
        mine = ((i + 1) * count + total // 2) // total > (i * count + total // 2) // total
        merged.append(node if mine else next(rest))
    return merged


def moved(before: Sequence[int | None], after: Sequence[int | None]) -> int:
    """How many partitions changed owner."""
    return sum(1 for a, b in zip(before, after, strict=True) if a != b)


def longest_run(owners: Sequence[int | None]) -> int:
    """The most consecutive partitions (wrapping around) that share one owner: how many
    consecutive job ids can land on a single node."""
    if not owners:
        return 0
    if len(set(owners)) == 1:
        return len(owners)
    start = next(i for i in range(len(owners)) if owners[i] != owners[i - 1])
    best = run = 0
    for i in range(len(owners)):
        here = owners[(start + i) % len(owners)]
        run = run + 1 if i and here == owners[(start + i - 1) % len(owners)] else 1
        best = max(best, run)
    return best


def format_section(section: Iterable[int], sep: str = ",", empty: str = "none") -> str:
    """Compact ranges for people to read, e.g. '0-3,8,10-12'; `empty` when there are none."""
    runs: list[list[int]] = []
    for p in sorted(set(section)):
        if runs and p == runs[-1][1] + 1:
            runs[-1][1] = p
        else:
            runs.append([p, p])
    return sep.join(str(a) if a == b else f"{a}-{b}" for a, b in runs) or empty
