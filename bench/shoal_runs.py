"""Shoal-only benchmark runs: a fresh initialised datastore, `shoal node` processes loading a
module of bench/ as their app, and the drain rate from the jobs' own timestamps. For the scripts
that measure Shoal against itself (a change of setting, a table's size), not against peers:
those go through `harness.py`, one harness for every system.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from contextlib import contextmanager

from datastores import fresh_postgres, fresh_sqlite
from processes import BenchError, Workers, wait_for
from systems import SHOAL_BIN

from shoal.model import JobState, NodeState
from shoal.store import Store

SHOAL = str(SHOAL_BIN / "shoal")


@contextmanager
def fresh_shoal(datastore: str) -> Iterator[str]:
    """The URL of a new datastore ("sqlite" or "postgres") that `shoal init` has set up."""
    fresh = fresh_sqlite() if datastore == "sqlite" else fresh_postgres("shoal_bench")
    with fresh as url:
        done = subprocess.run(
            [SHOAL, "init", "--db", url], capture_output=True, timeout=120, check=False
        )
        if done.returncode != 0:
            raise BenchError(f"shoal init failed: {done.stderr.decode(errors='replace').strip()}")
        yield url


def sections_ready(store: Store, nodes: int) -> bool | None:
    """True once `nodes` nodes are waiting or working and every partition has an owner."""
    view = store.read_cluster()
    live = [n for n in view.nodes if n.state in (NodeState.WAITING, NodeState.WORKING)]
    return True if len(live) >= nodes and None not in view.owners else None


def drain_rate(store: Store, jobs: int, workers: Workers, since: float) -> float:
    """Wait until the drain's `jobs` jobs, submitted after `since` (datastore time) and the only
    unfinished ones there, are all final; check that each succeeded; jobs/s from the first start
    to the last finish, in the jobs' own timestamps. Finished jobs already there (a preload, or
    ones being pruned) do not count."""
    unfinished = (JobState.QUEUED, JobState.CLAIMED, JobState.RUNNING)

    def all_final() -> bool | None:
        workers.check_alive()
        counts = store.read_cluster().job_counts
        return None if any(counts.get(state, 0) for state in unfinished) else True

    wait_for(f"{jobs} jobs to finish", all_final, max(120.0, jobs / 100), 0.25)
    finished = store.list_finished(since, limit=jobs + 1)
    failed = [job for job in finished if job.state is not JobState.SUCCEEDED]
    if len(finished) != jobs or failed:
        raise BenchError(f"{len(finished)} of {jobs} jobs final, {len(failed)} not succeeded")
    first = min(job.started_at or job.finished_at or since for job in finished)
    last = max(job.finished_at or since for job in finished)
    return jobs / max(last - first, 1e-9)


def node_argv(app: str, url: str, name: str, concurrency: int | None = None) -> list[str]:
    """`shoal node` running `app` (module:attribute, the module in bench/) on `url`."""
    argv = [SHOAL, "node", "--app", app, "--db", url, "--name", name]
    return argv + ([] if concurrency is None else ["--concurrency", str(concurrency)])
