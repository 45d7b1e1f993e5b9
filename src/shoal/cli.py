"""The `shoal` command: parse options, build settings, call into the package.

Every command takes the datastore from `--db URL` or SHOAL_DB (default sqlite:///shoal.db).
Errors Shoal raises on purpose are printed as one clear line with a non-zero exit, never a
traceback, with any password scrubbed. Whatever came from the datastore or from argv is printed
through `printable`, so it can carry no terminal control sequence; rich only ever gets `Text`.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import math
import multiprocessing
import os
import signal
import sys
from collections import Counter
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

import click
from rich.console import Console

from shoal.app import (
    DEFAULT_MAX_PAYLOAD_BYTES,
    DEFAULT_PRIORITY,
    DEFAULT_RETRIES,
    MAX_JOB_ID,
    MAX_PRIORITY,
    MAX_REQUESTER_CHARS,
    MAX_RETRIES,
    MIN_PRIORITY,
    build_job,
    check_text,
    load_app,
    requester,
)
from shoal.errors import ConfigError, NotFound, PayloadError, ShoalError, UnknownTask
from shoal.model import CancelResult, Job, JobState, NodeRecord, NodeState
from shoal.observer.format import format_age, format_moment, printable
from shoal.observer.terminal import render_status, status_document
from shoal.observer.views import read_status, waiting_for
from shoal.store import DEFAULT_PARTITIONS, QUARANTINE_AFTER, Store, open_store, redact_url
from shoal.store.rules import Retention, node_key

if TYPE_CHECKING:
    from shoal.node import Node
    from shoal.node.retention import Pruner

DB_HELP = "Datastore URL: sqlite:///path.db (default sqlite:///shoal.db) or postgresql://..."
# Job ids are 64-bit signed integers in both datastores: a larger number names no job, and
# asking the datastore about it would fail in the driver instead.
MAX_GRACE_S = 86400.0
EXIT_MARGIN_S = 5.0  # past the node's own bound on leaving, when the process exits regardless
SECOND_SIGNAL_EXIT_S = 1.0  # after a second stop signal, the time left to release jobs


class ShoalGroup(click.Group):
    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ShoalError as exc:
            raise click.ClickException(printable(redact_url(str(exc)))) from None


def checked_url(ctx: click.Context, param: click.Parameter, url: str | None) -> str | None:
    """ConfigError, naming the URL with its password hidden, for text no driver can read.

    Percent-escapes must decode to UTF-8 (`%ff` does not); SQLite paths are taken literally, so
    only other URLs are decoded.
    """
    if url is None:
        return None
    check_text(url, "the datastore URL", ConfigError)
    if not url.strip():
        raise ConfigError(
            "the datastore URL is empty: give --db (or SHOAL_DB) a URL such as "
            "sqlite:///shoal.db or postgresql://user@host/db, or leave it unset for the default"
        )
    if not url.lower().startswith("sqlite:"):
        try:
            unquote(url, errors="strict")
        except UnicodeDecodeError:
            raise ConfigError(
                f"datastore URL {redact_url(url)!r} has a %-escape that is not UTF-8 text "
                "(such as %ff): percent-encode each character's UTF-8 bytes"
            ) from None
    return url


def db_option(fn: Any) -> Any:
    return click.option(
        "--db", envvar="SHOAL_DB", metavar="URL", help=DB_HELP, callback=checked_url
    )(fn)


def finite(ctx: click.Context, param: click.Parameter, value: float | None) -> float | None:
    if value is not None and not math.isfinite(value):
        raise click.BadParameter(f"{value} is not a finite number of seconds")
    return value


def open_existing(db: str | None) -> Store:
    return open_store(db, create=False)


def echo_data(text: str, *, err: bool = False) -> None:
    """Print a line that holds data (names, messages) with control characters escaped."""
    click.echo(printable(text), err=err)


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
    default=None,
    help=(
        f"Partition count P (default {DEFAULT_PARTITIONS} for a new datastore). On an existing "
        "one a larger P grows it online; P never shrinks."
    ),
)
@click.option(
    "--quarantine-after",
    type=click.IntRange(1, 1000),
    default=None,
    help=(
        f"Fail a job, as quarantined, once the nodes running it have died this many times "
        f"(default {QUARANTINE_AFTER} for a new datastore); it most likely kills them."
    ),
)
def init(db: str | None, partitions: int | None, quarantine_after: int | None) -> None:
    """Create or migrate the datastore schema, or grow its partition count P online."""
    store = open_store(db)
    store.initialize(partitions, quarantine_after)
    actual = store.read_cluster().partitions
    echo_data(f"datastore ready: {store.url_for_display} ({actual} partitions)")


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
    type=click.Choice(["thread", "inline", "process"]),  # node.config.POOLS
    default="thread",
    show_default=True,
    help=(
        "thread: worker threads in one worker process, so a task that kills its process "
        "(os._exit, a segfault) cannot take the node down; inline: threads in the node's own "
        "process; process: a process per slot, for CPU-bound work."
    ),
)
@click.option(
    "--lease-s",
    type=click.FloatRange(1.0),
    callback=finite,
    default=5.0,
    show_default=True,
    help="A node silent this long (at most 3600) is declared dead and its jobs requeued.",
)
@click.option(
    "--grace-s",
    type=click.FloatRange(0.0, MAX_GRACE_S),
    callback=finite,
    default=30.0,
    show_default=True,
    help="On SIGTERM, how long to let in-flight jobs finish before releasing them.",
)
@click.option(
    "--follow-load/--no-follow-load",
    default=True,
    show_default=True,
    help=(
        "Let this node borrow partitions with waiting jobs from busy nodes while it has free "
        "slots. Off keeps sections to membership and capacity alone."
    ),
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
    follow_load: bool,
    verbose: bool,
) -> None:
    """Run one processor node until SIGTERM or Ctrl-C.

    The node registers, takes a section of the partitions, claims queued jobs of its section,
    runs them and records their outcomes. SIGTERM drains in-flight jobs (up to --grace-s), then
    leaves cleanly; a second SIGTERM leaves at once, releasing unfinished jobs to the queue.
    """
    from shoal.node import Node, NodeConfig

    handler = logging.StreamHandler()
    handler.setFormatter(PrintableFormatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, handlers=[handler])
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
    if not follow_load:
        settings["load_check_s"] = 0.0
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
    processor = Node(app, store, config, app_spec=app_spec, db_url=db or app.db_url)
    _stop_on_signals(processor)
    sys.exit(processor.run())


class PrintableFormatter(logging.Formatter):
    """Log lines a terminal shows as they are: a message's control characters (in a job's
    error, a task or node name, anything a submitter chose) are escaped, newlines included, so
    no message can forge a line or drive the terminal; a traceback keeps its lines."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        record.message = printable(record.message)
        return super().formatMessage(record)

    def formatException(self, ei: Any) -> str:
        return printable(super().formatException(ei), multiline=True)

    def formatStack(self, stack_info: str) -> str:
        return printable(super().formatStack(stack_info), multiline=True)


