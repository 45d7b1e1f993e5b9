"""Does a backlog that no node can take slow everything else? A lone job's submit→start on an
idle node, with N queued jobs of a task no node registers (a rolling deploy's new task, or one
whose code is gone) beside the same probe with none, on SQLite and PostgreSQL, in one invocation.
With `--kind delayed` the backlog is of the probed task itself but due in a day instead (jobs
submitted with a delay, or retries waiting out a long backoff).

Each run: a fresh datastore, N queued jobs of task "gone" (submitted in bulk), one `shoal node`
loading this module as its app, then `--probes` jobs of task "stamp", one every 20 ms, each
returning the monotonic clock when its body started; the delay is that minus the clock read just
before its submit (the same clocks as `bench/run.py`). Prints the p50 and p99 of each run.

    PYTHONPATH=src:bench .venv/bin/python bench/untaken_backlog.py --backlog 80000
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

from processes import Workers, wait_for
from shoal_runs import fresh_shoal, node_argv, sections_ready

from shoal import App
from shoal.model import NewJob
from shoal.store import open_store

BENCH_DIR = Path(__file__).resolve().parent

app = App()


@app.task(name="stamp", retries=0)
def stamp() -> float:
    return time.monotonic()


def run(datastore: str, backlog: int, kind: str, probes: int, log_dir: Path) -> list[float]:
    """One run; the probes' submit→start delays in seconds, sorted."""
    waiting = (
        NewJob("gone", "[]", "{}")
        if kind == "task"
        else NewJob("stamp", "[]", "{}", delay_s=86_400)
    )
    with fresh_shoal(datastore) as url:
        store = open_store(url)
        app.use_store(store)
        for first in range(0, backlog, 10_000):
            store.submit_jobs([waiting] * min(10_000, backlog - first))
        workers = Workers(log_dir)
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [env.get("PYTHONPATH"), str(BENCH_DIR)]))
        try:
            workers.start("node", node_argv("untaken_backlog:app", url, "node"), env, BENCH_DIR)
            wait_for("the node to own the partitions", lambda: sections_ready(store, 1), 60, 0.1)
            for _ in range(10):  # warm up: connections, imports, the first claims
                stamp.submit().wait(30)
            handles = []
            for _ in range(probes):
                before = time.monotonic()
                handles.append((before, stamp.submit()))
                time.sleep(0.02)
            return sorted(float(h.wait(60)) - before for before, h in handles)
        finally:
            workers.stop()
            app.close()


def percentile(values: list[float], q: float) -> float:
    return values[min(len(values) - 1, int(q * len(values)))]


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backlog", type=int, default=80_000, help="queued jobs no node takes")
    parser.add_argument("--probes", type=int, default=200, help="lone jobs timed per run")
    parser.add_argument("--datastores", default="sqlite,postgres")
    parser.add_argument(
        "--kind",
        choices=["task", "delayed"],
        default="task",
        help="the backlog: of a task no node registers, or of the probed task due in a day",
    )
    args = parser.parse_args(argv)
    log_dir = Path(tempfile.mkdtemp(prefix="shoal-untaken-bench-"))
    started = time.monotonic()
    print(f"{args.probes} lone jobs, one every 20 ms, to an idle node of 4 threads")
    print(f"{'datastore':10} {args.kind + ' backlog':>16} {'p50 ms':>8} {'p99 ms':>8}")
    for datastore in args.datastores.split(","):
        for backlog in (0, args.backlog):
            delays = run(datastore, backlog, args.kind, args.probes, log_dir)
            p50, p99 = percentile(delays, 0.5) * 1e3, percentile(delays, 0.99) * 1e3
            print(f"{datastore:10} {backlog:>16,} {p50:8.1f} {p99:8.1f}")
    print(f"({time.monotonic() - started:.0f}s in all; node logs in {log_dir})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
