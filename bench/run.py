"""Shoal's benchmark (`make bench`): Shoal and six other job queues, measured one way.

Runs Shoal on SQLite and PostgreSQL with 1 and 2 nodes, and Dramatiq, Celery, RQ and arq (on
Redis) and PgQueuer and Procrastinate (on PostgreSQL) with two worker processes each, all with
the same task (it takes a number, notes its start and end, returns the number), through the
same harness (harness.py). Prints one table of medians, draws it as a PNG and keeps the raw
figures as JSON in bench/results/. See bench/README.md for what each figure means.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

from harness import Plan, run_once
from processes import BenchError, describe_failure, progress
from results import Row, format_table
from systems import PEERS, System, shoal
from venvs import ensure_venv, freeze

BENCH_DIR = Path(__file__).resolve().parent
RESULTS_DIR = BENCH_DIR / "results"


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=5_000, help="jobs in the bulk load")
    parser.add_argument("--runs", type=int, default=3, help="runs per configuration (medians)")
    parser.add_argument("--quick", action="store_true", help="1,000 jobs, one run: a smoke test")
    parser.add_argument("--only", help="comma-separated system names (e.g. shoal,celery)")
    parser.add_argument("--nodes", default="1,2", help="Shoal node counts, comma-separated")
    parser.add_argument("--backends", default="sqlite,postgres", help="Shoal datastores")
    parser.add_argument("--latency-jobs", type=int, default=300, help="jobs in the latency probe")
    parser.add_argument("--interval-ms", type=float, default=20.0, help="latency probe spacing")
    parser.add_argument("--singles", type=int, default=2_000, help="single submits, one thread")
    parser.add_argument(
        "--preload-finished",
        type=int,
        default=0,
        metavar="N",
        help="first fill each Shoal datastore with N finished jobs (e.g. 1000000)",
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.jobs, args.runs = 1_000, 1
        args.latency_jobs, args.singles = min(args.latency_jobs, 100), min(args.singles, 300)
    return args


def chosen_systems(args: argparse.Namespace) -> list[System]:
    systems = [
        shoal(backend, int(nodes))
        for backend in args.backends.split(",")
        for nodes in args.nodes.split(",")
    ]
    systems += PEERS
    if args.only:
        wanted = {name.strip().lower() for name in args.only.split(",")}
        unknown = wanted - {system.name.lower() for system in systems}
        if unknown:
            names = ", ".join(sorted({system.name.lower() for system in systems}))
            raise SystemExit(f"--only: no system named {', '.join(sorted(unknown))}; use {names}")
        systems = [system for system in systems if system.name.lower() in wanted]
    return systems


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    log_dir = Path(tempfile.mkdtemp(prefix="shoal-bench-logs-"))
    started = time.monotonic()
    plan = Plan(args.jobs, args.latency_jobs, args.interval_ms / 1000, args.singles)
    plan = Plan(**{**asdict(plan), "preload_finished": args.preload_finished})
    rows = [_measure(system, plan, args.runs, log_dir) for system in chosen_systems(args)]
    print()
    print(_heading(args, time.monotonic() - started, log_dir))
    print(format_table(rows))
    _save(args, rows)
    return 0 if all(row.runs for row in rows) else 1


def _measure(system: System, plan: Plan, runs: int, log_dir: Path) -> Row:
    row = Row(system.name, system.datastore, system.label, is_peer=system.venv is not None)
    if system.venv is not None:
        try:
            progress(f"{system.name}: preparing its virtualenv in bench/.venvs/")
            ensure_venv(system.venv)
        except BenchError as exc:
            row.errors.append(str(exc))
            return row
    for index in range(runs):
        progress(f"{row.label}: run {index + 1}/{runs}")
        try:
            row.runs.append(run_once(system, plan, log_dir))
        except Exception as exc:  # one failed run is reported, the benchmark goes on
            row.errors.append(describe_failure(exc))
            progress(f"  failed: {row.errors[-1]}")
    return row


def _heading(args: argparse.Namespace, elapsed_s: float, log_dir: Path) -> str:
    command = " ".join(["bench/run.py", *sys.argv[1:]])
    return (
        f"$ {command}\n"
        f"bulk load {args.jobs:,} jobs, median of {args.runs} run(s); latency: "
        f"{args.latency_jobs} jobs, one every {args.interval_ms:g} ms, to idle workers; "
        f"{args.singles:,} single submits from one thread, then {args.singles:,} from 8 at once.\n"
        f"{os.cpu_count()} cores, Python {platform.python_version()}; took {elapsed_s:.0f}s; "
        f"worker logs in {log_dir}\n"
    )


def _save(args: argparse.Namespace, rows: list[Row]) -> None:
    RESULTS_DIR.mkdir(exist_ok=True)
    stem = RESULTS_DIR / time.strftime("bench-%Y%m%d-%H%M%S")
    record = {
        "command": " ".join(["bench/run.py", *sys.argv[1:]]),
        "args": vars(args),
        "rows": [asdict(row) for row in rows],
        "packages": {s.venv: freeze(s.venv) for s in PEERS if s.venv in _made()},
    }
    json_path = stem.with_suffix(".json")
    json_path.write_text(json.dumps(record, indent=2))
    print(f"\nraw figures: {json_path}")
    print(_draw(json_path, stem.with_suffix(".png")))


def _made() -> set[str]:
    return {path.name for path in (BENCH_DIR / ".venvs").glob("*") if path.is_dir()}


def _draw(json_path: Path, png_path: Path) -> str:
    """Draw the table with bench/plot.py in its own virtualenv; a failure is said, not raised."""
    try:
        python = ensure_venv("plot") / "python"
        done = subprocess.run(
            [str(python), str(BENCH_DIR / "plot.py"), str(json_path), str(png_path)],
            capture_output=True,
            timeout=120,
            check=False,
        )
    except (BenchError, subprocess.TimeoutExpired, OSError) as exc:
        return f"chart not drawn: {exc}"
    if done.returncode != 0:
        return f"chart not drawn: {done.stderr.decode(errors='replace').strip()[-300:]}"
    return f"chart: {png_path}"


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