def _stop_on_signals(processor: Node) -> None:
    """SIGTERM or Ctrl-C: drain and leave; a second one: release in-flight jobs, leave now.

    The node bounds its own leaving (grace period plus a margin); as a last resort, should
    something still hold it (a datastore call stuck in the network), the process exits anyway
    EXIT_MARGIN_S later, or SECOND_SIGNAL_EXIT_S after a second signal. Pool workers ignore
    these signals and stop with the node.
    """
    from shoal.node.lifecycle import LEAVE_MARGIN_S

    log = logging.getLogger("shoal.node")

    def on_signal(signum: int, frame: FrameType | None) -> None:
        if processor.stop_requested:
            log.warning("second stop signal: releasing in-flight jobs and leaving now")
            signal.setitimer(signal.ITIMER_REAL, SECOND_SIGNAL_EXIT_S)
        else:
            log.info(
                "stop signal: no more claims; draining in-flight jobs (up to %.0fs)",
                processor.config.grace_s,
            )
            exit_in_s = processor.config.grace_s + LEAVE_MARGIN_S + EXIT_MARGIN_S
            signal.setitimer(signal.ITIMER_REAL, exit_in_s)
        processor.request_stop()

    def give_up(signum: int, frame: FrameType | None) -> None:
        log.error(
            "could not leave in time; exiting now (the lease expires and other nodes recover "
            "this node's jobs)"
        )
        for worker in multiprocessing.active_children():
            worker.kill()  # a pool worker must not go on running a job that will run elsewhere
        os._exit(1 if processor.exit_code is None else processor.exit_code)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGALRM, give_up)


