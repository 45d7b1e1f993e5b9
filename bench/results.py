"""What one benchmark run measured, how runs fold into medians, and the printed table.

A `Run` is one fresh datastore and one set of workers. A `Row` holds the runs of one system in
one configuration; its figures are medians, and a run that failed is counted and its first
error shown, never averaged in. A system that could not be installed is a row with no runs.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Run:
    bulk_per_s: float
    singles_per_s: float
    drain_cold_per_s: float
    drain_steady_per_s: float
    latency_p50_ms: float
    latency_p99_ms: float
    results_checked: int  # stored results read back and compared; 0: the system stores none
    lanes_per_s: float = 0.0  # single submits from 8 threads at once (0: not measured)


@dataclass
class Row:
    system: str  # "Shoal", "Celery", ...
    datastore: str  # "sqlite", "postgres", "redis"
    workers: str  # "2 nodes", "2 procs"
    is_peer: bool
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


# (heading, Run attribute, decimals)
FIGURES = (
    ("submit→start p50 ms", "latency_p50_ms", 1),
    ("p99 ms", "latency_p99_ms", 1),
    ("single submits/s", "singles_per_s", 0),
    ("8 threads/s", "lanes_per_s", 0),
    ("drain cold/s", "drain_cold_per_s", 0),
    ("drain steady/s", "drain_steady_per_s", 0),
)
HEADERS = ("system", "datastore", "workers", "ok", *(h for h, _, _ in FIGURES), "÷ best peer")


def best_peer(rows: Sequence[Row]) -> Row | None:
    """The peer with the highest median steady drain, if any peer completed a run."""
    done = [row for row in rows if row.is_peer and row.runs]
    return max(done, key=lambda row: row.median("drain_steady_per_s") or 0.0, default=None)


def ratio(row: Row, best: Row | None) -> float | None:
    """The row's median steady drain over the best peer's."""
    mine = row.median("drain_steady_per_s")
    theirs = best.median("drain_steady_per_s") if best else None
    return mine / theirs if mine is not None and theirs else None


def table_cells(rows: Sequence[Row]) -> list[tuple[str, ...]]:
    """The table as text cells, headings first; a row without runs says `failed`."""
    best = best_peer(rows)
    lines: list[tuple[str, ...]] = [HEADERS]
    for row in rows:
        ok = f"{len(row.runs)}/{len(row.runs) + len(row.errors)}"
        cells = [row.system, row.datastore, row.workers, ok if row.runs else "failed"]
        cells += [_number(row.median(attr), digits) for _, attr, digits in FIGURES]
        share = ratio(row, best)
        cells.append("-" if share is None else f"{share:.2f}x")
        lines.append(tuple(cells))
    return lines


def format_table(rows: Sequence[Row]) -> str:
    lines = table_cells(rows)
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
    errors = [f"  {row.label}: {error}" for row in rows for error in row.errors[:1]]
    if errors:
        text += ["", "failed runs (first error of each configuration):", *errors]
    unchecked = [row.system for row in rows if row.runs and not row.runs[0].results_checked]
    if unchecked:
        text += [
            "",
            f"no stored results to read back (the system keeps none): {', '.join(unchecked)}",
        ]
    return "\n".join(text)


def _number(value: float | None, digits: int = 0) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"
