"""The cluster overview in a terminal, drawn with rich: `shoal top` and the demo's live view.

`build_overview` is pure (a ClusterView and the running jobs in, a renderable out) so the demo can
draw it from data it already holds; `run_top` reads the datastore once per refresh and redraws
until Ctrl-C.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from shoal.errors import ShoalError
from shoal.model import ClusterView, Job, JobFilter, JobState, NodeState
from shoal.observer.format import compact_ranges, format_age
from shoal.store.port import Store

STATE_STYLES: dict[NodeState, str] = {
    NodeState.INITIALIZING: "cyan",
    NodeState.WAITING: "blue",
    NodeState.WORKING: "green",
    NodeState.PAUSED: "yellow",
    NodeState.DEAD: "red",
}
JOB_STATE_STYLES: dict[JobState, str] = {
    JobState.QUEUED: "blue",
    JobState.RUNNING: "green",
    JobState.SUCCEEDED: "bright_green",
    JobState.FAILED: "red",
    JobState.CANCELLED: "dim",
}
MAX_RUNNING_SHOWN = 12


def build_overview(
    view: ClusterView, running: Sequence[Job], title: str = "Shoal"
) -> RenderableType:
    """The nodes table, the running jobs with progress bars, and the job counts by state.

    Every string that comes from the datastore goes into `Text` objects, never into markup, so a
    node name or task name containing `[bold]` is shown as written.
    """
    live = sum(1 for node in view.nodes if node.is_live)
    header = Text.assemble(
        (title, "bold"),
        f"  {view.partitions} partitions · epoch {view.epoch} · {live} live node",
        "" if live == 1 else "s",
    )
    return Group(header, _nodes_table(view), _running_table(view, running), _queue_line(view))


def _nodes_table(view: ClusterView) -> Table:
    table = Table(title="Nodes", title_justify="left", expand=True, show_edge=False)
    for name, justify in (
        ("id", "right"),
        ("name", "left"),
        ("state", "left"),
        ("section", "left"),
        ("heartbeat", "right"),
        ("running", "right"),
        ("done/failed", "right"),
    ):
        is_section = name == "section"
        table.add_column(
            name,
            justify=justify,  # type: ignore[arg-type]
            no_wrap=not is_section,
            ratio=1 if is_section else None,
        )
    for node in sorted(view.nodes, key=lambda n: (not n.is_live, n.id)):
        state = Text(node.state.value, style=STATE_STYLES[node.state])
        if node.pause_requested and node.state is not NodeState.PAUSED:
            state.append(" (pausing)", style="yellow")
        section = Text(f"{len(node.section):>3}  ", style="bold")
        section.append(compact_ranges(node.section) or "—", style="dim")
        table.add_row(
            str(node.id),
            Text(node.name),
            state,
            section,
            format_age(view.now - node.heartbeat_at) if node.is_live else "—",
            str(node.running),
            Text.assemble(
                str(node.processed), "/", (str(node.failed), "red" if node.failed else "")
            ),
        )
    if not view.nodes:
        table.add_row("", Text("no nodes yet", style="dim"), "", "", "", "", "")
    return table


def _running_table(view: ClusterView, running: Sequence[Job]) -> Table:
    names = {node.id: node.name for node in view.nodes}
    table = Table(title="Running jobs", title_justify="left", expand=True, show_edge=False)
    table.add_column("job", justify="right", no_wrap=True)
    table.add_column("task", no_wrap=True, max_width=28)
    table.add_column("node", no_wrap=True, max_width=16)
    table.add_column("progress", ratio=1, min_width=10)
    table.add_column("", justify="right", no_wrap=True)
    table.add_column("message", ratio=1, no_wrap=True, overflow="ellipsis")
    for job in running[:MAX_RUNNING_SHOWN]:
        fraction = min(max(job.progress, 0.0), 1.0)
        node = names.get(job.claimer, str(job.claimer)) if job.claimer is not None else "—"
        table.add_row(
            str(job.id),
            Text(job.task),
            Text(node),
            ProgressBar(total=1.0, completed=fraction),
            f"{fraction:4.0%}",
            Text(job.progress_message or "", style="dim"),
        )
    if len(running) > MAX_RUNNING_SHOWN:
        more = len(running) - MAX_RUNNING_SHOWN
        table.add_row("", Text(f"… and {more} more", style="dim"), "", "", "", "")
    if not running:
        table.add_row("", Text("nothing running", style="dim"), "", "", "", "")
    return table


def _queue_line(view: ClusterView) -> Text:
    line = Text("Jobs  ", style="bold")
    for state in JobState:
        line.append(f"{state.value} ", style=JOB_STATE_STYLES[state])
        line.append(f"{view.job_counts.get(state, 0)}   ", style="bold")
    if view.oldest_queued_age_s is not None:
        line.append(f"oldest queued {format_age(view.oldest_queued_age_s)}", style="dim")
    return line


def run_top(store: Store, refresh_s: float = 1.0) -> None:
    """Redraw the overview every `refresh_s` seconds until Ctrl-C; only ever reads the store.

    A datastore error (say, a failover in progress) is shown under the last good view and the
    loop carries on, as `top` would, instead of exiting.
    """
    console = Console()
    last: RenderableType = Text("connecting…", style="dim")
    try:
        with Live(last, console=console, screen=True, auto_refresh=False) as live:
            while True:
                try:
                    view = store.read_cluster()
                    running = store.list_jobs(JobFilter(state=JobState.RUNNING), limit=50)
                    last = build_overview(view, running, title=f"Shoal · {store.url_for_display}")
                    live.update(last, refresh=True)
                except ShoalError as exc:
                    live.update(
                        Group(last, Text(f"datastore error: {exc}", style="red")), refresh=True
                    )
                time.sleep(refresh_s)
    except KeyboardInterrupt:
        pass