def _parse_json(text: str | None, what: str, kind: type) -> Any:
    if text is None:
        return kind()
    if text.startswith("@"):
        try:
            text = Path(text[1:]).read_text(encoding="utf-8")
        except OSError as exc:
            raise PayloadError(f"cannot read {what} from {text[1:]}: {exc.strerror}") from None
        except UnicodeDecodeError as exc:
            raise PayloadError(
                f"{what} file {text[1:]} is not UTF-8 text (byte {exc.start}); JSON is UTF-8"
            ) from None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise PayloadError(f"{what} is not valid JSON: {exc.msg} at position {exc.pos}") from None
    except RecursionError:
        raise PayloadError(f"{what} is nested too deeply to parse; flatten the structure") from None
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
    type=click.IntRange(0, MAX_RETRIES),
    default=None,
    help=(
        "Retries after a failed attempt. Default: the task's own with --app; without --app, "
        f"{DEFAULT_RETRIES} (nodes register task names, not their options, so only the app "
        "knows a task's retries)."
    ),
)
@click.option(
    "--timeout-s",
    type=click.FloatRange(0.001),
    default=None,
    callback=finite,
    help="Time limit. Default: the task's own with --app; else none.",
)
@click.option(
    "--delay-s",
    type=click.FloatRange(0.0),
    default=0.0,
    callback=finite,
    help="Start no sooner.",
)
@click.option(
    "--priority",
    type=click.IntRange(MIN_PRIORITY, MAX_PRIORITY),
    default=None,
    help=(
        "Higher runs first within a section. Default: the task's own with --app; else "
        f"{DEFAULT_PRIORITY}."
    ),
)
@click.option(
    "--key",
    default=None,
    help=(
        "Unique key: while a job with this key is queued or running (or finished within its "
        "--key-window-s), print that job's id instead of queueing another."
    ),
)
@click.option(
    "--key-window-s",
    type=click.FloatRange(0.0),
    default=0.0,
    callback=finite,
    help="How long after finishing this job still holds --key.",
)
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
    priority: int | None,
    key: str | None,
    key_window_s: float,
    force: bool,
) -> None:
    """Queue a job of TASK and print its id.

    With --app, the job is checked against the task (name, arguments) and takes its retries,
    time limit and priority; without it, against the task names live nodes register. With --key,
    the id printed may be that of an existing job (a note on standard error says so).
    """
    args = _parse_json(args_text, "--args", list)
    kwargs = _parse_json(kwargs_text, "--kwargs", dict)
    if app_spec:
        registered = load_app(app_spec).get_task(task)
        new = registered.new_job(
            args,
            kwargs,
            delay_s,
            retries=retries,
            timeout_s=timeout_s,
            priority=priority,
            key=key,
            key_window_s=key_window_s,
        )
    else:
        new = build_job(
            task,
            args,
            kwargs,
            what=("--args", "--kwargs"),
            max_payload_bytes=DEFAULT_MAX_PAYLOAD_BYTES,
            retries=DEFAULT_RETRIES if retries is None else retries,
            timeout_s=timeout_s,
            delay_s=delay_s,
            priority=DEFAULT_PRIORITY if priority is None else priority,
            key=key,
            key_window_s=key_window_s,
        )
    store = open_existing(db)  # a typo in a file's path must not make a new datastore
    if not app_spec:
        _check_registered(store, task, force)
    [done] = store.submit([new])
    if not done.created:
        echo_data(f"job {done.job_id} already holds key {key!r}: no new job queued", err=True)
    click.echo(done.job_id)


def _check_registered(store: Store, task: str, force: bool) -> None:
    """UnknownTask if live nodes exist and none registers `task`; a warning if none is live."""
    known = store.known_tasks()
    if task in known or force:
        return
    if known:
        raise UnknownTask(
            f"no live node registers task {task!r} (they register: "
            f"{', '.join(sorted(known))}); check the name, or pass --force to queue it "
            "anyway for nodes that will start later"
        )
    echo_data(
        f"warning: no live node now, so {task!r} cannot be checked; the job waits queued "
        "until a node that registers it runs (`shoal job ID` shows what it waits for)",
        err=True,
    )


