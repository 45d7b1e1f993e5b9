"""Shoal's benchmark (`make bench`): throughput and latency, side by side with other job queues.

Runs Shoal on SQLite and PostgreSQL with 1, 2 and 4 nodes, and Dramatiq (Redis) and PgQueuer
(PostgreSQL) with two worker processes each, all with the same no-op job, and prints one table
of medians over several runs, each on a fresh datastore. See bench/README.md for what each
figure means and its caveats. Every wait is bounded: a stuck run is reported as failed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
import traceback
from dataclasses import asdict
from pathlib import Path

from peers import PEER_WORKERS, PEERS, Peer, ensure_venv, run_peer
from processes import BenchError
from results import Row, format_table
from shoal_side import Plan, run_shoal

from shoal.errors import ShoalError

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=20_000, help="no-op jobs per drain")
    parser.add_argument("--runs", type=int, default=3, help="runs per configuration (medians)")
    parser.add_argument("--quick", action="store_true", help="2,000 jobs, one run")
    parser.add_argument("--only", choices=["shoal", "peers"], help="run only Shoal or the peers")
    parser.add_argument("--nodes", default="1,2,4", help="Shoal node counts, comma-separated")
    parser.add_argument("--backends", default="sqlite,postgres", help="Shoal datastores")
    parser.add_argument(
        "--concurrency", type=int, default=4, help="worker threads per Shoal node (its default)"
    )
    parser.add_argument("--latency-jobs", type=int, default=300, help="jobs in the latency probe")
    parser.add_argument("--interval-ms", type=float, default=20.0, help="latency probe spacing")
    parser.add_argument(
        "--preload-finished",
        type=int,
        default=0,
        metavar="N",
        help="first fill each Shoal datastore with N finished jobs (e.g. 1000000)",
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.jobs, args.runs = 2_000, 1
        args.latency_jobs = min(args.latency_jobs, 100)
    return args


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    log_dir = Path(tempfile.mkdtemp(prefix="shoal-bench-logs-"))
    started = time.monotonic()
    rows: list[Row] = []
    peers: list[Row] = []
    if args.only != "peers":
        for backend in args.backends.split(","):
            for nodes in [int(n) for n in args.nodes.split(",")]:
                rows.append(_measure_shoal(backend, nodes, args, log_dir))
    if args.only != "shoal":
        peers = [_measure_peer(peer, args, log_dir) for peer in PEERS]
    print()
    print(_heading(args, time.monotonic() - started, log_dir))
    print(format_table(rows, peers))
    _save(args, rows, peers)
    return 0 if all(row.runs for row in [*rows, *peers]) else 1


def _plan(args: argparse.Namespace, nodes: int) -> Plan:
    return Plan(
        args.jobs,
        nodes,
        args.concurrency,
        args.latency_jobs,
        args.interval_ms / 1000,
        args.preload_finished,
    )


def _measure_shoal(backend: str, nodes: int, args: argparse.Namespace, log_dir: Path) -> Row:
    row = Row("Shoal", backend, f"{nodes} node{'s' if nodes > 1 else ''}")
    for index in range(args.runs):
        _progress(f"{row.label}: run {index + 1}/{args.runs}")
        try:
            row.runs.append(run_shoal(backend, _plan(args, nodes), log_dir))
        except Exception as exc:
            error = _describe(exc)
            # The PostgreSQL adapter is young: say plainly where a failure comes from.
            row.errors.append(
                f"PostgreSQL adapter failed: {error}" if backend == "postgres" else error
            )
            _progress(f"  failed: {row.errors[-1]}")
    return row


def _measure_peer(peer: Peer, args: argparse.Namespace, log_dir: Path) -> Row:
    row = Row(peer.name, peer.datastore, f"{PEER_WORKERS} procs")
    try:
        _progress(f"{peer.name}: preparing its virtualenv in bench/.venvs/")
        ensure_venv(peer)
    except BenchError as exc:
        row.errors.append(str(exc))
        return row
    for index in range(args.runs):
        _progress(f"{row.label}: run {index + 1}/{args.runs}")
        try:
            row.runs.append(run_peer(peer, _plan(args, PEER_WORKERS), log_dir))
        except Exception as exc:
            row.errors.append(_describe(exc))
            _progress(f"  failed: {row.errors[-1]}")
    return row


def _describe(exc: Exception) -> str:
    """One line for a failed run; unexpected errors keep their type and origin."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if isinstance(exc, (BenchError, ShoalError)):
        return text
    where = traceback.extract_tb(exc.__traceback__)[-1]
    return f"{type(exc).__name__}: {text} ({Path(where.filename).name}:{where.lineno})"


def _progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _heading(args: argparse.Namespace, elapsed_s: float, log_dir: Path) -> str:
    command = " ".join(["bench/run.py", *sys.argv[1:]])
    return (
        f"$ {command}\n"
        f"{args.jobs:,} no-op jobs per drain, median of {args.runs} run(s); latency: "
        f"{args.latency_jobs} jobs, one every {args.interval_ms:g} ms, to idle workers; "
        f"Shoal nodes run {args.concurrency} worker threads each.\n"
        f"{os.cpu_count()} cores, Python {platform.python_version()}; took {elapsed_s:.0f}s; "
        f"worker logs in {log_dir}\n"
    )


def _save(args: argparse.Namespace, rows: list[Row], peers: list[Row]) -> None:
    RESULTS_DIR.mkdir(exist_ok=True)
    path = RESULTS_DIR / time.strftime("bench-%Y%m%d-%H%M%S.json")
    record = {"args": vars(args), "rows": [asdict(row) for row in [*rows, *peers]]}
    path.write_text(json.dumps(record, indent=2))
    print(f"\nraw figures: {path}")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
