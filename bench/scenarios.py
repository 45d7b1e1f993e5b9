"""Shoal's scenario benchmark: makespan against the ideal, workers warm.

For Shoal on SQLite and PostgreSQL (also with load moves turned off, `--no-follow-load`) and,
in the same invocation, PgQueuer and Dramatiq, each through its harness adapter and virtualenv on
a fresh datastore, runs five cases:

1. burst: 40 jobs of 0.5 s, 2 workers x 4 slots;
2. head-of-line: 4 jobs of 15 s, then 20 of 50 ms submitted right after, 2 workers x 4 slots;
3. unequal: 160 jobs of 0.25 s, workers of 1 and 8 slots;
4. heavy-tailed: 200 jobs of log-normal durations (median 0.1 s, sigma 1.5, a fixed seed), 4
   workers of 1, 2, 4 and 8 slots;
5. no-op drain: 5,000 jobs of no duration, 2 workers x 4 slots (the ideal is nil: what counts is
   Shoal against itself without load moves, and against the peers).

The workers are started first and warmed up: rounds of 128 zero-length jobs (one per Shoal
partition) until every worker process has run one; only then is the clock read, just before
the submit (queues/scenario_drive.py). The task is the harness's `stamps.echo`, which sleeps
the duration this script writes for its index into the file named by BENCH_DURATIONS. Per case
and system: the makespan (submit → last end), the ideal (work ÷ slots), their ratio, the best
makespan of any queue that starts jobs in submit order ("in order": each job on the slot that
frees first, with no overhead; no queue that cannot tell a long job from a short one does
better) and the ratio to it, and, in the head-of-line case, the short jobs' wait (submit →
start) at p50 and p99. Medians over --runs.
Every wait is bounded; a stuck or failed run is reported in the table, and the benchmark goes on.

`--pools thread,inline` runs each Shoal system once per `shoal node --pool`, run by run in turn
(so a change in the machine's load falls on every pool alike), and prints each pool's median
makespan against the default `thread` pool's: on the no-op drain, what running tasks in a
worker process costs against threads of the node's own process.
"""

from __future__ import annotations

import argparse
import heapq
import json
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from harness import QUEUES_DIR, Plan, _env, _fresh
from processes import BenchError, Workers, describe_failure, progress, run_json, wait_for
from queues.stamps import read_stamps
from results import percentile
from systems import PEERS, SHOAL_BIN, System, shoal
from venvs import ensure_venv, venv_bin

WARMUP_FIRST = 1_000_000  # warm-up job indices start here, clear of the case's own
WARMUP_ROUND = 128  # one job per partition of a default Shoal datastore
WARMUP_ROUNDS = 10
SETTLE_S = 1.0  # after the warm-up, before the submit: let membership changes finish
NO_LOAD_MOVES = "Shoal (no load moves)"  # Shoal's nodes run with --no-follow-load


@dataclass(frozen=True)
class Case:
    name: str
    bursts: tuple[tuple[float, ...], ...]  # each job's seconds, burst by burst, one after another
    slots: tuple[int, ...]  # per worker process
    short_burst: int | None = None  # the burst whose waits are reported

    @property
    def work_s(self) -> float:
        return sum(map(sum, self.bursts))

    @property
    def ideal_s(self) -> float:
        return self.work_s / sum(self.slots)

    @property
    def fifo_s(self) -> float:
        """The best makespan of any queue that starts jobs in submit order: each job, in that
        order, on the slot that frees first, with no overhead at all (list scheduling). The
        bound a shared queue with free workers taking the next job reaches, and no lower: it
        cannot know which job will be long."""
        free_at = [0.0] * sum(self.slots)
        for seconds in self.durations():
            heapq.heappush(free_at, heapq.heappop(free_at) + seconds)
        return max(free_at)

    def durations(self) -> list[float]:
        return [s for burst in self.bursts for s in burst]

    def ranges(self) -> list[range]:
        out, first = [], 0
        for burst in self.bursts:
            out.append(range(first, first + len(burst)))
            first += len(burst)
        return out


def heavy_tailed(jobs: int, median_s: float, sigma: float, seed: int) -> tuple[float, ...]:
    """Log-normal durations, the same on every run and for every system."""
    draw = random.Random(seed)
    return tuple(round(draw.lognormvariate(0.0, sigma) * median_s, 4) for _ in range(jobs))


