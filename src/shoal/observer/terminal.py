"""The cluster in a terminal: `shoal status`, `shoal top` and the demo's live view.

All three draw one renderable, `render_status`, from the observer's `Status` view, and
`status_document` is what `shoal status --json` prints of the same view, so the terminal and the
JSON API cannot drift apart. Text from the datastore goes to rich as `Text` through `printable`:
never markup, never a control sequence. `run_top` reads once per refresh and redraws until Ctrl-C.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from shoal.errors import ShoalError
from shoal.model import ClusterView, Job, JobState, NodeState
from shoal.observer.format import brief_ranges, format_age, printable
from shoal.observer.views import NodeView, RunningJob, Status, read_status, status_of
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
    JobState.CLAIMED: "cyan",
    JobState.RUNNING: "green",
    JobState.SUCCEEDED: "bright_green",
    JobState.FAILED: "red",
    JobState.CANCELLED: "dim",
}
MAX_RUNNING_SHOWN = 12


def data(text: str, style: str = "") -> Text:
    """A string from the datastore as rich `Text`: shown as written, control characters escaped."""
    return Text(printable(text), style=style)


def build_overview(
    view: ClusterView, running: Sequence[Job], title: str = "Shoal"
) -> RenderableType:
    """`render_status` of data already read, for the demo, which holds its own ClusterView."""
    return render_status(status_of(view, running, datastore=""), title)


def render_status(status: Status, title: str = "Shoal") -> RenderableType:
    """The nodes table, the running jobs with progress bars, and the job counts by state.

    Every string that comes from the datastore goes through `data`, never into markup, so a node
    name containing `[/]` or an escape sequence is shown as written, escaped.
    """
    live = sum(1 for node in status.nodes if node.state is not NodeState.DEAD)
    header = Text.assemble(
        (printable(title), "bold"),
        f"  {status.partitions} partitions · epoch {status.epoch} · {live} live node",
        "" if live == 1 else "s",
    )
    parts: list[RenderableType] = [header, _nodes_table(status), _running_table(status)]
    if status.limits:
        parts.append(_limits_table(status))
    return Group(*parts, _queue_line(status))


def status_document(status: Status) -> dict[str, Any]:
    """What `shoal status --json` prints: partitions, epoch, nodes, job counts by state and the
    task limits with their use."""
    return {
        "partitions": status.partitions,
        "epoch": status.epoch,
        "nodes": [_node_document(node) for node in status.nodes],
        "jobs": status.jobs_by_state,
        "limits": [
            {
                "task": use.limit.task,
                "max_running": use.limit.max_running,
                "max_per_s": use.limit.max_per_s,
                "running": use.running,
                "recent_starts": use.recent_starts,
            }
            for use in status.limits
        ],
    }


def _node_document(node: NodeView) -> dict[str, Any]:
    return {
        "id": node.id,
        "name": node.name,
        "state": node.state.value,
        "section": node.section,
        "host": node.host,
        "pid": node.pid,
        "heartbeat_age_s": round(node.heartbeat_age_s, 3),
        "running": node.running,
        "processed": node.processed,
        "failed": node.failed,
        "pause_requested": node.pause_requested,
        "concurrency": node.concurrency,
        "free_slots": node.free_slots,
        "backlog": node.backlog,
    }


def _nodes_table(status: Status) -> Table:
    table = Table(title="Nodes", title_justify="left", expand=True, show_edge=False)
    for name, justify in (
        ("id", "right"),
        ("name", "left"),
        ("state", "left"),
        ("section", "left"),
        ("heartbeat", "right"),
        ("running", "right"),
        ("free", "right"),
        ("backlog", "right"),
        ("done/failed", "right"),
    ):
        is_section = name == "section"
        # A long node name wraps rather than squeezing the section out of a narrow terminal.
        table.add_column(
            name,
            justify=justify,  # type: ignore[arg-type]
            no_wrap=name not in ("section", "name"),
            overflow="fold",
            ratio=1 if is_section else None,
            width=12 if is_section else None,  # with a ratio, the least it gets
        )
    for node in status.nodes:
        state = Text(node.state.value, style=STATE_STYLES[node.state])
        if node.pause_requested and node.state is not NodeState.PAUSED:
            state.append(" (pausing)", style="yellow")
        section = Text(f"{len(node.section):>3}  ", style="bold")
        section.append(brief_ranges(node.section) or "—", style="dim")
        is_live = node.state is not NodeState.DEAD
        table.add_row(
            str(node.id),
            data(node.name),
            state,
            section,
            format_age(node.heartbeat_age_s) if is_live else "—",
            str(node.running),
            str(node.free_slots) if is_live else "—",
            Text(str(node.backlog), style="yellow" if node.backlog and not node.free_slots else ""),
            Text.assemble(
                str(node.processed), "/", (str(node.failed), "red" if node.failed else "")
            ),
        )
    if not status.nodes:
        table.add_row("", Text("no nodes yet", style="dim"), "", "", "", "", "", "", "")
    return table


def _running_message(job: RunningJob) -> Text:
    """The progress message, after a mark when the job is being cancelled."""
    message = data(job.progress_message or "", style="dim")
    if not job.cancel_requested:
        return message
    return Text.assemble(Text("cancel requested ", style="bold red"), message)


def _limits_table(status: Status) -> Table:
    """Each limited task: its limits and how much of them is in use now."""
    table = Table(title="Task limits", title_justify="left", expand=True, show_edge=False)
    table.add_column("task", no_wrap=True, max_width=28)
    table.add_column("running / max", justify="right", no_wrap=True)
    table.add_column("starts in window / max per s", justify="right", no_wrap=True)
    for use in status.limits:
        limit = use.limit
        full = limit.max_running is not None and use.running >= limit.max_running
        running = f"{use.running} / {limit.max_running if limit.max_running else '—'}"
        rate = "—" if limit.max_per_s is None else f"{use.recent_starts} / {limit.max_per_s:g}"
        table.add_row(data(limit.task), Text(running, style="yellow" if full else ""), rate)
    return table


def _running_table(status: Status) -> Table:
    names = {node.id: node.name for node in status.nodes}
    table = Table(title="Running jobs", title_justify="left", expand=True, show_edge=False)
    table.add_column("job", justify="right", no_wrap=True)
    table.add_column("task", no_wrap=True, max_width=28)
    table.add_column("node", no_wrap=True, max_width=16)
    table.add_column("progress", ratio=1, min_width=10)
    table.add_column("", justify="right", no_wrap=True)
    table.add_column("message", ratio=1, no_wrap=True, overflow="ellipsis")
    running = status.running_jobs
    for job in running[:MAX_RUNNING_SHOWN]:
        node = "—" if job.node_id is None else names.get(job.node_id, str(job.node_id))
        table.add_row(
            str(job.id),
            data(job.task),
            data(node),
            ProgressBar(total=1.0, completed=job.progress),
            f"{job.progress:4.0%}",
            _running_message(job),
        )
    if len(running) > MAX_RUNNING_SHOWN:
        more = len(running) - MAX_RUNNING_SHOWN
        table.add_row("", Text(f"… and {more} more", style="dim"), "", "", "", "")
    if not running:
        table.add_row("", Text("nothing running", style="dim"), "", "", "", "")
    return table


def _queue_line(status: Status) -> Text:
    line = Text("Jobs  ", style="bold")
    for state in JobState:
        line.append(f"{state.value} ", style=JOB_STATE_STYLES[state])
        line.append(f"{status.jobs_by_state.get(state.value, 0)}   ", style="bold")
    if status.oldest_queued_age_s is not None:
        line.append(f"oldest queued {format_age(status.oldest_queued_age_s)}", style="dim")
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
                    status = read_status(store, running_limit=50)
                    last = render_status(status, title=f"Shoal · {status.datastore}")
                    live.update(last, refresh=True)
                except ShoalError as exc:
                    error = Text(f"datastore error: {printable(str(exc))}", style="red")
                    live.update(Group(last, error), refresh=True)
                time.sleep(refresh_s)
    except KeyboardInterrupt:
        pass
