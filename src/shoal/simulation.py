"""A deterministic model of the assignment protocol, for property tests and `bench/simulate.py`.

A `Simulation` plays one datastore and many nodes in simulated time, with a seeded random source:
nodes join, leave, pause, resume and crash; jobs arrive on sequential ids and run for random
times; P grows. It uses the same pure rules as the real nodes (`assignment.rebalance` for homes,
`load.plan_load_moves` for lending) and models what the datastore enforces: every change is one
serialised write that bumps the epoch, and a claim reads the claimer's section in the claim
itself (as both datastores' CLAIM statements do), so a node's own view of its section — refreshed
by its heartbeat, used for its logs and wake-ups — can be stale without a claim ever taking
another node's partition. After every step it checks that every partition has exactly one owner
and one home, each a node the datastore holds live, and it measures what the protocol costs: time
partitions spend with an owner that cannot claim, partitions moved per membership change against
the fewest possible, how long nodes' views take to converge, and how long runnable jobs wait.
"""

from __future__ import annotations

import math
import random
from collections import Counter, deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from shoal.assignment import quotas, rebalance
from shoal.load import Backlog, LoadPolicy, NodeLoad, apply_moves, plan_load_moves


class Life(StrEnum):
    LIVE = "live"
    PAUSED = "paused"
    CRASHED = "crashed"  # stopped heartbeating; not yet declared dead
    DEAD = "dead"


@dataclass
class SimNode:
    id: int
    slots: int
    life: Life = Life.LIVE
    last_beat: float = 0.0
    view: frozenset[int] = frozenset()  # its section as of its last heartbeat
    view_epoch: int = -1
    running: list[float] = field(default_factory=list)  # end times of its attempts


@dataclass(frozen=True)
class Churn:
    """Chances per node per simulated second (join: per second for the cluster)."""

    join: float = 0.5
    leave: float = 0.002
    pause: float = 0.002
    resume: float = 0.2  # per paused node
    crash: float = 0.002
    grow: float = 0.002  # the cluster doubles P
    max_nodes: int = 1000
    max_partitions: int = 8192


@dataclass(frozen=True)
class Workload:
    jobs_per_s: float = 200.0
    mean_run_s: float = 0.5
    sigma: float = 1.0  # log-normal spread of run times


@dataclass
class Figures:
    steps: int = 0
    membership_changes: int = 0
    load_moves: int = 0
    moved: int = 0
    fewest: int = 0
    unowned_partition_s: float = 0.0
    partition_s: float = 0.0
    converge_s: list[float] = field(default_factory=list)
    waits_s: list[float] = field(default_factory=list)
    stale_views: int = 0  # node-steps whose view of its section differed from the datastore's
    full_s: float = 0.0  # time with jobs runnable while every live slot was busy (saturated)
    run_s: float = 0.0
    jobs_started: int = 0
    violations: list[str] = field(default_factory=list)


