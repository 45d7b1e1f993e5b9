"""How fast the observer answers over a big table: every page and API endpoint, medians.

Creates a fresh PostgreSQL database (or a SQLite file), fills it with finished jobs through plain
SQL (`datastores.preload_finished`), queues more through the store, serves the observer app with
uvicorn on a free loopback port, and times each route over one kept-alive HTTP connection, as a
browser or a Prometheus scraper meets it. Prints one line per route. A script that prints
numbers, not a test.
"""

from __future__ import annotations

import argparse
import http.client
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import uvicorn
from datastores import fresh_postgres, fresh_sqlite, preload_finished
from fastapi import FastAPI

from shoal.model import NewJob, NodeState
from shoal.observer.server import create_app
from shoal.store import open_store

ROUTES = [
    "/api/overview", "/api/partitions", "/api/timeline", "/api/jobs", "/api/jobs?state=running",
    "/api/jobs?state=failed", "/api/jobs?task=noop", "/metrics", "/", "/jobs", "/timeline",
    "/nodes",
]  # fmt: skip


def measure(url: str, finished: int, queued: int, repeats: int) -> None:
    store = open_store(url)
    preload_finished(url, finished)
    store.submit_jobs([NewJob("noop", "[]", "{}") for _ in range(queued)])
    node = store.register_node("probe", "bench", 1, 4, ["noop"], 600.0)
    store.set_node_state(node.id, NodeState.INITIALIZING, NodeState.WAITING)
    store.claim_jobs(node.id, 100)
    with served(create_app(store, None)) as port:
        client = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        print(
            f"{finished:,} finished + {queued:,} queued jobs, {url.split(':')[0]}, "
            f"medians of {repeats}, over HTTP to uvicorn"
        )
        for route in ["/livez", *ROUTES, f"/api/jobs/{finished // 2}"]:
            times = []
            for _ in range(repeats):
                started = time.perf_counter()
                client.request("GET", route)
                answer = client.getresponse()
                answer.read()
                times.append((time.perf_counter() - started) * 1000)
                if answer.status != 200:
                    raise SystemExit(f"{route}: HTTP {answer.status}")
            print(f"  {route:28s} {statistics.median(times):7.1f} ms")
        client.close()
    store.close()


@contextmanager
def served(app: FastAPI) -> Iterator[int]:
    """Serve `app` with uvicorn in a thread on a free loopback port; yield the port."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise SystemExit("the observer did not start")
        time.sleep(0.05)
    try:
        yield port
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=["postgres", "sqlite"], default="postgres")
    parser.add_argument("--finished", type=int, default=1_000_000)
    parser.add_argument("--queued", type=int, default=50_000)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    if args.backend == "sqlite":
        with fresh_sqlite() as url:
            measure(url, args.finished, args.queued, args.repeats)
        return
    with fresh_postgres("shoal_obs_bench") as url:
        shoal = str(Path(sys.executable).parent / "shoal")
        subprocess.run([shoal, "init", "--db", url], check=True, capture_output=True)
        measure(url, args.finished, args.queued, args.repeats)


if __name__ == "__main__":
    main()