@cli.command()
@db_option
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def status(db: str | None, as_json: bool) -> None:
    """Nodes (live and recently dead) with their sections, running jobs, job counts by state."""
    view = read_status(open_existing(db))
    if as_json:
        click.echo(json.dumps(status_document(view), indent=2))
        return
    Console().print(render_status(view, title=f"Shoal · {view.datastore}"))


@cli.command()
@db_option
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option(
    "--forget",
    metavar="NAME",
    help="Delete a stored schedule and its firings (its jobs stay); one still declared by a "
    "running node comes back as new.",
)
def schedules(db: str | None, as_json: bool, forget: str | None) -> None:
    """Periodic schedules: task, timing, zone, last run (tick, job, state) and next run.

    Read from the datastore alone: nodes store the schedules their app declares.
    """
    from shoal.observer.schedules import (
        read_schedules_view,
        render_schedules,
        schedules_document,
    )

    store = open_existing(db)
    if forget is not None:
        check_text(forget, "the schedule name", ConfigError)
        if not store.forget_schedule(forget):
            raise NotFound(f"no schedule named {forget!r}; `shoal schedules` lists them")
        echo_data(f"forgot schedule {forget!r}")
        return
    view = read_schedules_view(store)
    if as_json:
        click.echo(json.dumps(schedules_document(view), indent=2))
        return
    Console().print(render_schedules(view))


TIMES = ("created_at", "run_after", "started_at", "finished_at", "cancel_requested_at")


def _moment(t: float, now: float) -> str:
    """A datastore time as people read it: "2026-12-02 03:06:10 UTC (4.0s ago)"."""
    at = format_moment(t)
    if not math.isfinite(t) or at.startswith(("beyond", "before")):
        return at
    ago = now - t
    return f"{at} ({format_age(ago)} ago)" if ago >= 0 else f"{at} (in {format_age(-ago)})"


def _find_job(store: Store, job_id: int) -> Job:
    found = store.read_job(job_id) if 0 < job_id <= MAX_JOB_ID else None
    if found is None:
        raise NotFound(f"no job with id {job_id}")
    return found


@cli.command()
@db_option
@click.argument("job_id", type=int)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def job(db: str | None, job_id: int, as_json: bool) -> None:
    """Show one job: state, task, arguments, attempts, node, progress, result, error."""
    store = open_existing(db)
    found = _find_job(store, job_id)
    fields = {
        "id": found.id,
        "state": found.state.value,
        "task": found.task,
        "args": found.args,
        "kwargs": found.kwargs,
        "partition": found.partition,
        "priority": found.priority,
        "key": found.key,
        "attempts": found.attempts,
        "max_attempts": found.max_attempts,
        "node": found.claimer,
        "progress": found.progress,
        "progress_message": found.progress_message,
        "result": found.result,
        "error": found.error,
        "traceback": found.traceback,
        "created_at": found.created_at,
        "run_after": found.run_after if found.state is JobState.QUEUED else None,
        "started_at": found.started_at,
        "finished_at": found.finished_at,
        "cancel_requested_at": found.cancel_requested_at,
        "cancel_requested_by": found.cancel_requested_by,
        "waiting_for": waiting_for(store, found),
    }
    if as_json:
        click.echo(json.dumps(fields, indent=2))
        return
    now = store.now()
    if fields["run_after"] is not None and fields["run_after"] <= now:
        fields["run_after"] = None  # runnable now: nothing to wait for
    width = max(len(key) for key in fields)
    for key, value in fields.items():
        if value is None or key == "traceback":
            continue
        if key in TIMES:
            shown = _moment(value, now)
        else:  # json.dumps escapes control characters itself; strings are shown bare
            shown = value if isinstance(value, str) else json.dumps(value)
        echo_data(f"{key:>{width}}: {shown}")
    if found.traceback:
        click.echo("       traceback:\n" + printable(found.traceback.rstrip(), multiline=True))


@cli.command()
@db_option
@click.argument("node_ref", metavar="NODE")
def pause(db: str | None, node_ref: str) -> None:
    """Ask NODE (id or name) to stop claiming, drain, and give its section away."""
    check_text(node_ref, "NODE", ConfigError)
    store = open_existing(db)
    before = _live_node(store, node_ref)
    if before is not None and before.pause_requested:
        how = "paused" if before.state is NodeState.PAUSED else "pausing: it drains, then pauses"
        echo_data(f"node {before.name} (id {before.id}) is already {how}")
        return
    record = store.request_pause(node_ref, True)
    echo_data(f"pause requested for node {record.name} (id {record.id}); it drains, then pauses")


