"""Shoal's runs: real `shoal node` processes on a fresh datastore, measured through the store port.

One run: start the nodes and wait until each owns a section, bulk-submit the jobs in one
transaction (submit rate), wait until all are final and check that every one succeeded, take the
drain rate from the jobs' own timestamps (first start to last finish, datastore time), then
submit one job every interval to the idle nodes and take started_at - created_at per job.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import noop_app
from datastores import fresh_postgres, fresh_sqlite, preload_finished
from processes import BenchError, Workers, wait_for
from results import Run, percentile

from shoal.model import JobState
from shoal.store import Store, open_store

BENCH_DIR = Path(__file__).resolve().parent
SHOAL = str(Path(sys.executable).parent / "shoal")


@dataclass(frozen=True)
class Plan:
    jobs: int
    nodes: int
    concurrency: int
    latency_jobs: int
    latency_interval_s: float
    preload_finished: int = 0


def run_shoal(backend: str, plan: Plan, log_dir: Path) -> Run:
    """One run on a fresh datastore of `backend` ("sqlite" or "postgres")."""
    with _fresh(backend) as url:
        store = open_store(url)
        if plan.preload_finished:
            preload_finished(url, plan.preload_finished)
        noop_app.app.use_store(store)
        workers = Workers(log_dir)
        try:
            _start_nodes(workers, url, plan)
            wait_for("nodes to own sections", lambda: _sections_ready(store, plan.nodes), 60, 0.1)
            since = store.now()
            submit_per_s = _bulk_submit(plan.jobs)
            drain_per_s = _drain(store, plan.jobs, workers, since)
            delays_s = _light_load(store, plan)
        finally:
            workers.stop()
            noop_app.app.close()
    return Run(
        submit_per_s,
        drain_per_s,
        percentile(delays_s, 0.50) * 1000,
        percentile(delays_s, 0.99) * 1000,
    )


@contextmanager
def _fresh(backend: str) -> Iterator[str]:
    if backend == "sqlite":
        with fresh_sqlite() as url:
            yield url
        return
    with fresh_postgres("shoal_bench") as url:
        _shoal_init(url)
        yield url


def _shoal_init(url: str) -> None:
    done = subprocess.run(
        [SHOAL, "init", "--db", url], capture_output=True, timeout=120, check=False
    )
    if done.returncode != 0:
        raise BenchError(f"shoal init failed: {done.stderr.decode(errors='replace').strip()}")


def _start_nodes(workers: Workers, url: str, plan: Plan) -> None:
    env = dict(os.environ, PYTHONPATH=str(BENCH_DIR))
    for index in range(plan.nodes):
        name = f"bench-node-{index + 1}"
        argv = [SHOAL, "node", "--app", "noop_app:app", "--db", url]
        argv += ["--concurrency", str(plan.concurrency), "--name", name]
        workers.start(name, argv, env, BENCH_DIR)


def _sections_ready(store: Store, nodes: int) -> bool | None:
    """True once `nodes` nodes are live and every partition has an owner among them."""
    view = store.read_cluster()
    live = {n.id for n in view.nodes if n.is_live and n.section}
    if len(live) == nodes and all(owner in live for owner in view.owners):
        return True
    return None


def _bulk_submit(jobs: int) -> float:
    started = time.perf_counter()
    noop_app.noop.submit_many([() for _ in range(jobs)])
    return jobs / (time.perf_counter() - started)


def _drain(store: Store, jobs: int, workers: Workers, since: float) -> float:
    """Wait until every job is final; verify each succeeded; jobs/s from first start to last end.

    Only jobs submitted after `since` count: a preloaded datastore already holds finished ones.
    """

    def all_final() -> bool | None:
        workers.check_alive()
        counts = store.read_cluster().job_counts
        pending = counts.get(JobState.QUEUED, 0) + counts.get(JobState.RUNNING, 0)
        return True if pending == 0 else None

    wait_for(f"{jobs} jobs to finish", all_final, timeout_s=max(60.0, jobs / 100), every_s=0.25)
    finished = store.list_finished(since, limit=jobs + 1)
    failed = [job for job in finished if job.state is not JobState.SUCCEEDED]
    if len(finished) != jobs or failed:
        raise BenchError(f"{len(finished)} of {jobs} jobs final, {len(failed)} not succeeded")
    first = min(job.started_at or job.finished_at or 0.0 for job in finished)
    last = max(job.finished_at or 0.0 for job in finished)
    return jobs / max(last - first, 1e-6)


def _light_load(store: Store, plan: Plan) -> list[float]:
    """Submit one job every interval to idle nodes; each job's started_at - created_at."""
    since = store.now()
    next_at = time.monotonic()
    for _ in range(plan.latency_jobs):
        noop_app.noop.submit()
        next_at += plan.latency_interval_s
        time.sleep(max(0.0, next_at - time.monotonic()))

    def all_done() -> list[float] | None:
        jobs = store.list_finished(since, limit=plan.latency_jobs + 1)
        if len(jobs) < plan.latency_jobs:
            return None
        if any(job.state is not JobState.SUCCEEDED for job in jobs):
            raise BenchError("a light-load job did not succeed")
        return [(job.started_at or 0.0) - job.created_at for job in jobs]

    return wait_for("light-load jobs to finish", all_done, timeout_s=30, every_s=0.1)
