"""`shoal top` and the demo's view: the rich overview drawn from a real store."""

from __future__ import annotations

import re

import pytest
from rich.console import Console

from shoal.model import JobFilter, JobState, NewJob, NodeState, TaskLimit
from shoal.observer import terminal
from shoal.observer.format import brief_ranges, compact_ranges, format_age, format_moment
from shoal.observer.schedules import local_time
from shoal.observer.views import read_status
from shoal.store import Store

from cluster import Cluster, submit


def draw(store: Store, width: int = 140) -> str:
    view = store.read_cluster()
    running = store.list_jobs(JobFilter(state=JobState.RUNNING))
    console = Console(width=width, record=True, color_system=None)
    console.print(terminal.build_overview(view, running, title="Test cluster"))
    return console.export_text()


def test_overview_shows_nodes_sections_running_jobs_and_counts(obs_store: Store, cluster: Cluster):
    alpha = cluster.start("alpha", concurrency=1)
    cluster.pause(cluster.start("beta"))
    submit(obs_store, "resize", "a.png", count=5)
    [job] = cluster.running(alpha, 1)
    cluster.progress(job.id, 0.5, "halfway there")

    text = draw(obs_store)

    assert "Test cluster" in text and "32 partitions" in text
    assert "alpha" in text and "working" in text and "0-31" in text
    assert "beta" in text and "paused" in text
    assert "halfway there" in text and "50%" in text
    assert "queued 4" in text and "running 1" in text


def test_markup_in_datastore_strings_is_shown_as_written(obs_store: Store, cluster: Cluster):
    alpha = cluster.start("[bold red]alpha[/]")
    submit(obs_store, "[blink]resize", "a.png")
    [job] = cluster.running(alpha, 1)
    cluster.progress(job.id, 0.1, "[link=http://x]click[/link]")

    text = draw(obs_store)

    assert "[bold red]alpha[/]" in text
    assert "[blink]resize" in text
    assert "[link=http://x]click[/link]" in text


def test_run_top_redraws_until_ctrl_c(
    obs_store: Store, cluster: Cluster, monkeypatch: pytest.MonkeyPatch
):
    cluster.start("alpha")
    redraws = []

    def interrupt_on_third(_seconds: float) -> None:
        redraws.append(1)
        if len(redraws) == 3:
            raise KeyboardInterrupt

    monkeypatch.setattr(terminal.time, "sleep", interrupt_on_third)
    terminal.run_top(obs_store, refresh_s=0.01)  # returns instead of raising
    assert len(redraws) == 3


@pytest.mark.parametrize(
    ("section", "text"),
    [((), ""), ((3,), "3"), ((0, 1, 2, 5, 7, 8), "0-2, 5, 7-8"), ((9, 8, 7), "7-9")],
)
def test_compact_ranges(section: tuple[int, ...], text: str):
    assert compact_ranges(section) == text


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(-1, "0.0s"), (0.42, "0.4s"), (12.4, "12s"), (185, "3m05s"), (7800, "2h10m"), (97200, "1d3h")],
)
def test_format_age(seconds: float, text: str):
    assert format_age(seconds) == text


@pytest.mark.parametrize(
    ("at", "text"),
    [
        (None, "—"),
        (0.0, "1970-01-01 00:00:00 UTC"),
        (253402300799.0, "9999-12-31 23:59:59 UTC"),
        (253402300800.0, "beyond year 9999"),
        (3e11, "beyond year 9999"),
        (1e17, "beyond year 9999"),  # past the platform's time_t: OSError EOVERFLOW
        (1e300, "beyond year 9999"),  # past a C long: OverflowError
        (float("inf"), "beyond year 9999"),
        (-1e17, "before year 1"),
        (float("nan"), "not a time"),
    ],
)
def test_format_moment_says_in_words_what_no_calendar_date_shows(at: float | None, text: str):
    assert format_moment(at) == text


def test_a_schedule_time_past_the_calendar_is_said_in_words():
    assert local_time(0.0, "Europe/Paris") == "1970-01-01 01:00:00 CET"
    # In UTC the last second of 9999; in Paris it is already year 10000.
    assert local_time(253402300799.0, "Europe/Paris") == "beyond year 9999"
    assert local_time(1e300, "Nowhere/Atlantis") == "beyond year 9999"


def test_top_shows_hostile_names_escaped_and_never_as_markup(obs_store: Store):
    names = ("x[/]", "esc\x1b[2J\x1b]0;owned\x07", "cr\rover")
    for name in names:
        node = obs_store.register_node(name, "host", 1, 2, ["t"], 30.0)
        assert obs_store.set_node_state(node.id, NodeState.INITIALIZING, NodeState.WAITING)
    console = Console(width=200, record=True, color_system=None)
    console.print(terminal.render_status(read_status(obs_store), title="top"))
    text = console.export_text()

    assert "x[/]" in text
    assert "esc\\x1b[2J\\x1b]0;owned\\x07" in text
    assert "cr\\x0dover" in text
    assert "\x1b" not in text and "\r" not in text