@cli.command()
@db_option
@click.argument("node_ref", metavar="NODE")
def resume(db: str | None, node_ref: str) -> None:
    """Let a paused NODE (id or name) take a section again; a node still draining for a pause
    stays in service instead."""
    check_text(node_ref, "NODE", ConfigError)
    store = open_existing(db)
    before = _live_node(store, node_ref)
    if before is not None and not before.pause_requested:
        echo_data(
            f"node {before.name} (id {before.id}) is not paused (it is {before.state.value}):"
            " nothing to resume"
        )
        return
    record = store.request_pause(node_ref, False)
    if before is not None and before.state is not NodeState.PAUSED:
        echo_data(f"pause cancelled for node {record.name} (id {record.id}); it stays in service")
        return
    echo_data(f"resume requested for node {record.name} (id {record.id})")


def _live_node(store: Store, node_ref: str) -> NodeRecord | None:
    """The live node that NODE names (an id, or a name), as a pause or resume finds it; None if
    there is none (the request then says so)."""
    key = node_key(node_ref)
    for node in store.read_cluster().nodes:
        if node.state is not NodeState.DEAD and (node.id == key or node.name == key):
            return node
    return None


@cli.command()
@db_option
@click.argument("job_id", type=int)
@click.option("--by", metavar="TEXT", help="Who asks, as the job records it (default USER@HOST).")
def cancel(db: str | None, job_id: int, by: str | None) -> None:
    """Cancel a job: a queued one at once, a running one once its task stops.

    A running job's task sees `shoal.cancelled()` turn True within a fraction of a second; if it
    has not stopped after its cancel grace, its node stops it. Either way it ends cancelled,
    never succeeded and never retried. A job that has already ended is left as it is.
    """
    if by is not None:
        check_text(by, "--by", ConfigError)
        if not 0 < len(by) <= MAX_REQUESTER_CHARS:
            raise ConfigError(f"--by takes 1 to {MAX_REQUESTER_CHARS} characters")
    store = open_existing(db)
    if not 0 < job_id <= MAX_JOB_ID:
        raise NotFound(f"no job with id {job_id}")
    result = store.cancel_job(job_id, by or requester())
    if result is CancelResult.NOT_FOUND:
        raise NotFound(f"no job with id {job_id}")
    job = _find_job(store, job_id)
    if result is CancelResult.FINISHED:
        raise click.ClickException(
            f"job {job_id} already {job.state.value}; there is nothing to cancel"
        )
    echo_data(_cancel_said(job, result))


def _cancel_said(job: Job, result: CancelResult) -> str:
    """What `shoal cancel` tells about a cancel that was done or is under way."""
    if result is CancelResult.CANCELLED or job.state is JobState.CANCELLED:
        return f"job {job.id} cancelled"
    where = f"running on node {job.claimer}"
    if result is CancelResult.ALREADY_REQUESTED:
        return (
            f"job {job.id} ({where}) was already asked to cancel by "
            f"{job.cancel_requested_by or 'someone'}; it ends cancelled once its task stops"
        )
    return (
        f"cancel requested for job {job.id} ({where}); it ends cancelled once its task stops, "
        "or its node stops it after the task's cancel grace"
    )


DURATION_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def duration(ctx: click.Context, param: click.Parameter, text: str | None) -> float | None:
    """Seconds in `text`: a number with an optional unit, s m h or d (`90s`, `12h`, `7d`)."""
    if text is None:
        return None
    unit = DURATION_UNITS.get(text[-1:].lower())
    number = text[:-1] if unit is not None else text
    try:
        seconds = float(number) * (unit or 1.0)
    except ValueError:
        seconds = math.nan
    if not (math.isfinite(seconds) and seconds >= 0):
        raise click.BadParameter(f"{text!r} is not an age such as 90s, 15m, 12h or 7d")
    return seconds


