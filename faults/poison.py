"""The poison set: jobs whose tasks attack the process that runs them, in each pool.

For each pool (thread, process) two fresh nodes run under `prlimit --as`, and the set is
submitted together with bystander jobs that must simply succeed. Each poison kind has its real
cause: the words its failure must name. A node that dies is counted and replaced (bounded), so a
task that kills nodes shows what it does to the cluster instead of stopping the suite.
"""

from __future__ import annotations

import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import chaostasks
from chaosnodes import HERE, Datastore, Nodes, UnexpectedExit, child_env, until

from shoal.errors import ShoalError
from shoal.model import Job, JobState, NewJob
from shoal.store import Store


@dataclass(frozen=True)
class Poison:
    kind: str
    tasks: tuple[str, ...]
    cause: tuple[str, ...]  # the failure's error must name one of these (case-insensitive)
    may_succeed: bool = False  # a fix may also clean the input and let the job succeed
    untrue: tuple[str, ...] = ()  # words the error must not use: they claim what did not happen


POISONS = (
    Poison("os._exit", ("poison_exit",), ("exit code 1", "exited with code 1", "exit status 1")),
    Poison("segfault", ("poison_segfault",), ("signal 11", "sigsegv", "segmentation")),
    Poison("kills-its-group", ("poison_kill_group",), ("signal 9", "sigkill")),
    Poison("memory", ("poison_memory",), ("memoryerror", "out of memory", "memory")),
    # A thread blocked in C cannot be stopped: an error saying it was is untrue.
    Poison("c-blocked", ("poison_c_block",), ("timed out", "time limit"), untrue=("task stopped",)),
    Poison("progress-nul", ("poison_progress_nul",), ("progress",), may_succeed=True),
    Poison("progress-surrogate", ("poison_progress_surrogate",), ("progress",), may_succeed=True),
    Poison("deep-result", ("poison_deep_result",), ("nested",)),
    Poison("nan-result", ("poison_nan_result",), ("json",)),
    Poison("hostile-names", (chaostasks.MARKUP_NAME, chaostasks.ESCAPE_NAME), (), may_succeed=True),
)
POOLS = ("thread", "process")
MEMORY_LIMIT_BYTES = 1536 * 1024 * 1024
BYSTANDERS = 4  # plain jobs submitted with each poison kind, that must succeed
MAX_REPLACEMENTS = 8  # a task that kills every node it touches must not make the suite spin


@dataclass(frozen=True)
class PoisonCase:
    pool: str
    kind: str
    task: str
    state: str
    error: str
    ok: bool
    why: str  # what is wrong, when not ok


@dataclass
class PoisonResult:
    datastore: str
    cases: list[PoisonCase] = field(default_factory=list)
    bystanders_failed: dict[str, int] = field(default_factory=dict)  # pool -> count
    exits: list[UnexpectedExit] = field(default_factory=list)


def run_poison(
    datastore: Datastore, work_dir: Path, lease_s: float, kinds: tuple[str, ...] | None = None
) -> PoisonResult:
    result = PoisonResult(datastore.kind)
    chosen = [p for p in POISONS if kinds is None or p.kind in kinds]
    store = datastore.open()
    try:
        for pool in POOLS:
            _run_pool(store, datastore, work_dir, lease_s, pool, chosen, result)
    finally:
        store.close()
    return result


def _run_pool(
    store: Store,
    datastore: Datastore,
    work_dir: Path,
    lease_s: float,
    pool: str,
    chosen: list[Poison],
    result: PoisonResult,
) -> None:
    """One wave per poison kind, so each kind's harm is its own: its jobs, its bystanders, and
    the nodes that died while it ran."""
    side_file = work_dir / f"poison-{datastore.kind}-{pool}.jsonl"
    nodes = Nodes(datastore.url, work_dir, side_file, lease_s, concurrency=2)
    nodes.memory_limit_bytes = MEMORY_LIMIT_BYTES
    try:
        nodes.start(pool, f"{pool}-a")
        # A hostile node name too: what status views print must stay text.
        nodes.start(pool, f"{pool}-<b>b</b>[/]\x1b[1m")
        for poison in chosen:
            _ready(store, nodes, pool)
            exits_before = len(nodes.exits)
            jobs = [NewJob(task, "[]", "{}", max_attempts=1) for task in poison.tasks]
            jobs += [NewJob("step", "[]", '{"sleep_s": 0.2}', max_attempts=1)] * BYSTANDERS
            ids = store.submit_jobs(jobs)
            _wait_final(store, nodes, pool, ids, lease_s)
            harmed = sum(1 for i in ids[len(poison.tasks) :] if _state(store, i) not in GOOD)
            died = [e.name for e in nodes.exits[exits_before:]]
            for task, job_id in zip(poison.tasks, ids[: len(poison.tasks)], strict=True):
                case = _judge(store, datastore.url, pool, poison, task, job_id)
                result.cases.append(_with_harm(case, harmed, died))
            result.bystanders_failed[pool] = result.bystanders_failed.get(pool, 0) + harmed
    finally:
        nodes.stop_all()
        nodes.reap()
        nodes.kill_everything()
        result.exits.extend(nodes.exits)