def test_top_and_status_draw_one_view(obs_store: Store):
    node = obs_store.register_node("alpha", "host", 1, 2, ["t"], 30.0)
    assert obs_store.set_node_state(node.id, NodeState.INITIALIZING, NodeState.WAITING)
    status = read_status(obs_store)
    document = terminal.status_document(status)
    [shown] = document["nodes"]
    [viewed] = status.nodes
    assert (shown["name"], shown["section"], shown["state"]) == (
        viewed.name,
        viewed.section,
        viewed.state.value,
    )
    assert document["jobs"] == status.jobs_by_state


def test_status_shows_each_task_limit_and_its_use(obs_store: Store):
    limits = [TaskLimit("x[/red]\x1b[2J", 2, None), TaskLimit("mail", None, 5.0)]
    node = obs_store.register_node("alpha", "host", 1, 4, ["mail", "x[/red]\x1b[2J"], 30.0, limits)
    assert obs_store.set_node_state(node.id, NodeState.INITIALIZING, NodeState.WAITING)
    obs_store.submit_jobs([NewJob("mail", "[]", "{}") for _ in range(3)])
    assert len(obs_store.claim_jobs(node.id, 4)) == 3
    status = read_status(obs_store)
    console = Console(width=140, record=True, color_system=None)
    console.print(terminal.render_status(status))
    text = console.export_text()
    assert "Task limits" in text and "3 / 5" in text and "0 / 2" in text
    assert "x[/red]\\x1b[2J" in text and "\x1b" not in text  # a task name is data, not markup
    assert terminal.status_document(status)["limits"] == [
        {"task": "mail", "max_running": None, "max_per_s": 5.0, "running": 3, "recent_starts": 3},
        {
            "task": "x[/red]\x1b[2J",
            "max_running": 2,
            "max_per_s": None,
            "running": 0,
            "recent_starts": 0,
        },
    ]


LONG_NAME = "worker-eu-west-1a-very-long-hostname-7"
LONG_TASK = "resize_images_for_the_catalogue"
NODE_HEADERS = {
    160: [
        "id",
        "name",
        "state",
        "section",
        "heartbeat",
        "running",
        "free",
        "backlog",
        "done/failed",
    ],
    80: ["id", "name", "state", "section", "beat", "run", "free", "backlog", "done/fail"],
}
JOB_HEADERS = ["job", "task", "node", "progress", "%", "message"]


def stretching_cluster(store: Store) -> list[tuple[int, str]]:
    """Nodes whose rows stretch a table: a long name asked to pause, one still initializing,
    one whose name is markup; a running job of a long-named task. Returns (id, name) of each."""
    limits = [TaskLimit(LONG_TASK, 3, 2.5)]
    nodes = [
        store.register_node(name, "host", 1, 4, [LONG_TASK], 30.0, limits)
        for name in (LONG_NAME, "beta", "[red]gamma[/]")
    ]
    for node in (nodes[0], nodes[2]):
        assert store.set_node_state(node.id, NodeState.INITIALIZING, NodeState.WAITING)
    store.request_pause(str(nodes[0].id), True)
    store.submit_jobs([NewJob(LONG_TASK, "[]", "{}")] * 6)
    for node in nodes:
        store.claim_jobs(node.id, 1)
    return [(node.id, node.name) for node in nodes]


def headers(line: str) -> list[str]:
    return re.sub("[┃│]", " ", line).split()


def table_lines(lines: list[str], title: str, next_title: str) -> list[str]:
    start = next(i for i, line in enumerate(lines) if line.strip() == title)
    end = next(i for i, line in enumerate(lines) if line.strip() == next_title)
    return lines[start + 1 : end]


@pytest.mark.parametrize("width", [80, 160])
@pytest.mark.parametrize("is_terminal", [False, True], ids=["file", "terminal"])
def test_status_keeps_ids_and_names_readable_and_heads_every_column(
    obs_store: Store, width: int, is_terminal: bool
):
    nodes = stretching_cluster(obs_store)
    console = Console(
        width=width,
        record=True,
        force_terminal=is_terminal,
        color_system="truecolor" if is_terminal else None,
    )
    console.print(terminal.render_status(read_status(obs_store), title="t"))
    lines = console.export_text().splitlines()
    node_lines = table_lines(lines, "Nodes", "Running jobs")
    job_lines = table_lines(lines, "Running jobs", "Task limits")

    assert all(len(line.rstrip()) <= width for line in lines)
    assert headers(node_lines[0]) == NODE_HEADERS[width]
    assert headers(job_lines[0]) == JOB_HEADERS
    for node_id, name in nodes:
        [row] = [line for line in node_lines if re.match(rf" *{node_id} ", line)]
        shown = headers(row)[1]
        if width == 160 or len(name) <= 12:
            assert shown == name, row
        else:  # cut, with an ellipsis, to a dozen characters at least
            assert len(shown) >= 12 and shown.endswith("…") and name.startswith(shown[:-1]), row
    [gamma] = [line for line in node_lines if "gamma" in line]
    assert re.search(r" 32  0-31 ", gamma)  # the section's size and ranges
    assert "waiting" in "".join(node_lines) and "(pausing)" in "".join(node_lines)


@pytest.mark.parametrize(
    ("most_chars", "text"), [(40, "0-41, 96-99"), (10, "0-41, …"), (6, "…"), (3, "…")]
)
def test_brief_ranges_fit_in_the_room_given(most_chars: int, text: str):
    assert brief_ranges([*range(42), *range(96, 100)], most_chars) == text
