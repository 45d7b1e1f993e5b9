"""The chaos soak: real nodes on one datastore, a steady stream of jobs, and seeded faults.

For `minutes`, jobs are submitted at an even rate (short sleeps, some reporting progress, some
failing their first attempt and retried) while faults drawn from a seeded RNG strike every few
seconds: SIGKILL a node and start a replacement; SIGSTOP one past its lease, then SIGCONT; and on
the throwaway PostgreSQL server, restarts (`-m fast`, `-m immediate`) and pg_terminate_backend
sweeps. Then the faults stop and the jobs get a generous settle time to end. Every wait has a
deadline; every node is stopped on the way out.
"""

from __future__ import annotations

import json
import math
import random
import signal
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from chaosnodes import Datastore, NodeProcess, Nodes, PgServer, UnexpectedExit, until
from ledger import Findings, Kill, examine, read_records

from shoal.errors import ShoalError
from shoal.model import Job, NewJob, NodeState
from shoal.store import Store
from shoal.store.deadline import Deadline, retrying_until

FAULT_KINDS = ("sigkill", "sigstop", "terminate", "restart-fast", "restart-immediate")
NEEDS_SERVER = {"terminate", "restart-fast", "restart-immediate"}


@dataclass(frozen=True)
class SoakPlan:
    seed: int
    minutes: float
    jobs: int
    nodes: int = 3
    lease_s: float = 2.0
    fault_every_s: float = 6.0  # mean gap between faults
    faults: tuple[str, ...] = FAULT_KINDS
    settle_s: float = 90.0
    # How long the steady jobs sleep, drawn uniformly from this range. Under 20 ms on average
    # the nodes take them for tiny ones, which run before their start is recorded.
    job_s: tuple[float, float] = (0.05, 0.6)


@dataclass
class SoakResult:
    datastore: str
    submitted: list[int] = field(default_factory=list)
    faults: Counter[str] = field(default_factory=Counter)
    findings: Findings | None = None
    exits: list[UnexpectedExit] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def run_soak(datastore: Datastore, plan: SoakPlan, work_dir: Path) -> SoakResult:
    if plan.minutes <= 0:
        return SoakResult(datastore.kind, findings=examine([], {}, [], [], 0))
    rng = random.Random(f"{plan.seed}-{datastore.kind}")
    side_file = work_dir / f"side-{datastore.kind}.jsonl"
    nodes = Nodes(datastore.url, work_dir, side_file, plan.lease_s)
    result = SoakResult(datastore.kind)
    kinds = [k for k in plan.faults if datastore.server is not None or k not in NEEDS_SERVER]
    store = datastore.open()
    kills: list[Kill] = []
    try:
        for i in range(plan.nodes):
            nodes.start("process" if i == plan.nodes - 1 else "thread")
        until(lambda: _live_count(store) >= plan.nodes, 60, "the nodes to register")
        _drive(store, datastore.server, nodes, plan, rng, kinds, result, kills)
        _settle(store, nodes, plan, result)
        jobs = {i: _read(store, i) for i in result.submitted}
        view = store.read_cluster(dead_window_s=1e9)
        live = frozenset(n.id for n in view.nodes if n.is_live)
        nodes.stop_all()
        nodes.reap()
        applied = sum(n.processed for n in store.read_cluster(dead_window_s=1e9).nodes)
        records = read_records(side_file)
        result.findings = examine(result.submitted, jobs, records, kills, applied, live)
    finally:
        nodes.kill_everything()
        result.exits = list(nodes.exits)
        store.close()
    return result


def _drive(
    store: Store,
    server: PgServer | None,
    nodes: Nodes,
    plan: SoakPlan,
    rng: random.Random,
    kinds: list[str],
    result: SoakResult,
    kills: list[Kill],
) -> None:
    """Submit at an even rate and strike with faults until the soak's time is up."""
    started = time.monotonic()
    duration_s = plan.minutes * 60
    next_fault = started + _gap(rng, plan)
    order: list[str] = []  # kinds in a seeded order, each once per round, so every kind strikes
    stopped: list[tuple[float, NodeProcess]] = []  # SIGSTOPped nodes and when to SIGCONT them
    while (now := time.monotonic()) < started + duration_s:
        for when, node in [s for s in stopped if s[0] <= now]:
            node.process.send_signal(signal.SIGCONT)
            stopped.remove((when, node))
        due = min(plan.jobs, int(plan.jobs * (now - started) / duration_s) + 1)
        # On SQLite a node frozen inside a write holds the file's lock, and a submit waits for
        # it: it must not wait past the moment this loop is to wake that node (it once waited
        # out the lock's 120 s retry, and the whole cluster stood still). A PostgreSQL submit
        # keeps its own retry: one given up mid-commit could be recorded unseen.
        thaw = Deadline()
        if server is None:
            thaw.bring_forward(min((when for when, _ in stopped), default=math.inf))
        with retrying_until(thaw):
            _submit(store, rng, due - len(result.submitted), result, plan.job_s)
        _replace_dead(nodes, plan, result)
        if now >= next_fault and kinds:
            order = order or rng.sample(kinds, len(kinds))
            kind = order.pop()
            if _strike(kind, server, nodes, plan, rng, stopped, kills):
                result.faults[kind] += 1
            next_fault = time.monotonic() + _gap(rng, plan)
        time.sleep(0.05)
    for _, node in stopped:
        node.process.send_signal(signal.SIGCONT)
    deadline = time.monotonic() + 30  # the rest, even if the last fault left the datastore slow
    while len(result.submitted) < plan.jobs and time.monotonic() < deadline:
        _submit(store, rng, plan.jobs - len(result.submitted), result, plan.job_s)
        time.sleep(0.05)


