"""The `shoal` command: parse options, build settings, call into the package.

Every command takes the datastore from `--db URL` or SHOAL_DB (default sqlite:///shoal.db).
Errors Shoal raises on purpose are printed as one clear line with a non-zero exit, never a
traceback.
"""

from __future__ import annotations

import json
import logging
import signal
import sys
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

import click
from rich.console import Console
from rich.table import Table

from shoal.app import DEFAULT_MAX_PAYLOAD_BYTES, DEFAULT_RETRIES, encode_json, load_app
from shoal.assignment import format_section
from shoal.errors import PayloadError, ShoalError, UnknownTask
from shoal.model import JobState, NewJob, NodeState
from shoal.store import DEFAULT_PARTITIONS, Store, open_store

if TYPE_CHECKING:
    from shoal.node import Node

DB_HELP = "Datastore URL: sqlite:///path.db (default sqlite:///shoal.db) or postgresql://..."


class ShoalGroup(click.Group):
    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ShoalError as exc:
            raise click.ClickException(str(exc)) from None


def db_option(fn: Any) -> Any:
    return click.option("--db", envvar="SHOAL_DB", metavar="URL", help=DB_HELP)(fn)


def open_existing(db: str | None) -> Store:
    return open_store(db, create=False)


@click.group(cls=ShoalGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="shoal")
def cli() -> None:
    """Shoal: a distributed job queue.

    Processor nodes share one datastore; each job gets a sequential id, and the id's partition
    decides which node runs it. Start with `shoal demo`, then `shoal node --app mytasks:app`.
    """


@cli.command()
@db_option
@click.option(
    "--partitions",
    type=click.IntRange(1, 65536),
    default=DEFAULT_PARTITIONS,
    show_default=True,
    help="Partition count P, fixed for the life of the datastore; must exceed the most nodes.",
)
def init(db: str | None, partitions: int) -> None:
    """Create or migrate the datastore schema."""
    store = open_store(db)
    store.initialize(partitions)
    actual = store.read_cluster().partitions  # P is fixed at the first init
    click.echo(f"datastore ready: {store.url_for_display} ({actual} partitions)")


@cli.command()
@db_option
@click.option(
    "--app",
    "app_spec",
    required=True,
    metavar="MODULE:ATTR",
    help="Where your tasks are registered, e.g. mytasks:app.",
)
@click.option(
    "--concurrency",
    "-c",
    type=click.IntRange(1, 1024),
    default=4,
    show_default=True,
    help="Jobs run at once by this node.",
)
@click.option("--name", help="Node name, unique among live nodes (default HOST-PID).")
@click.option(
    "--pool",
    type=click.Choice(["thread", "process"]),
    default="thread",
    show_default=True,
    help="Run tasks in threads, or in processes for CPU-bound work.",
)
@click.option(
    "--lease-s",
    type=click.FloatRange(1.0),
    default=5.0,
    show_default=True,
    help="A node silent this long is declared dead and its jobs requeued.",
)
@click.option(
    "--grace-s",
    type=click.FloatRange(0.0),
    default=30.0,
    show_default=True,
    help="On SIGTERM, how long to let in-flight jobs finish before releasing them.",
)
@click.option("--verbose", "-v", is_flag=True, help="Log debug detail.")
def node(
    db: str | None,
    app_spec: str,
    concurrency: int,
    name: str | None,
    pool: str,
    lease_s: float,
    grace_s: float,
    verbose: bool,
) -> None:
    """Run one processor node until SIGTERM or Ctrl-C.

    The node registers, takes a section of the partitions, claims queued jobs of its section,
    runs them and records their outcomes. SIGTERM drains in-flight jobs (up to --grace-s), then
    leaves cleanly; a second SIGTERM leaves at once, releasing unfinished jobs to the queue.
    """
    from shoal.node import Node, NodeConfig

    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
    )
    app = load_app(app_spec)
    store = open_store(db or app.db_url)
    store.check_schema()
    app.use_store(store)
    settings: dict[str, Any] = {
        "concurrency": concurrency,
        "pool": pool,
        "lease_s": lease_s,
        "grace_s": grace_s,
        "heartbeat_s": min(1.0, lease_s / 4),
    }
    if name:
        settings["name"] = name
    config = NodeConfig(**settings)
    logging.getLogger("shoal").info(
        "starting node %s on %s with %d %s workers",
        config.name,
        store.url_for_display,
        concurrency,
        pool,
    )
    processor = Node(app, store, config, app_spec=app_spec)
    _stop_on_signals(processor)
    sys.exit(processor.run())


