"""What the observer shows, as frozen values built from the store's read views.

Each `read_*` function makes a few short, bounded reads through `Store` and returns one value
that the JSON API serves as is, the event stream sends, and the pages render. Nothing here writes.
Every list is capped so that a cluster with millions of jobs costs the same to observe as a small
one.
"""

from __future__ import annotations

import dataclasses
import json
from collections import Counter
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any

from pydantic import Field

from shoal.assignment import moved
from shoal.load import Backlog
from shoal.model import (
    ClusterView,
    EventKind,
    HistoryEvent,
    Job,
    JobFilter,
    JobState,
    NodeRecord,
    NodeState,
    Sample,
    TaskLimitUse,
)
from shoal.observer.format import compact_ranges
from shoal.store import texts
from shoal.store.port import Store

OVERVIEW_WINDOW_S = 15 * 60.0
RECENT_EVENTS_WINDOW_S = 10 * 60.0
MAX_RUNNING_JOBS = 200
MAX_EVENTS = 30
CHART_POINTS = 120
PREVIEW_CHARS = 160


@dataclass(frozen=True)
class NodeView:
    id: int
    name: str
    state: NodeState
    host: str
    pid: int
    concurrency: int
    tasks: list[str]
    section: list[int]
    section_ranges: str
    heartbeat_age_s: float
    state_age_s: float
    pause_requested: bool
    running: int
    processed: int
    failed: int
    free_slots: int  # slots not running a job (0 for a node that cannot claim)
    backlog: int  # runnable jobs waiting in its section (a lower bound past 64 a partition)


@dataclass(frozen=True)
class RunningJob:
    id: int
    task: str
    node_id: int | None
    progress: float
    progress_message: str | None
    attempts: int
    max_attempts: int
    running_s: float
    cancel_requested: bool = False  # its node is stopping it; it ends cancelled


@dataclass(frozen=True)
class Bucket:
    """Samples folded into one chart point: finished counts summed, depths taken at the end."""

    start: float
    end: float
    succeeded: int
    failed: int
    queued: int
    running: int
    live_nodes: int


@dataclass(frozen=True)
class Event:
    at: float
    kind: EventKind
    node_id: int | None
    node_name: str | None
    from_state: NodeState | None
    to_state: NodeState | None
    epoch: int | None
    moved: int | None  # partitions that changed owner, for rebalances
    reason: str


@dataclass(frozen=True)
class TaskWithoutNode:
    """A task with queued jobs that no live node registers: they wait until a node that
    registers it joins (nodes claim only the tasks they register)."""

    task: str
    queued: int


@dataclass(frozen=True)
class Overview:
    now: float
    datastore: str
    partitions: int
    epoch: int
    nodes: list[NodeView]
    nodes_by_state: dict[str, int]
    jobs_by_state: dict[str, int]
    oldest_queued_age_s: float | None
    owners: list[int | None]
    running_jobs: list[RunningJob]
    throughput: list[Bucket]
    events: list[Event]
    # Where the stored history begins (retention deletes what is older); None: no history yet.
    history_from: float | None = None
    # Each task with cluster-wide limits, with its use now.
    limits: list[TaskLimitUse] = field(default_factory=list)
    tasks_without_node: Annotated[
        list[TaskWithoutNode],
        Field(
            description="Each task with queued jobs that no live node registers, by name, with "
            "its queued count: those jobs wait for a node that registers it. Empty when every "
            "queued job's task has a live node."
        ),
    ] = field(default_factory=list)


@dataclass(frozen=True)
class Status:
    """The cluster now, without history: what `shoal status` and `shoal top` show."""

    now: float
    datastore: str
    partitions: int
    epoch: int
    nodes: list[NodeView]  # live first, then by id
    jobs_by_state: dict[str, int]
    oldest_queued_age_s: float | None
    running_jobs: list[RunningJob]
    # Each task with cluster-wide limits, with its use now (a read of a table of a few rows).
    limits: list[TaskLimitUse] = field(default_factory=list)


