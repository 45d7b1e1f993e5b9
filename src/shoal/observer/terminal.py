"""The cluster in a terminal: `shoal status`, `shoal top` and the demo's live view.

All three draw one renderable, `render_status`, from the observer's `Status` view, and
`status_document` is what `shoal status --json` prints of the same view, so the terminal and the
JSON API cannot drift apart. Text from the datastore goes to rich as `Text` through `printable`:
never markup, never a control sequence. `run_top` reads once per refresh and redraws until Ctrl-C.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from rich.cells import cell_len
from rich.console import Console, ConsoleOptions, Group, JustifyMethod, RenderableType, RenderResult
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
# The nodes table's columns: header, header in a narrow terminal, justification. The short
# headers are what lets all nine fit in 80 columns beside a readable id and name.
NODE_COLUMNS: tuple[tuple[str, str, JustifyMethod], ...] = (
    ("id", "id", "right"),
    ("name", "name", "left"),
    ("state", "state", "left"),
    ("section", "section", "left"),
    ("heartbeat", "beat", "right"),
    ("running", "run", "right"),
    ("free", "free", "right"),
    ("backlog", "backlog", "right"),
    ("done/failed", "done/fail", "right"),
)
ID, NAME, STATE, SECTION = 0, 1, 2, 3
NAME_LEAST = 12  # a name cut to this still tells nodes apart ("worker-eu-w…")
SECTION_LEAST = 12  # the section's size and its first range or two
MOST_RANGE_CHARS = 40  # a whole section is on the partition map; a row shows its start


def data(text: str, style: str = "") -> Text:
    """A string from the datastore as rich `Text`: shown as written, control characters escaped."""
    return Text(printable(text), style=style)


def build_overview(
    view: ClusterView, running: Sequence[Job], title: str = "Shoal"
) -> RenderableType:
    """`render_status` of data already read, for the demo, which holds its own ClusterView."""
    return render_status(status_of(view, running, datastore=""), title)


def render_status(status: Status, title: str = "Shoal") -> RenderableType:
    """The nodes table, the running jobs with progress bars, and the job counts by state, laid
    out for the width they are drawn at (`StatusView`).

    Every string that comes from the datastore goes through `data`, never into markup, so a node
    name containing `[/]` or an escape sequence is shown as written, escaped.
    """
    return StatusView(status, title)


class StatusView:
    """`render_status`'s renderable. Its tables are built when rich draws it, for the width it
    has then: when the nodes table fits with every name whole, it has its full headers and rules;
    in a narrower terminal (80 columns) short headers and no rules leave the id and the name
    readable, the name cut with "…" if it must be, and the section's ranges shortened to fit.
    """

    def __init__(self, status: Status, title: str) -> None:
        self.status = status
        self.title = title

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        status = self.status
        live = sum(1 for node in status.nodes if node.state is not NodeState.DEAD)
        yield Text.assemble(
            (printable(self.title), "bold"),
            f"  {status.partitions} partitions · epoch {status.epoch} · {live} live node",
            "" if live == 1 else "s",
        )
        nodes = _node_layout(status, options.max_width)
        yield _nodes_table(status, nodes)
        yield _running_table(status, nodes.narrow)
        if status.limits:
            yield _limits_table(status, nodes.narrow)
        yield _queue_line(status)


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


@dataclass(frozen=True)
class NodeLayout:
    """The nodes table at one width: short headers or full ones, and each column's width (the
    section's is the least it gets: what the others leave)."""

    narrow: bool
    widths: tuple[int, ...]


def _node_layout(status: Status, width: int) -> NodeLayout:
    """Full headers if every name then fits whole beside a readable section, else the short ones
    (with which the state may wrap). Either way the name gets what the section's least leaves
    it, but at least NAME_LEAST characters, before the section gets any less."""
    rows = [_node_cells(node) for node in status.nodes] or [_empty_node_cells()]
    narrow = False
    widths, room = _natural_widths(rows, width, narrow)
    if room < widths[NAME] + SECTION_LEAST:
        narrow = True
        widths, room = _natural_widths(rows, width, narrow)
    widths[NAME] = max(min(widths[NAME], NAME_LEAST), min(widths[NAME], room - SECTION_LEAST))
    widths[SECTION] = max(1, room - widths[NAME])
    return NodeLayout(narrow, tuple(widths))