@cli.command()
@db_option
@click.option("--app", "app_spec", metavar="MODULE:APP", help="Prune by this app's retention.")
@click.option(
    "--older-than",
    "older_than_s",
    metavar="AGE",
    callback=duration,
    help="Delete finished jobs of every state and task older than AGE (90s, 12h, 7d) instead.",
)
@click.option("--dry-run", is_flag=True, help="Only count what would be deleted.")
def prune(db: str | None, app_spec: str | None, older_than_s: float | None, dry_run: bool) -> None:
    """Delete finished jobs and history past their age, once, and print what went.

    Ages are the defaults (7 days succeeded, 30 days failed and cancelled, 30 days of history),
    an app's (--app), or --older-than for every finished job. Live nodes do this all the time;
    this is for a one-off clean-up, in the same small batches.
    """
    store = open_existing(db)
    pruner = _pruner(store, app_spec, older_than_s)
    now = store.now()
    if dry_run:
        jobs = {
            (task, rule.state): n
            for rule in pruner.rules(now)
            for task, n in store.count_prunable(rule).items()
        }
        events, samples = store.count_prunable_history(now - pruner.retention.history_s)
        _print_pruned("would delete", jobs, events, samples)
        return
    deleted: Counter[tuple[str, JobState]] = Counter()
    events = samples = 0
    while True:  # `now` stays put, so every pass is due and the loop ends with the backlog
        pruned = pruner.run_once(now)
        assert pruned is not None
        deleted.update(pruned.jobs)
        events, samples = events + pruned.events, samples + pruned.samples
        if not pruner.has_backlog:
            break
    _print_pruned("deleted", deleted, events, samples)


def _pruner(store: Store, app_spec: str | None, older_than_s: float | None) -> Pruner:
    """The retention `shoal prune` applies: the defaults, an app's, or one age for all jobs."""
    from shoal.node.retention import Pruner

    pruner = Pruner(store, Retention(), {})
    if app_spec is not None:
        pruner = Pruner.for_app(store, load_app(app_spec))
    if older_than_s is None:
        return pruner
    every = replace(
        pruner.retention, succeeded_s=older_than_s, failed_s=older_than_s, cancelled_s=older_than_s
    )
    return Pruner(store, every, {})


def _print_pruned(
    verb: str, jobs: Mapping[tuple[str, JobState], int], events: int, samples: int
) -> None:
    total = sum(jobs.values())
    click.echo(f"{verb} {total} finished jobs, {events} history events, {samples} samples")
    for (task, state), n in sorted(jobs.items()):
        if n:
            echo_data(f"  {n:>9}  {state.value:<9}  {task}")


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


def _check_bind_host(host: str) -> None:
    """ConfigError unless `host` (--host) is an IP address or a host name: "999.1.1.1" and
    "a b/c" name no interface to listen on."""
    from shoal.observer.hosts import is_host_name

    check_text(host, "--host", ConfigError)
    try:
        ipaddress.ip_address(host)  # an IPv6 address is bound without brackets
    except ValueError:
        if not is_host_name(host):
            raise ConfigError(f"--host {host!r} is neither an IP address nor a host name") from None


@cli.command()
@db_option
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=click.IntRange(1, 65535), default=8765, show_default=True)
@click.option(
    "--token",
    envvar="SHOAL_OBSERVER_TOKEN",
    help="Require this bearer token (mandatory when binding beyond loopback).",
)
@click.option(
    "--allowed-host",
    "allowed_hosts",
    multiple=True,
    metavar="NAME",
    help="Also answer this Host name, e.g. a proxy's (repeatable; default: "
    "SHOAL_OBSERVER_ALLOWED_HOSTS, a comma list).",
)
def observe(
    db: str | None, host: str, port: int, token: str | None, allowed_hosts: tuple[str, ...]
) -> None:
    """Serve the observer's web page, JSON API and /metrics (read-only). Ctrl-C stops it."""
    from shoal.observer.server import serve

    if token is not None and not token.strip():
        raise ConfigError("--token is blank: give a secret that is hard to guess, or none")
    _check_bind_host(host)

    serve(db, host, port, token, allowed_hosts)


@cli.command()
@db_option
@click.option(
    "--refresh-s",
    type=click.FloatRange(0.1, 3600.0),
    default=1.0,
    show_default=True,
    callback=finite,
)
def top(db: str | None, refresh_s: float) -> None:
    """The cluster overview, live in the terminal. Ctrl-C stops it."""
    from shoal.observer.terminal import run_top

    run_top(open_existing(db), refresh_s)


def main() -> None:
    cli(prog_name="shoal")


if __name__ == "__main__":
    main()
