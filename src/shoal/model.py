"""The values every part of Shoal passes around: jobs, node records, history events, samples.

All are frozen dataclasses built by the storage adapters (`from_row` lives there, since each
backend's rows differ). Timestamps are seconds since the Unix epoch *in datastore time*: they are
compared only with other datastore timestamps, never with a node's own clock.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class NodeState(StrEnum):
    INITIALIZING = "initializing"
    WAITING = "waiting"
    WORKING = "working"
    PAUSED = "paused"
    DEAD = "dead"


class JobState(StrEnum):
    QUEUED = "queued"
    CLAIMED = "claimed"  # held by a node for its next free worker; not started, not charged
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def is_final(self) -> bool:
        return self in (JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED)


class EventKind(StrEnum):
    NODE_STATE = "node_state"  # a node changed state (from_state -> to_state)
    REBALANCE = "rebalance"  # the partition assignment changed; `owners` holds the new one
    PAUSE_REQUEST = "pause_request"  # an operator asked a node to pause or resume
    LOAD_MOVE = "load_move"  # partitions lent to a node with free slots, or given back home


@dataclass(frozen=True)
class TaskLimit:
    """A task's cluster-wide limits, as a node declares them when it registers.

    `max_running`: at most this many of its jobs running at once across the cluster (claimed
    jobs count, prefetched or started). `max_per_s`: at most this many starts per second (see
    `store.rules.rate_window` for the exact window). None: no such limit.
    """

    task: str
    max_running: int | None = None
    max_per_s: float | None = None


@dataclass(frozen=True)
class TaskLimitUse:
    """A task's limits as the datastore holds them, with their current use."""

    limit: TaskLimit
    running: int  # its jobs running now
    recent_starts: int  # starts within the rate window ending now (0 without a rate limit)


@dataclass(frozen=True)
class NewJob:
    """A validated job ready to insert: arguments already encoded as JSON text.

    `priority`: within a section, queued jobs of a higher priority are claimed first. `key`: while
    a job with the same key is queued or running, or finished less than that job's `key_window_s`
    ago, submitting this one returns that job instead (see `Store.submit`).
    """

    task: str
    args_json: str
    kwargs_json: str
    max_attempts: int = 4
    timeout_s: float | None = None
    delay_s: float = 0.0
    priority: int = 0
    key: str | None = None
    key_window_s: float = 0.0


@dataclass(frozen=True)
class Submitted:
    """What one submit did: the job's id, and whether it created the job (False: a job with the
    same key already existed and `job_id` is that job's)."""

    job_id: int
    created: bool


@dataclass(frozen=True)
class Job:
    id: int
    partition: int
    task: str
    args_json: str
    kwargs_json: str
    state: JobState
    attempts: int
    max_attempts: int
    timeout_s: float | None
    run_after: float
    claimer: int | None
    progress: float
    progress_message: str | None
    result_json: str | None
    error: str | None
    traceback: str | None
    created_at: float
    started_at: float | None
    finished_at: float | None
    # When a cancel was asked for (datastore time) and by whom: set on a running job while its
    # node stops it, and kept on the cancelled job.
    cancel_requested_at: float | None = None
    cancel_requested_by: str | None = None
    priority: int = 0
    key: str | None = None

    @property
    def args(self) -> list[Any]:
        return list(json.loads(self.args_json))

    @property
    def kwargs(self) -> dict[str, Any]:
        return dict(json.loads(self.kwargs_json))

    @property
    def result(self) -> Any:
        return None if self.result_json is None else json.loads(self.result_json)


@dataclass(frozen=True)
class NodeRecord:
    """One record of the system-state collection: a node, its state and its section."""

    id: int
    name: str
    state: NodeState
    section: tuple[int, ...]
    host: str
    pid: int
    concurrency: int
    tasks: tuple[str, ...]
    started_at: float
    heartbeat_at: float
    lease_expires_at: float
    state_changed_at: float
    pause_requested: bool
    processed: int
    failed: int
    running: int = 0  # jobs in state running claimed by this node (filled by read views)

    @property
    def is_live(self) -> bool:
        return self.state is not NodeState.DEAD


@dataclass(frozen=True)
class Heartbeat:
    """What a node learns when it renews its lease."""

    now: float
    epoch: int
    section: tuple[int, ...]
    pause_requested: bool
    state: NodeState