def _ready(store: Store, nodes: Nodes, pool: str) -> None:
    """Two running nodes, both registered with a section, before the next wave."""
    nodes.reap()
    while len(nodes.running) < 2:
        nodes.start(pool)
    pids = {n.process.pid for n in nodes.running}

    def live() -> int:
        nodes_now = store.read_cluster().nodes
        return sum(1 for n in nodes_now if n.is_live and n.section and n.pid in pids)

    until(live, 60, f"two {pool} nodes live")


def _with_harm(case: PoisonCase, harmed: int, died: list[str]) -> PoisonCase:
    """The case, failed too if bystanders did not succeed or a node died during its wave."""
    reasons = [case.why] if case.why else []
    if harmed:
        reasons.append(f"{harmed} of {BYSTANDERS} bystanders did not succeed")
    if died:
        reasons.append(f"{len(died)} node exits")
    why = "; ".join(reasons)
    return PoisonCase(case.pool, case.kind, case.task, case.state, case.error, not why, why)


def _wait_final(store: Store, nodes: Nodes, pool: str, ids: list[int], lease_s: float) -> None:
    """Until every job is final or the deadline passes; replace nodes that die (bounded)."""
    deadline = time.monotonic() + 20 + 4 * lease_s
    replaced = 0
    while time.monotonic() < deadline:
        for _ in nodes.reap():
            if replaced < MAX_REPLACEMENTS:
                replaced += 1
                nodes.start(pool)
        if all(_state(store, i) in FINAL for i in ids):
            return
        time.sleep(0.2)


GOOD = {JobState.SUCCEEDED}
FINAL = {JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED}


def _judge(store: Store, url: str, pool: str, poison: Poison, task: str, job_id: int) -> PoisonCase:
    job = store.read_job(job_id)
    state = job.state.value if job else "missing"
    error = (job.error or "") if job else ""
    why = _what_is_wrong(poison, task, job, url)
    return PoisonCase(pool, poison.kind, task, state, error, not why, why)


def _what_is_wrong(poison: Poison, task: str, job: Job | None, url: str) -> str:
    if job is None:
        return "the job is gone"
    if not job.state.is_final:
        return f"still {job.state.value} at the deadline"
    if poison.kind == "hostile-names":
        if job.state is not JobState.SUCCEEDED or job.task != task:
            return f"a task named with markup or escapes ended {job.state.value}"
        return _name_leaks(job, url)
    if job.state is JobState.SUCCEEDED:
        return "" if poison.may_succeed else "succeeded"
    error = (job.error or "").lower()
    if not any(c in error for c in poison.cause):
        return f"failed without naming its cause ({' / '.join(poison.cause)})"
    claims = [w for w in poison.untrue if w in error]
    return f"its error claims {claims[0]!r}, which did not happen" if claims else ""


def _name_leaks(job: Job, url: str) -> str:
    """`shoal job` and `shoal status` (a node is named with markup and escapes too) must show
    names as text: exit 0, and no raw escape or bell reaches the terminal."""
    for argv in (["job", "--db", url, str(job.id)], ["status", "--db", url]):
        shown = subprocess.run(
            [sys.executable, "-m", "shoal", *argv],
            cwd=HERE,
            capture_output=True,
            timeout=30,
            env=child_env(Path("/dev/null")),
        )
        if shown.returncode != 0:
            last = shown.stderr.decode(errors="replace").strip().splitlines()[-1:]
            return f"`shoal {argv[0]}` exited {shown.returncode}: {' '.join(last)}"
        if b"\x1b" in shown.stdout or b"\x07" in shown.stdout:
            return f"`shoal {argv[0]}` sent a raw escape sequence to the terminal"
    return ""


def _state(store: Store, job_id: int) -> JobState | None:
    try:
        job = store.read_job(job_id)
    except ShoalError:
        return None
    return job.state if job else None