def read_status(store: Store, running_limit: int = MAX_RUNNING_JOBS) -> Status:
    """Four short reads: the cluster row with its nodes and counts, the running jobs, the
    runnable backlog per partition, and the task limits with their use."""
    view = store.read_cluster()
    running = store.list_jobs(JobFilter(state=JobState.RUNNING), limit=running_limit)
    waiting = backlog_by_node(view, store.read_load().backlog)
    status = status_of(view, running, store.url_for_display, waiting)
    return dataclasses.replace(status, limits=store.read_task_limits())


def backlog_by_node(view: ClusterView, backlog: Mapping[int, Backlog]) -> dict[int, int]:
    """Runnable jobs waiting in each owner's section, from the load rule's own read
    (`Store.read_load`)."""
    out: dict[int, int] = {}
    for partition, waiting in backlog.items():
        owner = view.owners[partition] if partition < len(view.owners) else None
        if owner is not None:
            out[owner] = out.get(owner, 0) + waiting.runnable
    return out


def status_of(
    view: ClusterView,
    running: Sequence[Job],
    datastore: str,
    backlog: Mapping[int, int] | None = None,
) -> Status:
    """The status view of data already read (the demo holds its own ClusterView)."""
    now = view.now
    waiting = backlog or {}
    return Status(
        now=now,
        datastore=datastore,
        partitions=view.partitions,
        epoch=view.epoch,
        nodes=[
            node_view(node, now, waiting.get(node.id, 0))
            for node in sorted(view.nodes, key=_node_order)
        ],
        jobs_by_state={state.value: view.job_counts.get(state, 0) for state in JobState},
        oldest_queued_age_s=view.oldest_queued_age_s,
        running_jobs=[running_job(job, now) for job in running],
    )


def read_overview(store: Store) -> Overview:
    """The status plus the partition owners and the last 15 minutes of samples and events."""
    view = store.read_cluster()
    running = store.list_jobs(JobFilter(state=JobState.RUNNING), limit=MAX_RUNNING_JOBS)
    waiting = backlog_by_node(view, store.read_load().backlog)
    status = status_of(view, running, store.url_for_display, waiting)
    samples = store.read_samples(status.now - OVERVIEW_WINDOW_S, status.now)
    history = store.read_history(status.now - RECENT_EVENTS_WINDOW_S, status.now, limit=2_000)
    nodes_by_state = Counter(node.state.value for node in view.nodes)
    return Overview(
        now=status.now,
        datastore=status.datastore,
        partitions=status.partitions,
        epoch=status.epoch,
        nodes=status.nodes,
        nodes_by_state={state.value: nodes_by_state.get(state.value, 0) for state in NodeState},
        jobs_by_state=status.jobs_by_state,
        oldest_queued_age_s=status.oldest_queued_age_s,
        owners=list(view.owners),
        running_jobs=status.running_jobs,
        throughput=bucket_samples(
            samples,
            status.now - OVERVIEW_WINDOW_S,
            status.now,
            chart_points(samples, OVERVIEW_WINDOW_S, 90),
        ),
        events=events_with_moves(store, history)[-MAX_EVENTS:][::-1],
        history_from=store.read_history_start(),
        limits=store.read_task_limits(),
        tasks_without_node=tasks_without_node(store.count_jobs_by_task(), store.known_tasks()),
    )


def tasks_without_node(
    counts: Mapping[tuple[str, JobState], int], live_tasks: Collection[str]
) -> list[TaskWithoutNode]:
    """The tasks with queued jobs (from the job counters) that no live node registers."""
    return [
        TaskWithoutNode(task, count)
        for (task, state), count in sorted(counts.items())
        if state is JobState.QUEUED and count > 0 and task not in live_tasks
    ]


def _node_order(node: NodeRecord) -> tuple[bool, int]:
    return (not node.is_live, node.id)


def node_view(node: NodeRecord, now: float, backlog: int = 0) -> NodeView:
    return NodeView(
        id=node.id,
        name=node.name,
        state=node.state,
        host=node.host,
        pid=node.pid,
        concurrency=node.concurrency,
        tasks=list(node.tasks),
        section=list(node.section),
        section_ranges=compact_ranges(node.section),
        heartbeat_age_s=max(now - node.heartbeat_at, 0.0),
        state_age_s=max(now - node.state_changed_at, 0.0),
        pause_requested=node.pause_requested,
        running=node.running,
        processed=node.processed,
        failed=node.failed,
        free_slots=max(node.concurrency - node.running, 0) if node.is_live else 0,
        backlog=backlog,
    )


