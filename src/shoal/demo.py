"""`shoal demo`: a local cluster on SQLite, shown live in the terminal.

It starts real `shoal node` processes, submits jobs that report progress, kills one node with
SIGKILL part-way so its section moves and its jobs finish elsewhere, and ends with a summary
checked against the datastore: every job recorded exactly once, none lost.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.markup import escape
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from shoal.app import App
from shoal.context import progress
from shoal.model import EventKind, HistoryEvent, JobFilter, JobState, NodeState
from shoal.store import Store, open_store

app = App()


@app.task(retries=3, backoff_s=0.5)
def render(frame: int, steps: int, step_s: float) -> dict[str, int]:
    """A stand-in for real work: `steps` slices of `step_s` seconds, reporting progress."""
    for step in range(steps):
        progress(step / steps, f"slice {step + 1} of {steps}")
        time.sleep(step_s)
    progress(1.0, "done")
    return {"frame": frame, "slices": steps}


@dataclass
class DemoNode:
    name: str
    process: subprocess.Popen[bytes]
    killed_at: float | None = None
    killed_at_db: float | None = None


def start_node(url: str, name: str, log_dir: Path, concurrency: int = 4) -> DemoNode:
    log = open(log_dir / f"{name}.log", "ab")  # noqa: SIM115 - the process owns it until exit
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "shoal",
            "node",
            "--app",
            "shoal.demo:app",
            "--db",
            url,
            "--name",
            name,
            "--concurrency",
            str(concurrency),
            "--grace-s",
            "5",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    return DemoNode(name, process)


def run_demo(db: str | None, nodes: int, jobs: int, keep_running: bool, kill: bool) -> int:
    console = Console()
    work_dir = Path(tempfile.mkdtemp(prefix="shoal-demo-"))
    url = db or f"sqlite:///{work_dir / 'demo.db'}"
    store = open_store(url)
    used = _already_used(store)
    if used:
        store.close()
        console.print(
            f"[red]the demo needs a datastore of its own:[/] {escape(store.url_for_display)} "
            f"already holds {used}. Give --db a new SQLite file or an empty PostgreSQL "
            "database, or leave --db out for a fresh one."
        )
        return 2
    app.use_store(store)
    console.print(f"[bold]Shoal demo[/] · datastore {store.url_for_display} · logs in {work_dir}")
    cluster = [start_node(url, f"demo-{i + 1}", work_dir) for i in range(nodes)]
    try:
        if not _wait_for_nodes(store, nodes, cluster, console):
            return 1
        rng = random.Random(7)
        started = time.monotonic()
        handles = render.submit_many(
            [(i, rng.randint(4, 9), rng.uniform(0.12, 0.22)) for i in range(jobs)]
        )
        ids = [h.id for h in handles]
        victim = cluster[1] if kill and len(cluster) > 1 else None
        _watch(store, ids, cluster, victim, started, console)
        ok = _summary(store, ids, cluster, victim, time.monotonic() - started, console)
        if keep_running:
            console.print(
                f"cluster still running; try `shoal status --db {url}` or "
                f"`shoal observe --db {url}`. Ctrl-C stops it."
            )
            try:
                while True:
                    time.sleep(1)
            except KeyboardInterrupt:
                pass
        return 0 if ok else 1
    except KeyboardInterrupt:
        return 130
    finally:
        _stop(cluster)
        store.close()


def _wait_for_nodes(
    store: Store, count: int, cluster: Sequence[DemoNode], console: Console
) -> bool:
    deadline = time.monotonic() + 30
    with console.status(f"starting {count} nodes…"):
        while time.monotonic() < deadline:
            live = [n for n in store.read_cluster().nodes if n.state is NodeState.WAITING]
            if len(live) >= count:
                return True
            for node in cluster:
                if node.process.poll() is not None:
                    console.print(f"[red]node {node.name} exited; see its log[/]")
                    return False
            time.sleep(0.1)
    console.print("[red]nodes did not start within 30s[/]")
    return False


def _watch(
    store: Store,
    ids: list[int],
    cluster: list[DemoNode],
    victim: DemoNode | None,
    started: float,
    console: Console,
) -> None:
    since = store.now()
    with Live(console=console, refresh_per_second=8, transient=False) as live:
        while True:
            view = store.read_cluster(dead_window_s=3600)
            finished = sum(view.job_counts.get(s, 0) for s in JobState if s.is_final)
            if victim and victim.killed_at is None and finished >= len(ids) * 0.35:
                victim.process.send_signal(signal.SIGKILL)
                victim.killed_at, victim.killed_at_db = time.monotonic(), store.now()
            running = store.list_jobs(JobFilter(state=JobState.RUNNING), limit=24)
            events = store.read_history(since)
            live.update(_frame(view, running, events, finished, len(ids), started, victim))
            if finished >= len(ids):
                return
            time.sleep(0.125)


def _frame(view, running, events, finished, total, started, victim) -> RenderableType:  # type: ignore[no-untyped-def]
    from shoal.observer.terminal import build_overview

    lines = Text()
    for event in events[-6:]:
        stamp = time.strftime("%H:%M:%S", time.localtime(event.at))
        lines.append(f"{stamp} ", style="dim")
        lines.append(
            _describe(event) + "\n", style="red" if event.to_state is NodeState.DEAD else ""
        )
    note = f"{finished}/{total} jobs finished · {time.monotonic() - started:.1f}s"
    if victim and victim.killed_at:
        note += (
            f" · {victim.name} killed with SIGKILL {time.monotonic() - victim.killed_at:.1f}s ago"
        )
    return Group(
        build_overview(view, running, title="Shoal demo"),
        Panel(lines, title="what changed", title_align="left"),
        Text(note, style="bold"),
    )


def _already_used(store: Store) -> str:
    """What an earlier run left in the datastore ("12 jobs", "2 nodes"), "" if nothing: the
    demo counts, kills and judges what it finds, so it runs only on a datastore of its own."""
    jobs = sum(store.count_jobs_by_task().values())
    nodes = len(store.read_cluster().nodes)
    found = [f"{jobs} jobs" if jobs else "", f"{nodes} nodes" if nodes else ""]
    return " and ".join(part for part in found if part)


def _describe(event: HistoryEvent) -> str:
    if event.kind is EventKind.REBALANCE:
        return f"rebalance (epoch {event.epoch}): {event.reason}"
    if event.kind is EventKind.NODE_STATE:
        was = event.from_state.value if event.from_state else "new"
        now = event.to_state.value if event.to_state else "?"
        return f"{event.node_name}: {was} → {now} ({event.reason})"
    return f"{event.node_name}: {event.reason}" if event.node_name else event.reason


def _summary(
    store: Store,
    ids: list[int],
    cluster: list[DemoNode],
    victim: DemoNode | None,
    elapsed_s: float,
    console: Console,
) -> bool:
    jobs = [store.read_job(i) for i in ids]
    states = {s: sum(1 for j in jobs if j and j.state is s) for s in JobState}
    retried = sum(1 for j in jobs if j and j.attempts > 1)
    view = store.read_cluster(dead_window_s=3600)
    console.print()
    table = Table(title=f"Summary · {len(ids)} jobs in {elapsed_s:.1f}s")
    table.add_column("node")
    table.add_column("state")
    table.add_column("jobs done", justify="right")
    for node in view.nodes:
        if node.name.startswith("demo-"):
            table.add_row(node.name, node.state.value, str(node.processed))
    console.print(table)
    lost = [i for i, j in zip(ids, jobs, strict=True) if j is None or not j.state.is_final]
    console.print(
        "  ".join(f"{s.value} {n}" for s, n in states.items() if n)
        + f" · {retried} ran more than once (requeued or retried)"
    )
    if victim and victim.killed_at:
        deaths = [
            e
            for e in store.read_history(0)
            if e.kind is EventKind.NODE_STATE
            and e.node_name == victim.name
            and e.to_state is NodeState.DEAD
        ]
        if deaths and victim.killed_at_db is not None:
            console.print(
                f"{victim.name} was killed with SIGKILL; {deaths[0].at - victim.killed_at_db:.1f}s "
                "later the cluster declared it dead (lease expired), requeued its running jobs "
                "and moved its section to the live nodes."
            )
    verdict = "no job lost, each recorded exactly once" if not lost else f"{len(lost)} unfinished"
    console.print(f"[bold {'green' if not lost else 'red'}]{verdict}[/]")
    return not lost


def _stop(cluster: list[DemoNode]) -> None:
    for node in cluster:
        if node.process.poll() is None:
            node.process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 10
    for node in cluster:
        try:
            node.process.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            os.killpg(node.process.pid, signal.SIGKILL)
            node.process.wait()
