"""One benchmark run of one system, measured the same way for every system.

On a fresh datastore: bulk-load the jobs with no worker running; spawn the workers and time the
drain from the spawn (cold) and from the first task start to the last task end (steady); then,
to the now idle workers, submit one job every interval (submit→start delays) and finally as
many single submits from one thread as it manages. Every submit time is read by the submitting
process just before its submit call, every start and end by the task body (queues/stamps.py),
on the host's shared monotonic clock. Every wait is bounded; a stuck run raises BenchError.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from datastores import fresh_postgres, fresh_redis, fresh_sqlite, preload_finished
from processes import BenchError, Workers, run_json, wait_for
from queues.stamps import RECORD, read_stamps
from results import Run, percentile
from systems import SHOAL_BIN, System
from venvs import venv_bin

BENCH_DIR = Path(__file__).resolve().parent
# Paced jobs submitted before the timed ones and left out: the submitting process's first calls
# open its connections, which a long-lived client pays once, not per job.
WARMUP = 5
LANES = 8  # threads (or coroutines) submitting single jobs at once in the last phase
QUEUES_DIR = BENCH_DIR / "queues"


@dataclass(frozen=True)
class Plan:
    jobs: int  # the bulk load
    latency_jobs: int
    interval_s: float
    singles: int
    preload_finished: int = 0  # Shoal only: finished jobs already in the datastore


def run_once(system: System, plan: Plan, log_dir: Path) -> Run:
    with _fresh(system, plan) as url:
        stamps_dir = Path(tempfile.mkdtemp(prefix="stamps-", dir=log_dir))
        bin_dir = SHOAL_BIN if system.venv is None else venv_bin(system.venv)
        env = _env(system, url, stamps_dir)
        adapter = _Adapter(bin_dir / "python", system.adapter, env)
        adapter.call("prepare")
        bulk = adapter.call("bulk", 0, plan.jobs, timeout_s=_limit_s(plan.jobs))
        workers = Workers(log_dir)
        try:
            spawned = time.monotonic()  # the clock stamps.clock() reads
            for index, argv in enumerate(system.worker_argvs(bin_dir, url, system.workers)):
                workers.start(f"{system.adapter}-{index + 1}", argv, env, QUEUES_DIR)
            drained = _wait_stamps(stamps_dir, range(plan.jobs), workers)
            first, last = plan.jobs, plan.jobs + WARMUP + plan.latency_jobs
            paced_s = (WARMUP + plan.latency_jobs) * plan.interval_s + 120  # + result reads
            paced = adapter.call(
                "paced", first, WARMUP + plan.latency_jobs, plan.interval_s, timeout_s=paced_s
            )
            started = _wait_stamps(stamps_dir, range(first, last), workers)
            singles = adapter.call("singles", last, plan.singles, timeout_s=_limit_s(plan.singles))
            _wait_stamps(stamps_dir, range(last, last + plan.singles), workers)
            first = last + plan.singles
            lanes = adapter.call(
                "lanes", first, plan.singles, LANES, timeout_s=_limit_s(plan.singles)
            )
            _wait_stamps(stamps_dir, range(first, first + plan.singles), workers)
        finally:
            workers.stop()
    run = _as_run(plan, spawned, bulk, drained, paced, started, singles)
    return dataclasses.replace(run, lanes_per_s=plan.singles / max(lanes["seconds"], 1e-9))


def _as_run(
    plan: Plan,
    spawned: float,
    bulk: dict[str, Any],
    drained: dict[int, tuple[float, float]],
    paced: dict[str, Any],
    started: dict[int, tuple[float, float]],
    singles: dict[str, Any],
) -> Run:
    last_end = max(end for _, end in drained.values())
    first_start = min(start for start, _ in drained.values())
    submitted = paced["submitted"]
    delays = [started[plan.jobs + k][0] - at for k, at in enumerate(submitted)][WARMUP:]
    return Run(
        bulk_per_s=plan.jobs / max(bulk["seconds"], 1e-9),
        singles_per_s=plan.singles / max(singles["seconds"], 1e-9),
        drain_cold_per_s=plan.jobs / max(last_end - spawned, 1e-9),
        drain_steady_per_s=plan.jobs / max(last_end - first_start, 1e-9),
        latency_p50_ms=percentile(delays, 0.50) * 1000,
        latency_p99_ms=percentile(delays, 0.99) * 1000,
        results_checked=int(paced["results_checked"]),
    )


def _limit_s(jobs: int) -> float:
    """How long a phase of `jobs` jobs may take before the run counts as stuck: 10 jobs/s
    (RQ forks a process per job, and the machine may be busy)."""
    return max(60.0, jobs / 10)


@contextmanager
def _fresh(system: System, plan: Plan) -> Iterator[str]:
    if system.datastore == "redis":
        with fresh_redis() as url:
            yield url
    elif system.datastore == "sqlite":
        with fresh_sqlite() as url:
            _preload(url, plan)
            yield url
    else:
        with fresh_postgres(f"{system.adapter}_bench") as url:
            if system.venv is None:
                _shoal_init(url)
                _preload(url, plan)
            yield url


def _preload(url: str, plan: Plan) -> None:
    if plan.preload_finished:
        if url.startswith("sqlite"):
            _shoal_init(url)  # the schema must exist before rows are written into it
        preload_finished(url, plan.preload_finished, task="echo")


def _shoal_init(url: str) -> None:
    argv = [str(SHOAL_BIN / "shoal"), "init", "--db", url]
    done = subprocess.run(argv, capture_output=True, timeout=120, check=False)
    if done.returncode != 0:
        raise BenchError(f"shoal init failed: {done.stderr.decode(errors='replace').strip()}")


def _env(system: System, url: str, stamps_dir: Path) -> dict[str, str]:
    paths = [str(QUEUES_DIR)]
    if system.venv is None and os.environ.get("PYTHONPATH"):
        paths.append(os.environ["PYTHONPATH"])  # a work tree's Shoal ahead of the installed one
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return dict(
        env, PYTHONPATH=os.pathsep.join(paths), BENCH_URL=url, BENCH_STAMPS_DIR=str(stamps_dir)
    )


@dataclass(frozen=True)
class _Adapter:
    python: Path
    module: str
    env: dict[str, str]

    def call(self, *args: object, timeout_s: float = 120.0) -> dict[str, Any]:
        argv = [str(self.python), f"{self.module}.py", *map(str, args)]
        return dict(run_json(argv, self.env, QUEUES_DIR, timeout_s))


def _wait_stamps(folder: Path, indices: range, workers: Workers) -> dict[int, tuple[float, float]]:
    """Wait until every job in `indices` has recorded its start and end; return those records.

    Polls the files' total size, which costs the busy workers nothing, and parses them only
    once enough records may be there.
    """

    def complete() -> dict[int, tuple[float, float]] | None:
        workers.check_alive()
        size = sum(path.stat().st_size for path in folder.glob("*.stamps"))
        if size // RECORD.size < indices.stop:
            return None
        found = read_stamps(folder)
        if any(index not in found for index in indices):
            return None
        return {index: found[index] for index in indices}

    return wait_for(f"{len(indices)} jobs to run", complete, _limit_s(len(indices)), 0.05)