def _natural_widths(rows: list[list[Text]], width: int, narrow: bool) -> tuple[list[int], int]:
    """Each column's width for its header and cells (a narrow state column: its longest word),
    and the room that the other columns and the table's rules leave the name and the section."""
    widths = []
    for i, (header, short, _) in enumerate(NODE_COLUMNS):
        cells = [row[i].plain for row in rows]
        if narrow and i == STATE:
            cells = [word for cell in cells for word in cell.split()]
        widths.append(max(cell_len(text) for text in [short if narrow else header, *cells]))
    # Padding of one each side, less the outer edges when narrow; else rules between columns.
    rules = 2 * len(NODE_COLUMNS) - 2 if narrow else 3 * len(NODE_COLUMNS) - 1
    others = sum(w for i, w in enumerate(widths) if i not in (NAME, SECTION))
    return widths, width - rules - others


def _nodes_table(status: Status, layout: NodeLayout) -> Table:
    table = _table("Nodes", layout.narrow)
    for i, (header, short, justify) in enumerate(NODE_COLUMNS):
        width = layout.widths[i]
        if i == SECTION:  # takes what is left; its ranges are cut to fit (below)
            table.add_column(header, ratio=1, width=width, overflow="fold")
        elif i in (ID, NAME):
            # Held at their width even where nothing fits (rich then squeezes the others): an
            # id and a name, cut with "…", are what tells the rows apart.
            table.add_column(
                header, justify=justify, min_width=width, max_width=width, no_wrap=True
            )
        else:  # only the state may wrap ("working (pausing)")
            table.add_column(
                short if layout.narrow else header,
                justify=justify,
                width=width,
                no_wrap=i != STATE,
                overflow="fold",
            )
    for node in status.nodes:
        row = _node_cells(node)
        size = f"{len(node.section):>3}  "
        most = min(MOST_RANGE_CHARS, layout.widths[SECTION] - len(size))
        row[SECTION] = Text(size, style="bold")
        row[SECTION].append(brief_ranges(node.section, most) or "—", style="dim")
        table.add_row(*row)
    if not status.nodes:
        table.add_row(*_empty_node_cells())
    return table


def _node_cells(node: NodeView) -> list[Text]:
    """A node's row, but for its section, which is cut to the width it gets."""
    state = Text(node.state.value, style=STATE_STYLES[node.state])
    if node.pause_requested and node.state is not NodeState.PAUSED:
        state.append(" (pausing)", style="yellow")
    is_live = node.state is not NodeState.DEAD
    return [
        Text(str(node.id)),
        data(node.name),
        state,
        Text(""),
        Text(format_age(node.heartbeat_age_s) if is_live else "—"),
        Text(str(node.running)),
        Text(str(node.free_slots) if is_live else "—"),
        Text(str(node.backlog), style="yellow" if node.backlog and not node.free_slots else ""),
        Text.assemble(str(node.processed), "/", (str(node.failed), "red" if node.failed else "")),
    ]


def _empty_node_cells() -> list[Text]:
    return [Text(""), Text("no nodes yet", style="dim"), *[Text("") for _ in range(7)]]


def _table(title: str, narrow: bool) -> Table:
    """A titled table across the width; in a narrow terminal without rules, which would take
    the room of the columns (26 of 80 characters for the nodes table's nine)."""
    if narrow:
        return Table(
            title=title, title_justify="left", expand=True, box=None, padding=(0, 1), pad_edge=False
        )
    return Table(title=title, title_justify="left", expand=True, show_edge=False)


def _running_message(job: RunningJob) -> Text:
    """The progress message, after a mark when the job is being cancelled."""
    message = data(job.progress_message or "", style="dim")
    if not job.cancel_requested:
        return message
    return Text.assemble(Text("cancel requested ", style="bold red"), message)


def _limits_table(status: Status, narrow: bool) -> Table:
    """Each limited task: its limits and how much of them is in use now."""
    table = _table("Task limits", narrow)
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


def _running_table(status: Status, narrow: bool) -> Table:
    names = {node.id: node.name for node in status.nodes}
    table = _table("Running jobs", narrow)
    table.add_column("job", justify="right", no_wrap=True)
    table.add_column("task", no_wrap=True, max_width=28)
    table.add_column("node", no_wrap=True, max_width=16)
    table.add_column("progress", ratio=1, min_width=10)
    table.add_column("%", justify="right", no_wrap=True)
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