class CancelResult(StrEnum):
    """What a cancel did. True (as a bool) when it changed the job."""

    CANCELLED = "cancelled"  # the job was queued: it ended cancelled at once
    REQUESTED = "requested"  # the job was running: its node stops it, and it ends cancelled
    ALREADY_REQUESTED = "already_requested"  # running, and a cancel was asked for before
    FINISHED = "finished"  # the job had already ended: nothing changed
    NOT_FOUND = "not_found"  # there is no such job

    def __bool__(self) -> bool:
        return self in (CancelResult.CANCELLED, CancelResult.REQUESTED)


@dataclass(frozen=True)
class CancelRequest:
    """A cancel asked for a job running under a node, as the node reads it."""

    job_id: int
    attempt: int
    requested_at: float
    requested_by: str | None


@dataclass(frozen=True)
class Outcome:
    """The end of one attempt, as the node reports it. Fenced by (job_id, attempt).

    `retry_in_s` is None for a final outcome; otherwise the job goes back to the queue and may
    run again after that delay.

    `ran_s` is set for an attempt whose start was never recorded (a tiny job handed to a worker
    while still `claimed`, see `NodeConfig.start_ahead_s`): how long it ran. The datastore then
    records its start with its end, charging the attempt and stamping `started_at` that long
    before the outcome.
    """

    job_id: int
    attempt: int
    succeeded: bool
    result_json: str | None = None
    error: str | None = None
    traceback: str | None = None
    retry_in_s: float | None = None
    ran_s: float | None = None


@dataclass(frozen=True)
class ProgressUpdate:
    job_id: int
    attempt: int
    fraction: float
    message: str | None


@dataclass(frozen=True)
class HistoryEvent:
    id: int
    at: float
    kind: EventKind
    node_id: int | None
    node_name: str | None
    from_state: NodeState | None
    to_state: NodeState | None
    epoch: int | None
    owners: tuple[int | None, ...] | None  # for rebalances: owner of each partition
    reason: str


@dataclass(frozen=True)
class Sample:
    """A periodic measure of the whole cluster, written by whichever node's turn it is.

    `succeeded` and `failed` count jobs that finished within the sample's interval.
    """

    at: float
    interval_s: float
    queued: int
    running: int
    succeeded: int
    failed: int
    live_nodes: int
    oldest_queued_age_s: float | None


@dataclass(frozen=True)
class ClusterView:
    partitions: int
    epoch: int
    now: float
    nodes: tuple[NodeRecord, ...]
    owners: tuple[int | None, ...]
    job_counts: Mapping[JobState, int] = field(default_factory=dict)
    oldest_queued_age_s: float | None = None
    # Each partition's home (the membership and capacity assignment); a partition whose owner
    # differs from its home is lent, for now, to a node with free slots.
    homes: tuple[int | None, ...] = ()


@dataclass(frozen=True)
class JobFilter:
    state: JobState | None = None
    task: str | None = None
    node_id: int | None = None
    min_id: int | None = None
    max_id: int | None = None


class Missed(StrEnum):
    """What a schedule does about ticks that passed while no node could fire them."""

    ONCE = "once"  # one catch-up job for all of them, then on as usual
    SKIP = "skip"  # none: on with the next tick


@dataclass(frozen=True)
class ScheduleSpec:
    """A periodic schedule as an app declares it: exactly one of `cron` and `every_s` is set;
    arguments already encoded as JSON text."""

    name: str
    task: str
    cron: str | None
    every_s: float | None
    tz: str
    args_json: str
    kwargs_json: str
    missed: Missed = Missed.ONCE

    @property
    def when(self) -> str:
        """The timetable as people read it: the cron expression and zone, or the interval."""
        if self.cron is not None:
            return f"{self.cron} ({self.tz})"
        return f"every {self.every_s:.15g}s"


@dataclass(frozen=True)
class ScheduleRecord:
    """A schedule as the datastore holds it. `fired_through` is the datastore time up to which
    its ticks are settled (fired, or skipped as missed); ticks after it are still to come. The
    last firing is its latest tick row, with the state its job has now (None once pruned)."""

    spec: ScheduleSpec
    declared_at: float
    fired_through: float
    last_tick: float | None = None
    last_job_id: int | None = None
    last_catch_up: bool = False
    last_job_state: JobState | None = None


@dataclass(frozen=True)
class ScheduledJob:
    """One firing to record: the tick it is for and the job it submits."""

    tick: float
    job: NewJob
    catch_up: bool = False  # stands for every tick missed up to and including this one


@dataclass(frozen=True)
class ScheduleTick:
    """One recorded firing of a schedule."""

    schedule: str
    tick: float
    job_id: int
    catch_up: bool
    fired_at: float