def _gap(rng: random.Random, plan: SoakPlan) -> float:
    """Seconds to the next fault: around the plan's mean, never bunched or far apart."""
    return rng.uniform(0.5, 1.5) * plan.fault_every_s


def _submit(
    store: Store, rng: random.Random, count: int, result: SoakResult, job_s: tuple[float, float]
) -> None:
    """Submit `count` steady jobs in one batch; a datastore that is down delays them."""
    if count <= 0:
        return
    batch = []
    for _ in range(count):
        steps = rng.choice((1, 1, 3))  # a third report progress
        fail = 1 if rng.random() < 0.15 else 0  # some fail their first attempt
        kwargs = {
            "sleep_s": round(rng.uniform(*job_s), 4),
            "steps": steps,
            "fail_attempts": fail,
        }
        batch.append(NewJob("step", "[]", json.dumps(kwargs), max_attempts=4))
    try:
        result.submitted.extend(store.submit_jobs(batch))
    except ShoalError as exc:
        result.notes.append(f"a submit was delayed: {type(exc).__name__}")


def _replace_dead(nodes: Nodes, plan: SoakPlan, result: SoakResult) -> None:
    for node in nodes.reap():
        result.notes.append(f"node {node.name} exited unexpectedly; replaced")
    while len(nodes.running) < plan.nodes:
        nodes.start(rng_pool(len(nodes.everyone)))


def rng_pool(serial: int) -> str:
    """Replacements alternate pools, so both kinds are killed and recovered from."""
    return "process" if serial % 3 == 2 else "thread"


def _strike(
    kind: str,
    server: PgServer | None,
    nodes: Nodes,
    plan: SoakPlan,
    rng: random.Random,
    stopped: list[tuple[float, NodeProcess]],
    kills: list[Kill],
) -> bool:
    """Inject one fault of `kind`; False if there was nothing to strike (every node frozen)."""
    frozen = {id(n) for _, n in stopped}
    targets = [n for n in nodes.running if id(n) not in frozen]
    if kind == "sigkill" and targets:
        # A node with a job in flight, where there is one: a kill of an idle node shows nothing.
        busy = _busy_pids(nodes.side_file)
        victim = rng.choice([n for n in targets if n.process.pid in busy] or targets)
        kills.append(Kill(time.time(), victim.process.pid))
        nodes.kill(victim)
        nodes.start(victim.pool)
    elif kind == "sigstop" and targets:
        victim = rng.choice(targets)
        victim.process.send_signal(signal.SIGSTOP)
        stopped.append((time.monotonic() + plan.lease_s + 1.5, victim))
    elif kind == "terminate" and server is not None:
        server.terminate_connections()
    elif kind.startswith("restart-") and server is not None:
        server.restart(kind.removeprefix("restart-"))
    else:
        return False
    return True


def _busy_pids(side_file: Path) -> set[int]:
    """Node (and pool worker parent) pids that have a task body running now."""
    records = read_records(side_file)
    ended = {(r.job_id, r.attempt) for r in records if r.event == "end"}
    running = [r for r in records if r.event == "start" and (r.job_id, r.attempt) not in ended]
    return {r.pid for r in running} | {r.ppid for r in running}


def _settle(store: Store, nodes: Nodes, plan: SoakPlan, result: SoakResult) -> None:
    """Wait (bounded) for every submitted job to end, keeping enough nodes alive."""
    deadline = time.monotonic() + plan.settle_s
    pending = list(result.submitted)
    while pending and time.monotonic() < deadline:
        _replace_dead(nodes, plan, result)
        pending = [i for i in pending if not _is_final(store, i)]
        time.sleep(0.25)


def _is_final(store: Store, job_id: int) -> bool:
    job = _read(store, job_id)
    return job is not None and job.state.is_final


def _read(store: Store, job_id: int, wait_s: float = 30.0) -> Job | None:
    """The job as the datastore has it, waiting out a datastore that is coming back."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            return store.read_job(job_id)
        except ShoalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def _live_count(store: Store) -> int:
    return sum(1 for n in store.read_cluster().nodes if n.state is not NodeState.DEAD and n.section)