CASES = (
    Case("burst 40x0.5s", ((0.5,) * 40,), (4, 4)),
    Case("4x15s then 20x50ms", ((15.0,) * 4, (0.05,) * 20), (4, 4), short_burst=1),
    Case("160x0.25s, 1+8 slots", ((0.25,) * 160,), (1, 8)),
    Case("200 log-normal, 1+2+4+8", (heavy_tailed(200, 0.1, 1.5, 9),), (1, 2, 4, 8)),
    Case("no-op drain 5000", ((0.0,) * 5000,), (4, 4)),
)


def no_op_drain(jobs: int) -> Case:
    """Case 5 with `jobs` jobs of no duration."""
    return Case(f"no-op drain {jobs}", ((0.0,) * jobs,), (4, 4))


@dataclass
class Result:
    makespan_s: float
    short_p50_s: float | None
    short_p99_s: float | None


@dataclass
class Cell:
    case: Case
    system: System
    pool: str | None = None  # Shoal's `--pool`; None: the node's default, unlabelled
    note: str = ""
    results: list[Result] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def worker_argvs(
    system: System, bin_dir: Path, url: str, slots: tuple[int, ...], pool: str | None = None
) -> tuple:
    """The worker command lines for these slots, and a note when the slots are not exact."""
    if system.adapter == "q_shoal":
        node = [str(bin_dir / "shoal"), "node", "--app", "q_shoal:app", "--db", url]
        if system.name == NO_LOAD_MOVES:
            node.append("--no-follow-load")
        if pool is not None:
            node += ["--pool", pool]
        return [
            [*node, "--concurrency", str(n), "--name", f"bench-node-{i + 1}"]
            for i, n in enumerate(slots)
        ], ""
    if system.adapter == "q_dramatiq":
        dramatiq = [str(bin_dir / "dramatiq"), "q_dramatiq", "--processes", "1"]
        return [[*dramatiq, "--threads", str(n)] for n in slots], ""
    if system.adapter == "q_pgqueuer":
        argvs = [[str(bin_dir / "python"), "scenario_pgqueuer.py", str(n)] for n in slots]
        note = "1-slot worker runs up to 2 (PgQueuer's least cap)" if 1 in slots else ""
        return argvs, note
    raise BenchError(f"no scenario workers for {system.name}")


def run_case(
    case: Case, system: System, log_dir: Path, pool: str | None = None
) -> tuple[Result, str]:
    with _fresh(system, Plan(0, 0, 0.0, 0)) as url:
        stamps_dir = Path(tempfile.mkdtemp(prefix="stamps-", dir=log_dir))
        durations_path = stamps_dir / "durations.json"
        durations_path.write_text(json.dumps(dict(enumerate(case.durations()))))
        bin_dir = SHOAL_BIN if system.venv is None else venv_bin(system.venv)
        env = dict(_env(system, url, stamps_dir), BENCH_DURATIONS=str(durations_path))
        python = str(bin_dir / "python")

        def submit(*numbers: int) -> list[float]:
            argv = [python, "scenario_drive.py", system.adapter, *map(str, numbers)]
            return list(run_json(argv, env, QUEUES_DIR, 120.0)["submitted"])

        run_json([python, f"{system.adapter}.py", "prepare"], env, QUEUES_DIR, 120.0)
        argvs, note = worker_argvs(system, bin_dir, url, case.slots, pool)
        workers = Workers(log_dir)
        try:
            for index, argv in enumerate(argvs):
                workers.start(f"{system.adapter}-{index + 1}", argv, env, QUEUES_DIR)
            _warm_up(submit, stamps_dir, workers, len(argvs))
            numbers = [x for r in case.ranges() for x in (r.start, r.stop - r.start)]
            submitted = submit(*numbers)
            everything = range(0, len(case.durations()))
            limit_s = 3 * case.work_s + 60
            stamps = wait_for(
                f"{len(everything)} jobs",
                lambda: _done(stamps_dir, everything, workers),
                limit_s,
                0.05,
            )
        finally:
            workers.stop()
    makespan = max(end for _, end in stamps.values()) - submitted[0]
    p50 = p99 = None
    if case.short_burst is not None:
        at = submitted[case.short_burst]
        waits = [stamps[i][0] - at for i in case.ranges()[case.short_burst]]
        p50, p99 = percentile(waits, 0.50), percentile(waits, 0.99)
    return Result(makespan, p50, p99), note


