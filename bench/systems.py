"""The systems the benchmark runs, each in its idiomatic setup, and how to start its workers.

A `System` names its datastore, the virtualenv its adapter runs in (None: Shoal's own Python),
its adapter script in bench/queues/ and the worker command lines for `workers` processes. Every
peer gets the same two worker processes, each with its own default concurrency; Shoal runs one
or two nodes with its default four worker threads each.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

SHOAL_BIN = Path(sys.executable).parent
PEER_PROCESSES = 2  # worker processes per peer
SHOAL_THREADS = 4  # worker threads per Shoal node: `shoal node`'s default

Argvs = Callable[[Path, str, int], list[list[str]]]  # (bin folder, datastore URL, count)


@dataclass(frozen=True)
class System:
    name: str
    datastore: str  # "sqlite", "postgres" or "redis"
    venv: str | None  # section of requirements-peers.txt; None runs in Shoal's environment
    adapter: str  # module in bench/queues/
    workers: int  # nodes for Shoal, processes for peers
    worker_argvs: Argvs

    @property
    def label(self) -> str:
        unit = "node" if self.venv is None else "proc"
        return f"{self.workers} {unit}{'s' if self.workers > 1 else ''}"


def _shoal(bin_dir: Path, url: str, count: int) -> list[list[str]]:
    node = [str(bin_dir / "shoal"), "node", "--app", "q_shoal:app", "--db", url]
    return [
        [*node, "--concurrency", str(SHOAL_THREADS), "--name", f"bench-node-{index + 1}"]
        for index in range(count)
    ]


def _dramatiq(bin_dir: Path, url: str, count: int) -> list[list[str]]:
    return [[str(bin_dir / "dramatiq"), "q_dramatiq", "--processes", str(count), "--threads", "8"]]


def _celery(bin_dir: Path, url: str, count: int) -> list[list[str]]:
    celery = str(bin_dir / "celery")
    return [[celery, "-A", "q_celery", "worker", "--concurrency", str(count), "-l", "WARNING"]]


def _each(*argv: str) -> Argvs:
    """`count` copies of one command line, its first word a program in the virtualenv."""

    def argvs(bin_dir: Path, url: str, count: int) -> list[list[str]]:
        return [[str(bin_dir / argv[0]), *(a.replace("{url}", url) for a in argv[1:])]] * count

    return argvs


def shoal(datastore: str, nodes: int) -> System:
    return System("Shoal", datastore, None, "q_shoal", nodes, _shoal)


PEERS = (
    System("Dramatiq", "redis", "dramatiq", "q_dramatiq", PEER_PROCESSES, _dramatiq),
    System("Celery", "redis", "celery", "q_celery", PEER_PROCESSES, _celery),
    System("RQ", "redis", "rq", "q_rq", PEER_PROCESSES, _each("rq", "worker", "--url", "{url}")),
    System("arq", "redis", "arq", "q_arq", PEER_PROCESSES, _each("arq", "q_arq.WorkerSettings")),
    System(
        "PgQueuer",
        "postgres",
        "pgqueuer",
        "q_pgqueuer",
        PEER_PROCESSES,
        _each("python", "q_pgqueuer.py", "worker"),
    ),
    System(
        "Procrastinate",
        "postgres",
        "procrastinate",
        "q_procrastinate",
        PEER_PROCESSES,
        _each("procrastinate", "--app", "q_procrastinate.app", "worker"),
    ),
)