def running_job(job: Job, now: float) -> RunningJob:
    return RunningJob(
        id=job.id,
        task=job.task,
        node_id=job.claimer,
        progress=min(max(job.progress, 0.0), 1.0),
        progress_message=job.progress_message,
        attempts=job.attempts,
        max_attempts=job.max_attempts,
        running_s=max(now - job.started_at, 0.0) if job.started_at is not None else 0.0,
        cancel_requested=job.cancel_requested_at is not None,
    )


def chart_points(samples: list[Sample], span_s: float, most: int) -> int:
    """As many chart points as fit, but none narrower than a sample: no comb of empty bars."""
    interval = min((s.interval_s for s in samples), default=None)
    if not interval:
        return most
    return max(1, min(most, int(span_s / interval)))


def bucket_samples(samples: list[Sample], since: float, until: float, points: int) -> list[Bucket]:
    """Fold samples into `points` equal buckets over [since, until]; empty buckets count zero.

    A sample covers the `interval_s` before its `at`, so it lands in the bucket holding `at`.
    Depths (queued, running, live nodes) carry forward into empty buckets, since the queue did not
    empty just because no sample was written.
    """
    width = max((until - since) / points, 1e-9)
    folded: list[list[Sample]] = [[] for _ in range(points)]
    for sample in samples:
        index = int((sample.at - since) / width)
        if 0 <= index < points:
            folded[index].append(sample)
    out: list[Bucket] = []
    last: Sample | None = None
    for index, group in enumerate(folded):
        last = group[-1] if group else last
        out.append(
            Bucket(
                start=since + index * width,
                end=since + (index + 1) * width,
                succeeded=sum(s.succeeded for s in group),
                failed=sum(s.failed for s in group),
                queued=last.queued if last else 0,
                running=last.running if last else 0,
                live_nodes=last.live_nodes if last else 0,
            )
        )
    return out


# The events that change the assignment: a rebalance (membership, capacity, P) or a load move.
ASSIGNMENT_KINDS = frozenset({EventKind.REBALANCE, EventKind.LOAD_MOVE})


def events_with_moves(store: Store, history: list[HistoryEvent]) -> list[Event]:
    """History as shown to people: each rebalance or load move says how many partitions moved."""
    out: list[Event] = []
    previous: tuple[int | None, ...] | None = None
    for event in history:
        count: int | None = None
        if event.kind in ASSIGNMENT_KINDS and event.owners is not None:
            if previous is None:
                before = store.read_last_rebalance(event.at - 1e-6)
                previous = before.owners if before and before.owners else None
            if previous is not None and len(previous) == len(event.owners):
                count = moved(previous, event.owners)
            else:
                count = sum(1 for owner in event.owners if owner is not None)
            previous = event.owners
        out.append(
            Event(
                at=event.at,
                kind=event.kind,
                node_id=event.node_id,
                node_name=event.node_name,
                from_state=event.from_state,
                to_state=event.to_state,
                epoch=event.epoch,
                moved=count,
                reason=event.reason,
            )
        )
    return out


# -- the partition map ------------------------------------------------------------------------


@dataclass(frozen=True)
class PartitionMap:
    at: float
    partitions: int
    epoch: int | None
    owners: list[int | None]
    previous_owners: list[int | None] | None  # the assignment before the last rebalance
    nodes: list[NodeView]
    rebalances: list[Event]  # newest first, load moves among them
    # Now only (empty for a past moment, which history does not keep): each partition's home
    # (an owner that differs has it lent for the load), runnable backlog and its oldest wait.
    homes: list[int | None]
    backlog: list[int]
    oldest_wait_s: list[float | None]