def _warm_up(
    submit: Callable[..., list[float]], stamps_dir: Path, workers: Workers, processes: int
) -> None:
    """Rounds of zero-length jobs until every worker process has run one (each writes its own
    stamps file), then a short settle; BenchError if they never all take part."""
    for round_ in range(WARMUP_ROUNDS):
        first = WARMUP_FIRST + round_ * WARMUP_ROUND
        submit(first, WARMUP_ROUND)
        wanted = range(first, first + WARMUP_ROUND)
        wait_for("the warm-up", lambda w=wanted: _done(stamps_dir, w, workers), 60.0, 0.05)
        if len(list(stamps_dir.glob("*.stamps"))) >= processes:
            time.sleep(SETTLE_S)
            return
    raise BenchError(f"not every worker took a warm-up job in {WARMUP_ROUNDS} rounds")


def _done(folder: Path, indices: range, workers: Workers) -> dict[int, tuple[float, float]] | None:
    workers.check_alive()
    found = read_stamps(folder)
    if any(index not in found for index in indices):
        return None
    return {index: found[index] for index in indices}


def format_table(cells: list[Cell], runs: int) -> str:
    head = (
        "case",
        "system",
        "store",
        "makespan s",
        "ideal s",
        "ratio",
        "in order s",
        "÷ in order",
        "short wait p50/p99 s",
    )
    rows = [head]
    notes: list[str] = []
    for case in dict.fromkeys(cell.case for cell in cells):
        longest = max(case.durations())
        if longest > case.ideal_s:
            notes.append(f"{case.name}: no schedule beats its longest job, {longest:g} s")
        if case.ideal_s and case.fifo_s > 1.05 * case.ideal_s:
            notes.append(
                f"{case.name}: no queue that starts jobs in submit order beats "
                f"{case.fifo_s:.2f} s, {case.fifo_s / case.ideal_s:.2f}x the ideal "
                "(list scheduling with no overhead: 'in order')"
            )
    for cell in cells:
        label = cell.system.name if cell.pool is None else f"{cell.system.name} [{cell.pool}]"
        if cell.note:
            notes.append(f"* {cell.system.name}, {cell.case.name}: {cell.note}")
            label += " *"
        if not cell.results:
            error = cell.errors[0] if cell.errors else "not run"
            rows.append(
                (cell.case.name, label, cell.system.datastore, "failed", "", "", "", "", error)
            )
            continue
        makespan = statistics.median(r.makespan_s for r in cell.results)
        wait = ""
        if cell.case.short_burst is not None:
            p50 = statistics.median(r.short_p50_s or 0.0 for r in cell.results)
            p99 = statistics.median(r.short_p99_s or 0.0 for r in cell.results)
            wait = f"{p50:.2f} / {p99:.2f}"
        runs_said = "" if len(cell.results) == runs else f" ({len(cell.results)}/{runs} runs)"
        ideal, in_order = cell.case.ideal_s, cell.case.fifo_s
        rows.append(
            (
                cell.case.name,
                label,
                cell.system.datastore,
                f"{makespan:.2f}{runs_said}",
                f"{ideal:.2f}" if ideal else "-",
                f"{makespan / ideal:.2f}" if ideal else "-",
                f"{in_order:.2f}" if in_order else "-",
                f"{makespan / in_order:.2f}" if in_order else "-",
                wait,
            )
        )
    notes.extend(_load_move_costs(cells))
    notes.extend(_pool_costs(cells))
    widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
    lines = [
        "| " + " | ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)) + " |"
        for row in rows
    ]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines + (["", *notes] if notes else []))


def _load_move_costs(cells: list[Cell]) -> list[str]:
    """Per case and datastore, Shoal's makespan with load moves against the same without."""
    medians = {
        (c.case.name, c.system.name, c.system.datastore): statistics.median(
            r.makespan_s for r in c.results
        )
        for c in cells
        if c.results and c.system.adapter == "q_shoal" and c.pool in (None, "thread")
    }
    notes = []
    for (case, name, datastore), without in medians.items():
        with_moves = medians.get((case, "Shoal", datastore))
        if name == NO_LOAD_MOVES and with_moves is not None:
            change = (with_moves / without - 1) * 100
            notes.append(
                f"{case}, {datastore}: load moves {with_moves:.2f} s against {without:.2f} s "
                f"without ({change:+.1f}%)"
            )
    return notes