class Simulation:
    def __init__(
        self,
        seed: int,
        partitions: int = 128,
        nodes: int = 2,
        churn: Churn | None = None,
        workload: Workload | None = None,
        policy: LoadPolicy | None = None,
        step_s: float = 0.1,
        heartbeat_s: float = 1.0,
        lease_s: float = 5.0,
        slots: Sequence[int] = (),
    ) -> None:
        """`slots` gives the first nodes' slots; the others (and joiners) get 1 to 16 at random."""
        self.rng = random.Random(seed)
        self.churn = churn or Churn()
        self.workload = workload or Workload()
        self.policy = policy or LoadPolicy()
        self.step_s, self.heartbeat_s, self.lease_s = step_s, heartbeat_s, lease_s
        self.now = 0.0
        self.partitions = partitions
        self.owners: list[int | None] = [None] * partitions
        self.homes: list[int | None] = [None] * partitions
        self.moved_at: dict[int, float] = {}
        self.epoch = 0
        self.changes: deque[tuple[int, float]] = deque()  # (epoch, when) not yet seen by all
        self.queues: list[deque[float]] = [deque() for _ in range(partitions)]
        self.nodes: dict[int, SimNode] = {}
        self.live: dict[int, SimNode] = {}  # the eligible nodes, kept as lives change
        self.sections: dict[int, frozenset[int]] = {}  # each owner's partitions, as written
        self.last_check = -1.0
        self.next_node = 1
        self.next_job = 1
        self.figures = Figures()
        for i in range(nodes):
            self.join(slots[i] if i < len(slots) else None)

    # -- membership (each a serialised datastore write) -------------------------------------

    def eligible(self) -> dict[int, SimNode]:
        return self.live

    def join(self, slots: int | None = None) -> None:
        slots = slots or self.rng.choice((1, 2, 4, 8, 16))
        node = SimNode(self.next_node, slots, last_beat=self.now)
        self.next_node += 1
        self.nodes[node.id] = node
        self.live[node.id] = node
        self.rebalance_membership()

    def set_life(self, node: SimNode, life: Life) -> None:
        node.life = life
        if life is Life.LIVE:
            self.live[node.id] = node
        else:
            self.live.pop(node.id, None)
        if life is not Life.CRASHED:  # a crash is silent: nothing changes until it is noticed
            self.rebalance_membership()

    def grow(self) -> None:
        """P doubles: new partitions start unowned and the next rebalance gives them homes.
        Queued jobs keep the partition stored with them."""
        added = self.partitions
        self.partitions *= 2
        self.owners += [None] * added
        self.homes += [None] * added
        self.queues += [deque() for _ in range(added)]
        self.rebalance_membership()

    def rebalance_membership(self) -> None:
        live = self.eligible()
        weights = {n.id: n.slots for n in live.values()}
        homes = rebalance(self.homes, live, self.partitions, weights)
        owners = [
            owner if owner is not None and owner in live and owner != old_home else home
            for owner, old_home, home in zip(self.owners, self.homes, homes, strict=True)
        ]
        self._count_fewest(weights)
        self._write(owners, list(homes))
        self.figures.membership_changes += 1

    def _count_fewest(self, weights: dict[int, int]) -> None:
        if not weights:
            return
        counts = Counter(self.homes)
        held = {n: counts[n] for n in weights}
        quota = quotas(weights, held, self.partitions)
        self.figures.fewest += self.partitions - sum(min(held[n], quota[n]) for n in weights)

    def _write(self, owners: list[int | None], homes: list[int | None]) -> None:
        moved = [p for p in range(self.partitions) if owners[p] != self.owners[p]]
        homes_moved = sum(1 for a, b in zip(homes, self.homes, strict=True) if a != b)
        self.figures.moved += homes_moved
        for p in moved:
            self.moved_at[p] = self.now
        if moved or homes != self.homes:
            self.owners, self.homes = owners, homes
            sections: dict[int, set[int]] = {}
            for p, owner in enumerate(owners):
                if owner is not None:
                    sections.setdefault(owner, set()).add(p)
            self.sections = {n: frozenset(parts) for n, parts in sections.items()}
            self.epoch += 1
            self.changes.append((self.epoch, self.now))

    # -- one step -------------------------------------------------------------------------------

    def run(self, seconds: float) -> Figures:
        for _ in range(round(seconds / self.step_s)):
            self.step()
        return self.figures

    def step(self) -> None:
        self.now += self.step_s
        self.figures.steps += 1
        self._churn()
        self._arrivals()
        self._reap()
        for node in list(self.nodes.values()):
            if node.life in (Life.LIVE, Life.PAUSED):
                self._turn(node)
        if self.now - self.last_check >= 0.25 and any(
            len(n.running) < n.slots for n in self.live.values()
        ):
            # Any node with a free slot checks the load; the first to look makes the moves.
            self.last_check = self.now
            self._follow_load()
        self._measure()
        self._check()

    def _churn(self) -> None:
        c, dt = self.churn, self.step_s
        if len(self.nodes) < c.max_nodes and self.rng.random() < c.join * dt:
            self.join()
        if self.partitions * 2 <= c.max_partitions and self.rng.random() < c.grow * dt:
            self.grow()
        for node in list(self.nodes.values()):
            roll = self.rng.random()
            if node.life is Life.LIVE and len(self.eligible()) > 1:
                if roll < c.crash * dt:
                    self.set_life(node, Life.CRASHED)
                elif roll < (c.crash + c.leave) * dt:
                    node.running.clear()  # a clean leave releases its jobs (not modelled)
                    self.set_life(node, Life.DEAD)
                elif roll < (c.crash + c.leave + c.pause) * dt:
                    self.set_life(node, Life.PAUSED)
            elif node.life is Life.PAUSED and roll < c.resume * dt:
                self.set_life(node, Life.LIVE)

    def _arrivals(self) -> None:
        count = _poisson(self.rng, self.workload.jobs_per_s * self.step_s)
        for _ in range(count):
            self.queues[self.next_job % self.partitions].append(self.now)
            self.next_job += 1

    def _turn(self, node: SimNode) -> None:
        node.running = [end for end in node.running if end > self.now]
        if self.now - node.last_beat >= self.heartbeat_s:
            node.last_beat = self.now
            node.view = self.sections.get(node.id, frozenset())
            node.view_epoch = self.epoch
        if node.life is Life.LIVE:
            self._claim(node)

    def _reap(self) -> None:
        """Declare dead every crashed node whose lease has run out (any live node does it)."""
        crashed = [n for n in self.nodes.values() if n.life is Life.CRASHED]
        for node in crashed:
            if self.now - node.last_beat > self.lease_s:
                node.running.clear()  # requeued in the real system; not modelled further
                self.set_life(node, Life.DEAD)

    def _claim(self, node: SimNode) -> None:
        free = node.slots - len(node.running)
        for partition in sorted(self.sections.get(node.id, ())):  # the datastore's, not the view
            if free <= 0:
                return
            queue = self.queues[partition]
            while queue and free > 0:
                self.figures.waits_s.append(self.now - queue.popleft())
                node.running.append(self.now + self._duration())
                self.figures.jobs_started += 1
                free -= 1

    def _follow_load(self) -> None:
        live = self.eligible()
        loads = {n.id: NodeLoad(n.slots, len(n.running)) for n in live.values()}
        backlog = {p: Backlog(len(q), self.now - q[0]) for p, q in enumerate(self.queues) if q}
        moved_ago = {p: self.now - at for p, at in self.moved_at.items()}
        moves = plan_load_moves(self.owners, self.homes, loads, backlog, moved_ago, self.policy)
        if moves:
            self.figures.load_moves += len(moves)
            self._write(list(apply_moves(self.owners, moves)), self.homes)

    def _duration(self) -> float:
        w = self.workload
        # mu chosen so that the mean run time is mean_run_s whatever the spread.
        return self.rng.lognormvariate(math.log(w.mean_run_s) - w.sigma**2 / 2, w.sigma)

    # -- checks and figures ---------------------------------------------------------------------

    def _measure(self) -> None:
        live = self.eligible()
        stuck = sum(1 for o in self.owners if o is None or o not in live)
        self.figures.unowned_partition_s += stuck * self.step_s if live else 0.0
        self.figures.partition_s += self.partitions * self.step_s
        stale = sum(1 for n in live.values() if n.view_epoch != self.epoch)
        self.figures.stale_views += stale
        # A change has converged once every live node's view is at its epoch or later; timed
        # per change, so changes coming faster than heartbeats do not add up into one.
        seen = min((n.view_epoch for n in live.values()), default=self.epoch)
        while self.changes and self.changes[0][0] <= seen:
            self.figures.converge_s.append(self.now - self.changes.popleft()[1])
        self.figures.run_s += self.step_s
        if any(self.queues) and all(len(n.running) >= n.slots for n in live.values()):
            self.figures.full_s += self.step_s

    def _check(self) -> None:
        """Every partition has one owner and one home, each a node the datastore holds live (a
        crashed node counts until it is declared dead)."""
        if len(self.owners) != self.partitions or len(self.homes) != self.partitions:
            self.figures.violations.append(f"{self.now:.1f}s: owners do not cover P")
        known = {n.id for n in self.nodes.values() if n.life in (Life.LIVE, Life.CRASHED)}
        if not self.eligible():
            return
        for p, (owner, home) in enumerate(zip(self.owners, self.homes, strict=True)):
            if home not in known or owner not in known:
                self.figures.violations.append(
                    f"{self.now:.1f}s: partition {p} is owned by {owner} (home {home}), "
                    "not a live node"
                )


def _poisson(rng: random.Random, mean: float) -> int:
    """A Poisson draw by counting exponential gaps (means here are small)."""
    count, total = 0, rng.expovariate(1.0)
    while total < mean:
        count += 1
        total += rng.expovariate(1.0)
    return count
