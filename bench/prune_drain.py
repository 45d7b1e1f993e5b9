"""Does pruning slow the drain? The no-op drain on PostgreSQL with a node pruning a backlog of
old finished jobs, beside the same drain with pruning off, in one invocation.

Each run: a fresh database, N finished jobs preloaded a day old (`datastores.preload_finished`),
real `shoal node` processes loading this module as their app, a bulk submit of the drain's jobs,
and the drain rate from the jobs' own timestamps, first start to last finish
(`shoal_runs.drain_rate`). The runs differ only in the app's retention: succeeded jobs kept for
ever (no pruning), or an hour, so the whole preload is due and the nodes prune it in batches
while they drain. Prints both rates, their ratio and how many old rows went.

    PYTHONPATH=src:bench .venv/bin/python bench/prune_drain.py --preload 200000 --jobs 50000
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time
from pathlib import Path

from datastores import preload_finished
from processes import Workers, wait_for
from shoal_runs import drain_rate, fresh_shoal, node_argv, sections_ready

from shoal import App
from shoal.model import JobState
from shoal.store import open_store
from shoal.store.rules import Retention

BENCH_DIR = Path(__file__).resolve().parent
KEEP_ENV = "SHOAL_BENCH_KEEP_SUCCEEDED_S"  # how long the nodes' app keeps succeeded jobs

app = App(retention=Retention(succeeded_s=float(os.environ.get(KEEP_ENV, "inf"))))


@app.task(name="noop", retries=0)
def noop() -> None:
    return None


def run(preload: int, jobs: int, nodes: int, keep_s: float, log_dir: Path) -> tuple[float, int]:
    """One drain; returns (jobs/s, old rows pruned by the end of the drain)."""
    with fresh_shoal("postgres") as url:
        preload_finished(url, preload)
        store = open_store(url)
        app.use_store(store)
        workers = Workers(log_dir)
        env = dict(os.environ, **{KEEP_ENV: str(keep_s)})
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [env.get("PYTHONPATH"), str(BENCH_DIR)]))
        try:
            for index in range(nodes):
                name = f"prune-node-{index + 1}"
                workers.start(name, node_argv("prune_drain:app", url, name), env, BENCH_DIR)
            wait_for("nodes to own sections", lambda: sections_ready(store, nodes), 60, 0.1)
            since = store.now()
            noop.submit_many([() for _ in range(jobs)])
            rate = drain_rate(store, jobs, workers, since)
            left = store.read_cluster().job_counts[JobState.SUCCEEDED] - jobs
        finally:
            workers.stop()
            app.close()
    return rate, preload - left


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preload", type=int, default=200_000, help="old finished jobs")
    parser.add_argument("--jobs", type=int, default=50_000, help="no-op jobs per drain")
    parser.add_argument("--nodes", type=int, default=1)
    parser.add_argument(
        "--pruning-first", action="store_true", help="run the pruning drain first (order effects)"
    )
    args = parser.parse_args(argv)
    log_dir = Path(tempfile.mkdtemp(prefix="shoal-prune-bench-"))
    started = time.monotonic()
    if args.pruning_first:
        pruning, pruned = run(args.preload, args.jobs, args.nodes, 3600.0, log_dir)
        plain, _ = run(args.preload, args.jobs, args.nodes, math.inf, log_dir)
    else:
        plain, _ = run(args.preload, args.jobs, args.nodes, math.inf, log_dir)
        pruning, pruned = run(args.preload, args.jobs, args.nodes, 3600.0, log_dir)
    order = "pruning first" if args.pruning_first else "plain first"
    print(f"PostgreSQL, {args.nodes} node(s), {args.jobs} no-op jobs, {args.preload} old rows,")
    print(f"one run each, {order}")
    print(f"  drain without pruning: {plain:9.0f} jobs/s")
    print(f"  drain while pruning:   {pruning:9.0f} jobs/s  ({pruning / plain:.1%} of it)")
    print(f"  old rows pruned by the end of that drain: {pruned}")
    print(f"  ({time.monotonic() - started:.0f}s in all; node logs in {log_dir})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