def _pool_costs(cells: list[Cell]) -> list[str]:
    """Per case and Shoal system, the default `thread` pool's makespan against each other pool's."""
    medians = {
        (c.case.name, c.system.name, c.system.datastore, c.pool): statistics.median(
            r.makespan_s for r in c.results
        )
        for c in cells
        if c.results and c.pool is not None
    }
    notes = []
    for (case, name, datastore, pool), other in medians.items():
        thread = medians.get((case, name, datastore, "thread"))
        if pool != "thread" and thread is not None:
            notes.append(
                f"{case}, {name}, {datastore}: pool thread {thread:.3f} s against {pool} "
                f"{other:.3f} s: ratio {thread / other:.3f} ({(thread / other - 1) * 100:+.1f}%)"
            )
    return notes


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="runs per case and system (medians)")
    parser.add_argument(
        "--only",
        help=f"comma-separated system names (shoal,{NO_LOAD_MOVES.lower()!r},pgqueuer,dramatiq)",
    )
    parser.add_argument("--cases", help="comma-separated case numbers (1,2,3,4,5)")
    parser.add_argument(
        "--pools",
        help="comma-separated `shoal node --pool` values to run each Shoal system with, side "
        "by side (thread,inline,process); the default runs the node's default pool",
    )
    parser.add_argument(
        "--drain-jobs",
        type=int,
        default=5000,
        help="jobs in case 5, the no-op drain (a longer drain gives a steadier ratio)",
    )
    args = parser.parse_args(argv)
    if args.drain_jobs < 1:
        parser.error("--drain-jobs: at least 1")
    pools: list[str | None] = [None]
    if args.pools:
        pools = [p.strip() for p in args.pools.split(",")]
        unknown = set(pools) - {"thread", "inline", "process"}
        if unknown:
            parser.error(f"--pools: no such pool {', '.join(sorted(map(str, unknown)))}")
    peers = {p.name: p for p in PEERS}
    still = [replace(shoal(store, 2), name=NO_LOAD_MOVES) for store in ("sqlite", "postgres")]
    systems = [shoal("sqlite", 2), shoal("postgres", 2), *still, peers["PgQueuer"]]
    systems.append(peers["Dramatiq"])
    if args.only:
        wanted = {name.strip().lower() for name in args.only.split(",")}
        systems = [s for s in systems if s.name.lower() in wanted]
    cases = (*CASES[:4], no_op_drain(args.drain_jobs))
    if args.cases:
        cases = tuple(cases[int(n) - 1] for n in args.cases.split(","))
    log_dir = Path(tempfile.mkdtemp(prefix="shoal-scenarios-logs-"))
    started = time.monotonic()
    cells: list[Cell] = []
    for system in systems:
        ready = _prepare(system)
        for case in cases:
            shoal_pools = pools if system.adapter == "q_shoal" else [None]
            group = [Cell(case, system, pool) for pool in shoal_pools]
            cells.extend(group)
            if ready:
                for cell in group:
                    cell.errors.append(ready)
                continue
            for index in range(args.runs):
                for cell in group:  # pools take turns, run by run
                    _run_once(cell, index, log_dir)
    command = " ".join(["bench/scenarios.py", *argv])
    print(f"\n$ {command}")
    print(
        f"median of {args.runs} run(s), workers warm before each submit; {os.cpu_count()} cores, "
        f"Python {platform.python_version()}; took {time.monotonic() - started:.0f}s; "
        f"worker logs in {log_dir}\n"
    )
    print(format_table(cells, args.runs))
    return 0 if all(cell.results for cell in cells) else 1


def _run_once(cell: Cell, index: int, log_dir: Path) -> None:
    system, pool = cell.system, cell.pool
    at = f"{system.name} ({system.datastore}{'' if pool is None else ', pool ' + pool})"
    progress(f"{at}, {cell.case.name}: run {index + 1}")
    try:
        result, cell.note = run_case(cell.case, system, log_dir, pool)
        cell.results.append(result)
    except Exception as exc:  # one failed run is reported, the benchmark goes on
        cell.errors.append(describe_failure(exc))
        progress(f"  failed: {cell.errors[-1]}")


def _prepare(system: System) -> str:
    """An error message if the system's virtualenv cannot be made; empty when ready."""
    if system.venv is None:
        return ""
    try:
        ensure_venv(system.venv)
    except BenchError as exc:
        return str(exc)
    return ""


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
