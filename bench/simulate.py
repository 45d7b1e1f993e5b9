"""The assignment protocol in simulation: 1,000 nodes through churn and load, figures printed.

Runs `shoal.simulation` (a deterministic, pure model of the protocol: the same rebalance and load
rules the nodes use, and the datastore's fence on claims) for a few scenarios and prints, per
scenario: membership changes, partitions moved per change against the fewest possible, load
moves, the share of partition-time whose owner could not claim (a crashed node not yet declared
dead), how long nodes' views took to converge after a change, how long runnable jobs waited, and
any invariant violation (there must be none). Seeded: the same command prints the same figures.

    .venv/bin/python bench/simulate.py                 # all scenarios
    .venv/bin/python bench/simulate.py --quick         # small ones only
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass, field

from shoal.load import LoadPolicy
from shoal.simulation import Churn, Figures, Simulation, Workload


@dataclass(frozen=True)
class Scenario:
    name: str
    nodes: int
    partitions: int
    seconds: float
    churn: Churn
    workload: Workload
    slots: tuple[int, ...] = ()
    policy: LoadPolicy = field(default_factory=LoadPolicy)


CALM = Churn(join=0.0, leave=0.0, pause=0.0, crash=0.0, grow=0.0)
SCENARIOS = [
    Scenario("1000 nodes, churn", 1000, 4096, 60.0, Churn(join=1.0), Workload(2000, 0.5)),
    Scenario(
        "1000 nodes, churn, P grows",
        1000,
        1024,
        60.0,
        Churn(join=1.0, grow=0.05),
        Workload(2000, 0.5),
    ),
    Scenario(
        "20 nodes, heavy churn",
        20,
        256,
        300.0,
        Churn(join=0.2, leave=0.01, pause=0.01, crash=0.01, max_nodes=40),
        Workload(100, 0.3),
    ),
    Scenario(
        "2 nodes of 1 and 8 slots, heavy tail",
        2,
        64,
        300.0,
        CALM,
        Workload(8, 0.5, sigma=1.5),
        slots=(1, 8),
    ),
    Scenario(
        "same, no load moves",
        2,
        64,
        300.0,
        CALM,
        Workload(8, 0.5, sigma=1.5),
        slots=(1, 8),
        policy=LoadPolicy(max_moves=0),
    ),
    Scenario(
        "4 unequal nodes, heavy tail",
        4,
        128,
        300.0,
        CALM,
        Workload(20, 0.5, sigma=1.5),
        slots=(1, 2, 4, 8),
    ),
    Scenario(
        "same, no load moves",
        4,
        128,
        300.0,
        CALM,
        Workload(20, 0.5, sigma=1.5),
        slots=(1, 2, 4, 8),
        policy=LoadPolicy(max_moves=0),
    ),
]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))] if ordered else 0.0


def row(scenario: Scenario, figures: Figures, took_s: float) -> str:
    changes = max(1, figures.membership_changes)
    return (
        f"{scenario.name:<38} {figures.membership_changes:>6} "
        f"{figures.moved / changes:>7.1f} {figures.fewest / changes:>7.1f} "
        f"{figures.load_moves:>6} {100 * figures.unowned_partition_s / figures.partition_s:>7.2f}% "
        f"{percentile(figures.converge_s, 0.5):>5.1f} {percentile(figures.converge_s, 0.99):>5.1f} "
        f"{percentile(figures.waits_s, 0.5):>5.2f} {percentile(figures.waits_s, 0.99):>6.2f} "
        f"{100 * figures.full_s / max(figures.run_s, 1e-9):>5.1f}% "
        f"{len(figures.violations):>4} {took_s:>5.0f}s"
    )


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="only the small scenarios")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    print(
        f"{'scenario':<38} {'changes':>6} {'moved':>7} {'fewest':>7} {'load':>6} "
        f"{'stuck':>8} {'conv50':>5} {'conv99':>5} {'wait50':>5} {'wait99':>6} "
        f"{'full':>6} {'bad':>4} {'took':>6}"
    )
    violations = 0
    for scenario in SCENARIOS:
        if args.quick and scenario.nodes > 100:
            continue
        started = time.monotonic()
        sim = Simulation(
            args.seed,
            scenario.partitions,
            scenario.nodes,
            scenario.churn,
            scenario.workload,
            scenario.policy,
            slots=scenario.slots,
        )
        figures = sim.run(scenario.seconds)
        violations += len(figures.violations)
        print(row(scenario, figures, time.monotonic() - started), flush=True)
        for problem in figures.violations[:3]:
            print(f"    violation: {problem}")
    print(
        "moved/fewest: home partitions moved per membership change, and the fewest any "
        "capacity-weighted assignment could move; stuck: partition-time owned by a node that "
        "cannot claim; conv: seconds until every live node's view held a change, per change "
        "(p50, p99); wait: seconds a job waited from arrival to start (p50, p99); full: share of "
        "the time jobs waited while every live slot was busy (the cluster short of slots: waits "
        "then come from capacity, not from the protocol)."
    )
    return 1 if violations else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
