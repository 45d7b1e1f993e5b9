"""What one benchmark run measured, how runs fold into medians, and the printed table.

A `Run` is one fresh datastore, one set of workers: a bulk submit, a drain of no-op jobs, and a
light-load latency probe. A `Row` is the medians of several runs of one configuration; a run
that failed is counted and its first error shown, never averaged in.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Run:
    submit_per_s: float
    drain_per_s: float
    latency_p50_ms: float
    latency_p99_ms: float


@dataclass
class Row:
    system: str  # "Shoal", "Dramatiq", "PgQueuer"
    datastore: str  # "sqlite", "postgres", "redis"
    workers: str  # "2 nodes", "2 procs"
    runs: list[Run] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def label(self) -> str:
        return f"{self.system} {self.datastore} {self.workers}"

    def median(self, metric: str) -> float | None:
        values = [getattr(run, metric) for run in self.runs]
        return statistics.median(values) if values else None


def percentile(values: Sequence[float], fraction: float) -> float:
    """The nearest-rank percentile (fraction in 0..1) of a non-empty sequence."""
    ordered = sorted(values)
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[rank - 1]


HEADERS = ("system", "datastore", "workers", "ok", "submit/s", "drain/s", "p50 ms", "p99 ms")


def format_table(rows: Sequence[Row], peers: Sequence[Row]) -> str:
    """The table: medians per row, then each Shoal row's drain rate over each peer's."""
    ratio_headers = tuple(f"drain / {peer.system}" for peer in peers)
    lines = [(*HEADERS, *ratio_headers)]
    for row in [*rows, *peers]:
        ok = f"{len(row.runs)}/{len(row.runs) + len(row.errors)}"
        cells = [row.system, row.datastore, row.workers, ok]
        cells += [
            _number(row.median("submit_per_s")),
            _number(row.median("drain_per_s")),
            _number(row.median("latency_p50_ms"), 1),
            _number(row.median("latency_p99_ms"), 1),
        ]
        for peer in peers:
            cells.append(_ratio(row, peer) if row.system == "Shoal" else "")
        lines.append(tuple(cells))
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]))]
    # Names are left-aligned, figures right-aligned.
    text = [
        "  ".join(
            cell.ljust(width) if i < 3 else cell.rjust(width)
            for i, (cell, width) in enumerate(zip(line, widths, strict=True))
        )
        for line in lines
    ]
    text.insert(1, "  ".join("-" * w for w in widths))
    errors = [f"  {row.label}: {error}" for row in [*rows, *peers] for error in row.errors[:1]]
    if errors:
        text += ["", "failed runs (first error of each configuration):", *errors]
    return "\n".join(text)


def _number(value: float | None, digits: int = 0) -> str:
    if value is None:
        return "-"
    return f"{value:,.{digits}f}"


def _ratio(row: Row, peer: Row) -> str:
    mine, theirs = row.median("drain_per_s"), peer.median("drain_per_s")
    if mine is None or not theirs:
        return "-"
    return f"{mine / theirs:.2f}x"
