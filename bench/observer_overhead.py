"""How much a running observer with open pages slows the cluster: drain rate with and without.

    .venv/bin/python bench/observer_overhead.py [--jobs 10000] [--pairs 3] [--nodes 2] [--pages 3]

Each pair drains the same number of no-op jobs twice on fresh SQLite datastores, once with no
observer and once with `shoal observe` running as its own process while `--pages` clients hold
the live event stream open (as open browser tabs do), one scrapes /metrics every second and one
reloads the timeline every 5 s. The order alternates between pairs, so a machine that warms up
or slows down over the run does not favour either side. Prints the median drain rates and the
slowdown. Every wait is bounded.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import noop_app
from datastores import fresh_sqlite
from processes import BenchError, Workers, wait_for
from shoal_runs import SHOAL, drain_rate, node_argv, sections_ready

from shoal.store import open_store

BENCH_DIR = Path(__file__).resolve().parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def watched(url: str, workers: Workers, pages: int) -> Iterator[dict[str, int]]:
    """`shoal observe` on `url` with `pages` open event streams, a scraper and a timeline."""
    port = free_port()
    workers.start(
        "observer",
        [SHOAL, "observe", "--db", url, "--port", str(port)],
        dict(os.environ),
        BENCH_DIR,
    )
    base = f"http://127.0.0.1:{port}"

    def up() -> bool | None:
        try:
            return httpx.get(f"{base}/livez", timeout=1).status_code == 200 or None
        except httpx.HTTPError:
            return None

    wait_for("the observer to answer", up, timeout_s=30, every_s=0.1)
    stop = threading.Event()
    seen = {"events": 0, "scrapes": 0}

    def stream() -> None:
        with httpx.stream("GET", f"{base}/api/events", timeout=30) as response:
            for line in response.iter_lines():
                if line.startswith("event: overview"):
                    seen["events"] += 1
                if stop.is_set():
                    return

    def poll(path: str, every_s: float) -> None:
        while not stop.wait(every_s):
            httpx.get(f"{base}{path}", timeout=30).raise_for_status()
            seen["scrapes"] += 1

    threads = [threading.Thread(target=stream, daemon=True) for _ in range(pages)]
    threads += [
        threading.Thread(target=poll, args=("/metrics", 1.0), daemon=True),
        threading.Thread(target=poll, args=("/api/timeline?range=15m", 5.0), daemon=True),
    ]
    for thread in threads:
        thread.start()
    try:
        yield seen
    finally:
        stop.set()


def one_drain(jobs: int, nodes: int, pages: int | None, log_dir: Path) -> float:
    """Jobs/s for one drain; with an observer and `pages` open streams unless `pages` is None."""
    with fresh_sqlite() as url:
        store = open_store(url)
        store.initialize()
        noop_app.app.use_store(store)
        workers = Workers(log_dir)
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [env.get("PYTHONPATH"), str(BENCH_DIR)]))
        try:
            for index in range(nodes):
                name = f"bench-node-{index + 1}"
                workers.start(name, node_argv("noop_app:app", url, name, 4), env, BENCH_DIR)
            wait_for("sections", lambda: sections_ready(store, nodes), 60, 0.1)
            if pages is None:
                since = store.now()
                noop_app.noop.submit_many([() for _ in range(jobs)])
                return drain_rate(store, jobs, workers, since)
            with watched(url, workers, pages) as seen:
                wait_for("the first events", lambda: seen["events"] >= pages or None, 30, 0.1)
                since = store.now()
                noop_app.noop.submit_many([() for _ in range(jobs)])
                rate = drain_rate(store, jobs, workers, since)
                if seen["scrapes"] == 0 and rate < jobs:  # the drain took over a second
                    raise BenchError("the observer answered no scrape during the drain")
                return rate
        finally:
            workers.stop()
            noop_app.app.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--nodes", type=int, default=2)
    parser.add_argument("--pages", type=int, default=3)
    args = parser.parse_args()
    log_dir = BENCH_DIR / "results"
    log_dir.mkdir(exist_ok=True)
    without: list[float] = []
    with_observer: list[float] = []
    for pair in range(args.pairs):
        order = [None, args.pages] if pair % 2 == 0 else [args.pages, None]
        for pages in order:
            rate = one_drain(args.jobs, args.nodes, pages, log_dir)
            (without if pages is None else with_observer).append(rate)
            label = "no observer" if pages is None else f"observer + {pages} pages"
            print(f"pair {pair + 1}: {label:>20}: {rate:8.0f} jobs/s", flush=True)
    base, watched_rate = statistics.median(without), statistics.median(with_observer)
    print(
        f"\nmedian drain: {args.nodes} nodes, {args.jobs} no-op jobs, SQLite, "
        f"{os.cpu_count()} cores"
    )
    print(f"  without observer: {base:8.0f} jobs/s")
    print(f"  with observer:    {watched_rate:8.0f} jobs/s")
    print(f"  slowdown:         {100 * (1 - watched_rate / base):8.1f} %")


if __name__ == "__main__":
    main()