def _stop_on_signals(processor: Node) -> None:
    """SIGTERM or Ctrl-C: drain and leave; a second one: release in-flight jobs, leave now."""
    log = logging.getLogger("shoal.node")

    def on_signal(signum: int, frame: FrameType | None) -> None:
        if processor.stop_requested:
            log.warning("second stop signal: releasing in-flight jobs and leaving now")
        else:
            log.info(
                "stop signal: no more claims; draining in-flight jobs (up to %.0fs)",
                processor.config.grace_s,
            )
        processor.request_stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)


def _parse_json(text: str | None, what: str, kind: type) -> Any:
    if text is None:
        return kind()
    if text.startswith("@"):
        try:
            text = Path(text[1:]).read_text()
        except OSError as exc:
            raise PayloadError(f"cannot read {what} from {text[1:]}: {exc.strerror}") from None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise PayloadError(f"{what} is not valid JSON: {exc.msg} at position {exc.pos}") from None
    if not isinstance(value, kind):
        expected = "an array, e.g. '[1, \"a\"]'" if kind is list else "an object, e.g. '{\"k\": 1}'"
        raise PayloadError(f"{what} must be {expected}")
    return value


@cli.command()
@db_option
@click.argument("task")
@click.option(
    "--args", "args_text", metavar="JSON", help="Positional arguments: a JSON array, or @FILE."
)
@click.option(
    "--kwargs", "kwargs_text", metavar="JSON", help="Keyword arguments: a JSON object, or @FILE."
)
@click.option(
    "--app",
    "app_spec",
    metavar="MODULE:ATTR",
    help="Validate against this app's tasks (name, arguments, retries, time limit).",
)
@click.option(
    "--retries",
    type=click.IntRange(0),
    default=None,
    help=f"Retries after a failed attempt (default {DEFAULT_RETRIES}).",
)
@click.option("--timeout-s", type=click.FloatRange(0.001), default=None, help="Time limit.")
@click.option("--delay-s", type=click.FloatRange(0.0), default=0.0, help="Start no sooner.")
@click.option("--force", is_flag=True, help="Submit even if no live node registers TASK.")
def submit(
    db: str | None,
    task: str,
    args_text: str | None,
    kwargs_text: str | None,
    app_spec: str | None,
    retries: int | None,
    timeout_s: float | None,
    delay_s: float,
    force: bool,
) -> None:
    """Queue a job of TASK and print its id."""
    args = _parse_json(args_text, "--args", list)
    kwargs = _parse_json(kwargs_text, "--kwargs", dict)
    store = open_store(db)
    if app_spec:
        app = load_app(app_spec)
        job = app.get_task(task).new_job(args, kwargs, delay_s)
        overrides = {k: v for k, v in (("timeout_s", timeout_s),) if v is not None}
        if retries is not None:
            overrides["max_attempts"] = retries + 1
        job = NewJob(**{**job.__dict__, **overrides})
    else:
        known = store.known_tasks()
        if task not in known and not force:
            if known:
                raise UnknownTask(
                    f"no live node registers task {task!r} (they register: "
                    f"{', '.join(sorted(known))}); check the name, or pass --force to queue it "
                    "anyway for nodes that will start later"
                )
            click.echo(
                f"warning: no live node yet, so {task!r} cannot be checked; if no node registers "
                "it, the job will be recorded as failed with the reason",
                err=True,
            )
        cap = DEFAULT_MAX_PAYLOAD_BYTES
        job = NewJob(
            task=task,
            args_json=encode_json(args, "--args", cap),
            kwargs_json=encode_json(kwargs, "--kwargs", cap),
            max_attempts=(DEFAULT_RETRIES if retries is None else retries) + 1,
            timeout_s=timeout_s,
            delay_s=delay_s,
        )
    [job_id] = store.submit_jobs([job])
    click.echo(job_id)


def _age(now: float, then: float | None) -> str:
    return "-" if then is None else f"{max(0.0, now - then):.1f}s"


@cli.command()
@db_option
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def status(db: str | None, as_json: bool) -> None:
    """Nodes (live and recently dead) with their sections, and job counts by state."""
    view = open_existing(db).read_cluster()
    if as_json:
        click.echo(
            json.dumps(
                {
                    "partitions": view.partitions,
                    "epoch": view.epoch,
                    "nodes": [
                        {
                            "id": n.id,
                            "name": n.name,
                            "state": n.state.value,
                            "section": list(n.section),
                            "host": n.host,
                            "pid": n.pid,
                            "heartbeat_age_s": round(view.now - n.heartbeat_at, 3),
                            "running": n.running,
                            "processed": n.processed,
                            "failed": n.failed,
                            "pause_requested": n.pause_requested,
                            "concurrency": n.concurrency,
                        }
                        for n in view.nodes
                    ],
                    "jobs": {s.value: view.job_counts.get(s, 0) for s in JobState},
                },
                indent=2,
            )
        )
        return
    console = Console()
    table = Table(title=f"Shoal · {view.partitions} partitions · epoch {view.epoch}")
    for column in ("id", "name", "state", "section", "heartbeat", "running", "done", "failed"):
        table.add_column(column)
    colours = {
        NodeState.WORKING: "green",
        NodeState.WAITING: "blue",
        NodeState.PAUSED: "yellow",
        NodeState.DEAD: "red",
        NodeState.INITIALIZING: "cyan",
    }
    for n in view.nodes:
        state = n.state.value + (" (pausing)" if n.pause_requested and n.is_live else "")
        table.add_row(
            str(n.id),
            n.name,
            f"[{colours[n.state]}]{state}[/]",
            f"{len(n.section)}: {format_section(n.section)}",
            _age(view.now, n.heartbeat_at),
            str(n.running),
            str(n.processed),
            str(n.failed),
        )
    console.print(table)
    console.print("jobs: " + "  ".join(f"{s.value} {view.job_counts.get(s, 0)}" for s in JobState))


