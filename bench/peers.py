"""The peers' runs: Dramatiq on Redis and PgQueuer on PostgreSQL, each from its own virtualenv.

The virtualenvs live in bench/.venvs/ (git-ignored) and are created from PyPI on first use, with
pinned versions so that figures compare across days. Each peer script (peer_dramatiq.py,
peer_pgqueuer.py) runs inside its virtualenv and answers in JSON. One run mirrors Shoal's: a
fresh datastore, two worker processes, a bulk submit, a wait until every job is done (verified
from the peer's own counts), then the light-load latency probe against idle workers. Dramatiq
sends one message at a time, so its jobs are all sent before its workers start: otherwise its
drain would overlap its submit.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from datastores import fresh_postgres
from processes import BenchError, Workers, run_json, wait_for
from results import Run, percentile
from shoal_side import Plan

BENCH_DIR = Path(__file__).resolve().parent
VENVS = BENCH_DIR / ".venvs"
PEER_WORKERS = 2


@dataclass(frozen=True)
class Peer:
    name: str
    datastore: str
    packages: tuple[str, ...]

    @property
    def python(self) -> str:
        return str(VENVS / self.name.lower() / "bin" / "python")


DRAMATIQ = Peer("Dramatiq", "redis", ("dramatiq[redis]==2.2.1", "redis==8.1.0"))
PGQUEUER = Peer("PgQueuer", "postgres", ("pgqueuer==1.6.0", "asyncpg==0.32.0"))
PEERS = (DRAMATIQ, PGQUEUER)


def ensure_venv(peer: Peer) -> None:
    """Create the peer's virtualenv and install its pinned packages unless already done."""
    folder = VENVS / peer.name.lower()
    marker = folder / "bench-packages.txt"
    wanted = "\n".join(peer.packages)
    if marker.exists() and marker.read_text() == wanted:
        return
    try:
        subprocess.run(
            [sys.executable, "-m", "venv", "--clear", str(folder)], check=True, timeout=120
        )
        pip = [peer.python, "-m", "pip", "install", "-q", "--disable-pip-version-check"]
        subprocess.run([*pip, *peer.packages], check=True, timeout=600, capture_output=True)
    except subprocess.CalledProcessError as exc:
        detail = (exc.stderr or b"").decode(errors="replace").strip().splitlines()[-1:]
        raise BenchError(f"cannot install {peer.name}: {' '.join(detail)}") from None
    except subprocess.TimeoutExpired:
        raise BenchError(f"installing {peer.name} took too long") from None
    marker.write_text(wanted)


def run_peer(peer: Peer, plan: Plan, log_dir: Path) -> Run:
    if peer is DRAMATIQ:
        return _run_dramatiq(plan, log_dir)
    with fresh_postgres("pgqueuer_bench") as url:
        return _run_pgqueuer(url, plan, log_dir)


def _call(peer: Peer, env: dict[str, str], *args: object, timeout_s: float = 120) -> dict:
    argv = [peer.python, f"peer_{peer.name.lower()}.py", *map(str, args)]
    return dict(run_json(argv, env, BENCH_DIR, timeout_s))


def _run_dramatiq(plan: Plan, log_dir: Path) -> Run:
    env = dict(os.environ, BENCH_TOTAL=str(plan.jobs))
    _call(DRAMATIQ, env, "flush")
    workers = Workers(log_dir)
    try:
        submitted = _call(DRAMATIQ, env, "submit", plan.jobs, timeout_s=_drain_timeout(plan))
        dramatiq = str(Path(DRAMATIQ.python).parent / "dramatiq")
        argv = [dramatiq, "peer_dramatiq", "--processes", str(PEER_WORKERS), "--threads", "8"]
        workers.start("dramatiq", argv, env, BENCH_DIR)
        drained = _wait_drained(DRAMATIQ, env, plan)
        workers.check_alive()
        if drained["done"] != plan.jobs or drained["first"] is None or drained["last"] is None:
            raise BenchError(f"Dramatiq finished {drained['done']} of {plan.jobs} jobs")
        delays = _latency(DRAMATIQ, env, plan)
    finally:
        workers.stop()
        _call(DRAMATIQ, env, "flush")
    return _as_run(plan, submitted, drained, delays)


def _run_pgqueuer(url: str, plan: Plan, log_dir: Path) -> Run:
    env = dict(os.environ, BENCH_PG_DSN=url)
    _call(PGQUEUER, env, "install")
    workers = Workers(log_dir)
    try:
        # Workers first, as for Shoal: the enqueue is one statement, so no job starts before
        # it commits, and the drain is not stretched by one worker booting later than the other.
        for index in range(PEER_WORKERS):
            argv = [PGQUEUER.python, "peer_pgqueuer.py", "worker"]
            workers.start(f"pgqueuer-{index + 1}", argv, env, BENCH_DIR)
        wait_for("PgQueuer workers", lambda: workers.all_logged("bench worker ready"), 60, 0.1)
        submitted = _call(PGQUEUER, env, "submit", plan.jobs, timeout_s=_drain_timeout(plan))
        drained = _wait_drained(PGQUEUER, env, plan)
        workers.check_alive()
        if drained["done"] != plan.jobs or drained["bad"] or drained["left"]:
            raise BenchError(
                f"PgQueuer: {drained['done']} of {plan.jobs} succeeded, "
                f"{drained['bad']} in other states, {drained['left']} still queued or picked"
            )
        delays = _latency(PGQUEUER, env, plan)
    finally:
        workers.stop()
    return _as_run(plan, submitted, drained, delays)


def _drain_timeout(plan: Plan) -> float:
    return max(60.0, plan.jobs / 100)


def _wait_drained(peer: Peer, env: dict[str, str], plan: Plan) -> dict:
    limit_s = _drain_timeout(plan)
    return _call(peer, env, "drain", plan.jobs, limit_s, timeout_s=limit_s + 30)


def _latency(peer: Peer, env: dict[str, str], plan: Plan) -> list[float]:
    count, interval = plan.latency_jobs, plan.latency_interval_s
    answer = _call(peer, env, "latency", count, interval, 30, timeout_s=count * interval + 60)
    delays = [float(d) for d in answer["delays_s"]]
    if len(delays) < count:
        raise BenchError(f"{peer.name}: {len(delays)} of {count} light-load jobs started")
    return delays


def _as_run(plan: Plan, submitted: dict, drained: dict, delays: list[float]) -> Run:
    return Run(
        plan.jobs / submitted["seconds"],
        plan.jobs / max(drained["last"] - drained["first"], 1e-6),
        percentile(delays, 0.50) * 1000,
        percentile(delays, 0.99) * 1000,
    )