def read_partition_map(store: Store, at: float | None = None) -> PartitionMap:
    """The assignment now (from the cluster row) or at a past moment (from history)."""
    cluster = store.read_cluster()
    now = cluster.now
    when = now if at is None else min(at, now)
    last = store.read_last_rebalance(when)
    before = store.read_last_rebalance(last.at - 1e-6) if last is not None else None
    homes: list[int | None] = []
    backlog: list[int] = []
    oldest: list[float | None] = []
    if at is None:
        owners = list(cluster.owners)
        epoch: int | None = cluster.epoch
        load = store.read_load()
        by_node = backlog_by_node(cluster, load.backlog)
        nodes = [
            node_view(node, now, by_node.get(node.id, 0))
            for node in sorted(cluster.nodes, key=_node_order)
        ]
        homes = list(cluster.homes)
        backlog = [load.backlog[p].runnable if p in load.backlog else 0 for p in range(len(owners))]
        oldest = [
            load.backlog[p].oldest_wait_s if p in load.backlog else None for p in range(len(owners))
        ]
    else:
        owners = list(last.owners) if last and last.owners else [None] * cluster.partitions
        epoch = last.epoch if last else None
        nodes = [node_view(node, when) for node in store.read_node_states_at(when)]
    history = store.read_history(when - 24 * 3600.0, when, limit=10_000)
    rebalances = [e for e in events_with_moves(store, history) if e.kind in ASSIGNMENT_KINDS]
    return PartitionMap(
        at=when,
        partitions=cluster.partitions,
        epoch=epoch,
        owners=owners,
        previous_owners=list(before.owners) if before and before.owners else None,
        nodes=nodes,
        rebalances=rebalances[-MAX_EVENTS:][::-1],
        homes=homes,
        backlog=backlog,
        oldest_wait_s=oldest,
    )


# -- the timeline -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Segment:
    state: NodeState
    start: float
    end: float


@dataclass(frozen=True)
class Lane:
    node_id: int
    name: str
    segments: list[Segment]


@dataclass(frozen=True)
class Timeline:
    since: float
    until: float
    now: float
    lanes: list[Lane]
    events: list[Event]  # rebalances, deaths and pause requests, oldest first
    throughput: list[Bucket]
    truncated: bool  # more history than one read returns: lanes end early


HISTORY_LIMIT = 10_000


def read_timeline(store: Store, since: float, until: float) -> Timeline:
    """One lane per node that was not dead at some point in [since, until]."""
    now = store.now()
    until = min(until, now)
    since = min(since, until)
    start_states = store.read_node_states_at(since)
    history = store.read_history(since, until, limit=HISTORY_LIMIT)
    names = {node.id: node.name for node in start_states}
    current: dict[int, tuple[NodeState, float]] = {n.id: (n.state, since) for n in start_states}
    segments: dict[int, list[Segment]] = {node_id: [] for node_id in current}
    for event in history:
        if event.kind is not EventKind.NODE_STATE or event.node_id is None:
            continue
        if event.to_state is None:
            continue
        node_id = event.node_id
        names.setdefault(node_id, event.node_name or f"node {node_id}")
        if node_id in current:
            state, start = current[node_id]
            if event.at > start:
                segments[node_id].append(Segment(state, start, event.at))
        else:
            segments[node_id] = []
        current[node_id] = (event.to_state, event.at)
    for node_id, (state, start) in current.items():
        if state is not NodeState.DEAD or start > since:
            segments[node_id].append(Segment(state, start, max(until, start)))
    lanes = [
        Lane(node_id, names[node_id], _merge(segs))
        for node_id, segs in sorted(segments.items())
        if any(seg.state is not NodeState.DEAD for seg in segs)
    ]
    samples = store.read_samples(since, until)
    marked = [e for e in events_with_moves(store, history) if _is_marker(e)]
    return Timeline(
        since=since,
        until=until,
        now=now,
        lanes=lanes,
        events=marked,
        throughput=bucket_samples(
            samples, since, until, chart_points(samples, until - since, CHART_POINTS)
        ),
        truncated=len(history) >= HISTORY_LIMIT,
    )


def _merge(segments: list[Segment]) -> list[Segment]:
    out: list[Segment] = []
    for seg in segments:
        if out and out[-1].state is seg.state and out[-1].end >= seg.start:
            out[-1] = Segment(seg.state, out[-1].start, seg.end)
        else:
            out.append(seg)
    return out


def _is_marker(event: Event) -> bool:
    return (
        event.kind in ASSIGNMENT_KINDS
        or event.kind is EventKind.PAUSE_REQUEST
        or event.to_state is NodeState.DEAD
    )