@cli.command()
@db_option
@click.argument("job_id", type=int)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def job(db: str | None, job_id: int, as_json: bool) -> None:
    """Show one job: state, task, arguments, attempts, node, progress, result, error."""
    found = open_existing(db).read_job(job_id)
    if found is None:
        raise click.ClickException(f"no job with id {job_id}")
    fields = {
        "id": found.id,
        "state": found.state.value,
        "task": found.task,
        "args": found.args,
        "kwargs": found.kwargs,
        "partition": found.partition,
        "attempts": found.attempts,
        "max_attempts": found.max_attempts,
        "node": found.claimer,
        "progress": found.progress,
        "progress_message": found.progress_message,
        "result": found.result,
        "error": found.error,
        "traceback": found.traceback,
        "created_at": found.created_at,
        "started_at": found.started_at,
        "finished_at": found.finished_at,
    }
    if as_json:
        click.echo(json.dumps(fields, indent=2))
        return
    for key, value in fields.items():
        if value is None or key == "traceback":
            continue
        click.echo(f"{key:>16}: {value if isinstance(value, str) else json.dumps(value)}")
    if found.traceback:
        click.echo("       traceback:\n" + found.traceback.rstrip())


@cli.command()
@db_option
@click.argument("node_ref", metavar="NODE")
def pause(db: str | None, node_ref: str) -> None:
    """Ask NODE (id or name) to stop claiming, drain, and give its section away."""
    record = open_existing(db).request_pause(node_ref, True)
    click.echo(f"pause requested for node {record.name} (id {record.id}); it drains, then pauses")


@cli.command()
@db_option
@click.argument("node_ref", metavar="NODE")
def resume(db: str | None, node_ref: str) -> None:
    """Let a paused NODE (id or name) take a section again."""
    record = open_existing(db).request_pause(node_ref, False)
    click.echo(f"resume requested for node {record.name} (id {record.id})")


@cli.command()
@db_option
@click.argument("job_id", type=int)
def cancel(db: str | None, job_id: int) -> None:
    """Cancel a job that has not started yet."""
    if not open_existing(db).cancel_job(job_id):
        raise click.ClickException(f"job {job_id} is not queued (see `shoal job {job_id}`)")
    click.echo(f"job {job_id} cancelled")


@cli.command()
@db_option
@click.option("--nodes", type=click.IntRange(1, 8), default=3, show_default=True)
@click.option("--jobs", "job_count", type=click.IntRange(1, 10000), default=200, show_default=True)
@click.option("--keep-running", is_flag=True, help="Keep the cluster up after the summary.")
@click.option("--no-kill", is_flag=True, help="Do not kill a node part-way.")
def demo(db: str | None, nodes: int, job_count: int, keep_running: bool, no_kill: bool) -> None:
    """A local cluster on SQLite: nodes, jobs with progress, one node killed part-way."""
    from shoal.demo import run_demo

    sys.exit(run_demo(db, nodes, job_count, keep_running, kill=not no_kill))


@cli.command()
@db_option
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=click.IntRange(1, 65535), default=8765, show_default=True)
@click.option(
    "--token",
    envvar="SHOAL_OBSERVER_TOKEN",
    help="Require this bearer token (mandatory when binding beyond loopback).",
)
def observe(db: str | None, host: str, port: int, token: str | None) -> None:
    """Serve the observer's web page, JSON API and /metrics (read-only). Ctrl-C stops it."""
    from shoal.observer.server import serve

    serve(db, host, port, token)


@cli.command()
@db_option
@click.option("--refresh-s", type=click.FloatRange(0.1), default=1.0, show_default=True)
def top(db: str | None, refresh_s: float) -> None:
    """The cluster overview, live in the terminal. Ctrl-C stops it."""
    from shoal.observer.terminal import run_top

    run_top(open_existing(db), refresh_s)


def main() -> None:
    cli(prog_name="shoal")


if __name__ == "__main__":
    main()
