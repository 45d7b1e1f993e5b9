"""Draw one benchmark run (its JSON) as a PNG: the table, and one bar chart per figure.

Runs in bench/.venvs/plot (matplotlib, from requirements-plot.txt), started by run.py as
`python plot.py RESULTS.json OUT.png`. A system whose runs all failed keeps its place in every
chart, marked `failed`, so nothing is dropped from the picture.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display

import matplotlib.pyplot as plt  # after choosing the backend
from matplotlib.axes import Axes
from matplotlib.ticker import ScalarFormatter
from results import Row, Run, table_cells

CHARTS = (
    ("submit→start ms (bar p50, tick p99; lower is better)", "latency_p50_ms"),
    ("single submits/s, one thread", "singles_per_s"),
    ("drain jobs/s from the workers' spawn (cold)", "drain_cold_per_s"),
    ("drain jobs/s, first start to last end (steady)", "drain_steady_per_s"),
)


def load(path: Path) -> tuple[str, list[Row]]:
    record = json.loads(path.read_text())
    rows = []
    for raw in record["rows"]:
        runs = [Run(**run) for run in raw.pop("runs")]
        rows.append(Row(**raw, runs=runs))
    return record["command"], rows


def draw(command: str, rows: list[Row], out: Path) -> None:
    height = 2.0 + 0.35 * len(rows)
    figure = plt.figure(figsize=(15, 2 * height + 1.0), layout="constrained")
    grid = figure.add_gridspec(3, 2, height_ratios=[0.25 * len(rows) + 0.6, height, height])
    figure.suptitle(f"$ {command}", fontsize=10, family="monospace")
    _table(figure.add_subplot(grid[0, :]), rows)
    places = [grid[1, 0], grid[1, 1], grid[2, 0], grid[2, 1]]
    for place, (title, attr) in zip(places, CHARTS, strict=True):
        _chart(figure.add_subplot(place), rows, title, attr)
    figure.savefig(out, dpi=110)


def _chart(ax: Axes, rows: list[Row], title: str, attr: str) -> None:
    labels = [f"{row.system} {row.datastore} {row.workers}" for row in rows]
    values = [row.median(attr) for row in rows]
    positions = list(range(len(rows)))
    ax.barh(positions, [v or 0 for v in values], color=_colours(rows))
    if attr == "latency_p50_ms":
        p99 = [row.median("latency_p99_ms") for row in rows]
        ax.scatter([v or 0 for v in p99], positions, marker="|", s=200, color="black")
        ax.set_xscale("log")  # peers span milliseconds to half a second
        ax.xaxis.set_major_formatter(ScalarFormatter())
    for y, value in zip(positions, values, strict=True):
        text = "failed" if value is None else f"{value:,.1f}" if value < 100 else f"{value:,.0f}"
        ax.text(value or ax.get_xlim()[0], y, f" {text}", va="center", fontsize=8)
    ax.set_yticks(positions, labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_title(title, fontsize=10)


def _table(ax: Axes, rows: list[Row]) -> None:
    cells = table_cells(rows)
    ax.axis("off")
    table = ax.table(cellText=[list(c) for c in cells[1:]], colLabels=list(cells[0]), loc="center")
    table.auto_set_font_size(False)
    table.set_fontsize(8)
    table.auto_set_column_width(list(range(len(cells[0]))))


def _colours(rows: list[Row]) -> list[str]:
    return ["tab:blue" if not row.is_peer else "tab:gray" for row in rows]


if __name__ == "__main__":
    command, loaded = load(Path(sys.argv[1]))
    draw(command, loaded, Path(sys.argv[2]))