# -- jobs -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class JobSummary:
    id: int
    task: str
    state: JobState
    attempts: int
    max_attempts: int
    node_id: int | None
    progress: float
    created_at: float
    finished_at: float | None
    args_preview: str
    error_preview: str | None
    cancel_requested: bool = False  # a cancel was asked for (while queued or running)
    priority: int = 0


@dataclass(frozen=True)
class JobPage:
    jobs: list[JobSummary]
    next_before_id: int | None  # pass as before_id for the next (older) page


@dataclass(frozen=True)
class JobDetail:
    id: int
    partition: int
    task: str
    state: JobState
    args: Any
    kwargs: Any
    attempts: int
    max_attempts: int
    timeout_s: float | None
    run_after: float
    node_id: int | None
    progress: float
    progress_message: str | None
    result: Any
    error: str | None
    traceback: str | None
    created_at: float
    started_at: float | None
    finished_at: float | None
    cancel_requested_at: float | None = None
    cancel_requested_by: str | None = None
    priority: int = 0
    key: str | None = None
    waiting_for: Annotated[
        str | None,
        Field(
            description="What the job waits for while it is queued and no live node registers "
            "its task (the text `shoal job` prints); null otherwise."
        ),
    ] = None


def read_jobs(
    store: Store, where: JobFilter, limit: int = 50, before_id: int | None = None
) -> JobPage:
    limit = min(max(limit, 1), 500)
    jobs = store.list_jobs(where, limit=limit + 1, before_id=before_id)
    page = jobs[:limit]
    more = len(jobs) > limit
    return JobPage(
        jobs=[job_summary(job) for job in page],
        next_before_id=page[-1].id if more and page else None,
    )


def job_summary(job: Job) -> JobSummary:
    return JobSummary(
        id=job.id,
        task=job.task,
        state=job.state,
        attempts=job.attempts,
        max_attempts=job.max_attempts,
        node_id=job.claimer,
        progress=job.progress,
        created_at=job.created_at,
        finished_at=job.finished_at,
        args_preview=_preview(_call_text(job)),
        error_preview=_preview(job.error) if job.error else None,
        cancel_requested=job.cancel_requested_at is not None,
        priority=job.priority,
    )


def _call_text(job: Job) -> str:
    """The arguments as a call would read: `1, "a.png", width=100`."""
    args = [json.dumps(value) for value in _loads(job.args_json, [])]
    kwargs = [f"{k}={json.dumps(v)}" for k, v in dict(_loads(job.kwargs_json, {})).items()]
    return ", ".join(args + kwargs)


def _loads(text: str | None, default: Any) -> Any:
    if text is None:
        return default
    try:
        return json.loads(text)
    except ValueError:
        return text  # shown as the raw text rather than hiding the job


def _preview(text: str) -> str:
    line = " ".join(text.split())
    return line if len(line) <= PREVIEW_CHARS else line[: PREVIEW_CHARS - 1] + "…"


def read_job_detail(store: Store, job_id: int) -> JobDetail | None:
    """The job with what it waits for, or None if there is no such job."""
    found = store.read_job(job_id)
    if found is None:
        return None
    return dataclasses.replace(job_detail(found), waiting_for=waiting_for(store, found))


def waiting_for(store: Store, job: Job) -> str | None:
    """Why a queued job cannot start: no live node registers its task (nodes claim only jobs of
    the tasks they register; it starts once one that does joins). None for any other job."""
    if job.state is not JobState.QUEUED or job.task in store.known_tasks():
        return None
    return texts.waiting_for_node(job.task)


def job_detail(job: Job) -> JobDetail:
    return JobDetail(
        id=job.id,
        partition=job.partition,
        task=job.task,
        state=job.state,
        args=_loads(job.args_json, []),
        kwargs=_loads(job.kwargs_json, {}),
        attempts=job.attempts,
        max_attempts=job.max_attempts,
        timeout_s=job.timeout_s,
        run_after=job.run_after,
        node_id=job.claimer,
        progress=job.progress,
        progress_message=job.progress_message,
        result=_loads(job.result_json, None),
        error=job.error,
        traceback=job.traceback,
        created_at=job.created_at,
        started_at=job.started_at,
        finished_at=job.finished_at,
        cancel_requested_at=job.cancel_requested_at,
        cancel_requested_by=job.cancel_requested_by,
        priority=job.priority,
        key=job.key,
    )
