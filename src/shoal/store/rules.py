"""The pure rules under the port that both dialects call inside their own transactions.

Given what a dialect read in its transaction, these decide what to write: the rebalance plan
(which partitions change owner, each node's new section, the reason recorded), the node states
at a past moment, the job filter in either placeholder style, the job-counter deltas, and which
node a pause request names, and which finished jobs retention deletes. The constants both
dialects' SQL is built from live here too: the job columns, the states that may own a section as
one SQL fragment, how long a dead node stays in view, and how long finished jobs and history are
kept by default.
"""

from __future__ import annotations

import dataclasses
import math
from collections import Counter
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from shoal import assignment, states
from shoal.errors import ConfigError, NotFound
from shoal.load import Backlog, Move, NodeLoad, apply_moves
from shoal.model import (
    CancelResult,
    EventKind,
    HistoryEvent,
    Job,
    JobFilter,
    JobState,
    Missed,
    NewJob,
    NodeRecord,
    NodeState,
    ScheduledJob,
    ScheduleRecord,
    ScheduleSpec,
    Submitted,
)
from shoal.store import texts

# A node that died stays in the cluster view (now or at a past moment) this long, so that people
# see it go rather than have it vanish.
DEAD_WINDOW_S = 600.0

JOB_COLUMNS = (
    "id, partition, task, args, kwargs, state, attempts, max_attempts, timeout_s, run_after,"
    " claimer, progress, progress_message, result, error, traceback, created_at, started_at,"
    " finished_at, cancel_requested_at, cancel_requested_by, priority, key"
)

# `state IN ('waiting', 'working')`, from the state machine's own table (in the enum's order).
SECTION_STATES_SQL = "state IN ({})".format(
    ", ".join(f"'{s.value}'" for s in NodeState if s in states.SECTION_STATES)
)
# The history events that carry the assignment in force from then on (their `owners`): what the
# views of a past moment start from.
ASSIGNMENT_EVENTS_SQL = f"kind IN ('{EventKind.REBALANCE}', '{EventKind.LOAD_MOVE}')"
# The nodes that may own a section: `states.may_own_section` as a WHERE clause.
ELIGIBLE_SQL = f"{SECTION_STATES_SQL} AND NOT pause_requested"


# Job ids are 64-bit signed integers in both datastores; a larger one names no job.
MAX_JOB_ID = 2**63 - 1


def could_be_job_id(job_id: int) -> bool:
    """Whether `job_id` could name a job at all: ids start at 1 and fit in 64 bits. Reads and
    cancels of any other number answer "no such job" instead of a driver's overflow error."""
    return 1 <= job_id <= MAX_JOB_ID


# -- cancelling -----------------------------------------------------------------------------------


def cancel_verdict(state: str | None, requested: bool) -> CancelResult:
    """What a cancel does to a job found in `state` (None: no such job), `requested` saying
    whether a cancel was asked for already: a queued job is cancelled, and so is one claimed
    ahead (no worker has started it; its node finds it gone when it would start it); a running
    one gets the request once; any other is left as it is."""
    if state is None:
        return CancelResult.NOT_FOUND
    if state in (JobState.QUEUED.value, JobState.CLAIMED.value):
        return CancelResult.CANCELLED
    if state == JobState.RUNNING.value:
        return CancelResult.ALREADY_REQUESTED if requested else CancelResult.REQUESTED
    return CancelResult.FINISHED


# -- submitting ----------------------------------------------------------------------------------


def collapse_keys(jobs: Sequence[NewJob]) -> tuple[list[NewJob], list[int]]:
    """The jobs of a batch with each key kept once (its first job), and for each job of the batch
    the position of the kept job it stands for. Jobs without a key are all kept."""
    unique: list[NewJob] = []
    positions: list[int] = []
    by_key: dict[str, int] = {}
    for job in jobs:
        if job.key is not None and job.key in by_key:
            positions.append(by_key[job.key])
            continue
        if job.key is not None:
            by_key[job.key] = len(unique)
        positions.append(len(unique))
        unique.append(job)
    return unique, positions


def spread_submitted(done: Sequence[Submitted], positions: Sequence[int]) -> list[Submitted]:
    """What each job of a batch became, from what its kept jobs became (`collapse_keys`): a
    later job of a key points at the same job, never as its creator."""
    seen: set[int] = set()
    spread = []
    for u in positions:
        spread.append(Submitted(done[u].job_id, done[u].created and u not in seen))
        seen.add(u)
    return spread


def claim_order(job: Job) -> tuple[int, int]:
    """The order in which a section's queued jobs are claimed: highest priority, then oldest."""
    return -job.priority, job.id


# -- rebalancing ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class RebalancePlan:
    """What a rebalance writes: new owners and homes, the partitions whose owner or home
    changes, and the sections that change."""

    owners: assignment.Owners
    homes: assignment.Owners
    changed: tuple[int, ...]  # partitions whose owner or home changes
    sections: tuple[tuple[int, tuple[int, ...]], ...]  # (node id, its new section), by node id
    reason: str  # recorded in history, with how many of P partitions moved


def plan_rebalance(
    owners: Sequence[int | None],
    homes: Sequence[int | None],
    eligible: Mapping[int, int],
    partitions: int,
    why: str,
) -> RebalancePlan | None:
    """The plan that makes the assignment match the eligible nodes; None if it already does.

    Homes follow membership and capacity (`eligible` maps node id to slots; see
    `assignment.rebalance`). Owners follow the homes, except a partition lent to an eligible
    node, which stays lent: the load rule gives it back when the load allows.
    """
    new_homes = assignment.rebalance(homes, eligible, partitions, weights=eligible)
    new = tuple(
        owner if owner is not None and owner in eligible and owner != was_home else home
        for owner, was_home, home in zip(owners, homes, new_homes, strict=True)
    )
    if new == tuple(owners) and new_homes == tuple(homes):
        return None
    return _plan(owners, homes, new, new_homes, f"{why}; moved {assignment.moved(owners, new)}")


def plan_load_moves(
    owners: Sequence[int | None],
    homes: Sequence[int | None],
    eligible: Collection[int],
    moves: Sequence[Move],
    recent_moves: int,
) -> RebalancePlan | None:
    """The plan that applies load moves (lends and returns), given what the write transaction
    reads under the cluster lock; None if none applies.

    The moves were planned from an earlier read, so they are fenced here: a move applies only
    while its source still owns the partition and its target may still own a section. Homes do
    not change. `recent_moves` (load moves in the last minute) goes into the reason, so history
    shows the rate.
    """
    valid = [m for m in moves if m.target in eligible and owners[m.partition] == m.source]
    new = apply_moves(owners, valid)
    if new == tuple(owners):
        return None
    why = texts.load_moves(valid, recent_moves + len(valid))
    return _plan(owners, homes, new, tuple(homes), why)


def _plan(
    owners: Sequence[int | None],
    homes: Sequence[int | None],
    new: assignment.Owners,
    new_homes: assignment.Owners,
    reason: str,
) -> RebalancePlan:
    pairs = zip(zip(owners, homes, strict=True), zip(new, new_homes, strict=True), strict=True)
    changed = tuple(p for p, (was, now) in enumerate(pairs) if was != now)
    before, after = assignment.sections(owners), assignment.sections(new)
    moved_nodes = sorted(n for n in set(before) | set(after) if before.get(n) != after.get(n))
    return RebalancePlan(
        owners=new,
        homes=new_homes,
        changed=changed,
        sections=tuple((n, after.get(n, ())) for n in moved_nodes),
        reason=f"{reason} of {len(owners)}",
    )


# -- load moves -----------------------------------------------------------------------------------

# How many of the oldest runnable queued jobs a load check reads (SQLite scans them by id).
# A job that is queued to run more than PARK_AFTER_S from now (a delay, a retry's backoff) is
# parked: out of the claim indexes, so a backlog of jobs due later never slows a claim, until a
# node's housekeeping unparks it shortly before it is due (`Store.unpark_due`).
PARK_AFTER_S = 5.0
# Jobs unparked per statement, and statements per housekeeping pass at most.
UNPARK_BATCH = 5_000
UNPARK_BATCHES = 10
# Past this many queued jobs per partition that a node cannot take (of a task it does not
# register, or whose limits may leave no room), its claims and idle looks, and the load's count
# of backlog, find jobs task by task through the index of queued jobs by task, rather than walk
# the queue in claim order, which reads through every such job ahead. Below it, the walk reads
# at most a few such jobs per partition and costs less than a probe per task.
UNTAKEN_PER_PARTITION = 4
LOAD_SCAN_JOBS = 10_000


@dataclass(frozen=True)
class LoadSnapshot:
    """What the load rule looks at, read in one short read: owners and homes of every
    partition, the eligible nodes' slots and running jobs, the partitions with runnable backlog,
    and how long ago each partition last moved."""

    owners: tuple[int | None, ...]
    homes: tuple[int | None, ...]
    nodes: Mapping[int, NodeLoad]
    backlog: Mapping[int, Backlog]
    moved_ago_s: Mapping[int, float]


# -- growing P ------------------------------------------------------------------------------------


def partitions_to_grow(current: int, wanted: int | None) -> int | None:
    """The new P when `wanted` is more than the cluster's `current` P; None to leave P as it is.

    ConfigError for fewer: each job keeps the partition it got at submit, so queued jobs of a
    partition that went away would have no owner. Growing is safe online for the same reason:
    new jobs take `id % new P`, queued ones stay where they are.
    """
    if wanted is None or wanted == current:
        return None
    if wanted < current:
        raise ConfigError(texts.partitions_shrink(current, wanted))
    return wanted


def stranded_tasks(
    node_id: int, mine: Collection[str], owners: Mapping[int, Collection[str]]
) -> list[tuple[int, str]]:
    """The (owner, task) pairs whose queued jobs node `node_id` should take: the tasks it
    registers (`mine`) that another owner of partitions (`owners`: owner id -> its tasks)
    does not. Sorted, so every dialect looks in the same order."""
    return sorted(
        (owner, task)
        for owner, tasks in owners.items()
        if owner != node_id
        for task in set(mine) - set(tasks)
    )


def check_quarantine_after(quarantine_after: int | None) -> None:
    """ConfigError unless `quarantine_after` is None (leave it) or at least 1."""
    if quarantine_after is not None and quarantine_after < 1:
        raise ConfigError(texts.QUARANTINE_AT_LEAST_ONE)


# -- pausing ------------------------------------------------------------------------------------


def node_key(node_ref: str) -> int | str:
    """What a reference to a node names: an id when it is all digits, else a name. Digits past
    the datastores' 64-bit ids name no node: -1, which no node has."""
    if not node_ref.isdigit():
        return node_ref
    number = int(node_ref)
    return number if number <= MAX_JOB_ID else -1


def pause_target(node_ref: str, row: Sequence[Any] | None) -> tuple[int, str]:
    """The (id, name) of the node found for a pause or resume request, given its row
    (id, name, state); NotFound if there is none or it is dead."""
    if row is None:
        raise NotFound(texts.no_such_node(node_ref))
    node_id, name = int(row[0]), str(row[1])
    if row[2] == NodeState.DEAD.value:
        raise NotFound(texts.node_is_dead(name, node_id))
    return node_id, name


# -- the past -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PastState:
    """A node as registered now, with the last state history recorded for it at some moment."""

    node: NodeRecord
    state: NodeState | None  # None: history has no state for it by then
    changed_at: float | None


def node_states_at(
    at: float, past: Iterable[PastState], rebalance: HistoryEvent | None
) -> list[NodeRecord]:
    """The nodes as they were at `at`, each with the section of the rebalance then in force.

    Nodes with no state recorded by then are left out, and so are those dead for longer than
    DEAD_WINDOW_S by then, as the live view would show them.
    """
    owned = assignment.sections(rebalance.owners or ()) if rebalance else {}
    out = []
    for p in past:
        if p.state is None or p.changed_at is None:
            continue
        if p.state is NodeState.DEAD and p.changed_at < at - DEAD_WINDOW_S:
            continue
        out.append(
            dataclasses.replace(
                p.node,
                state=p.state,
                section=owned.get(p.node.id, ()),
                state_changed_at=float(p.changed_at),
                running=0,
            )
        )
    return out


# -- job lists ------------------------------------------------------------------------------------


def job_filter(
    where: JobFilter, mark: str, queued_terms: Sequence[str] = ()
) -> tuple[list[str], list[Any]]:
    """WHERE terms and parameters for `where`, with `mark` as the placeholder (`?` or `%s`).

    `queued_terms` are added when the filter asks for queued jobs: a dialect's hint that selects
    the index serving them.
    """
    clauses: list[str] = []
    params: list[Any] = []
    if where.state is not None:
        # A literal (one of five fixed words), not a parameter: the indexes that serve a state
        # are partial, and neither SQLite nor a generic plan of a prepared PostgreSQL statement
        # can prove a partial index applies from a parameter.
        clauses.append(f"state = '{JobState(where.state).value}'")
        if where.state is JobState.QUEUED:
            clauses.extend(queued_terms)
    for column, value in (
        ("task", where.task),
        ("claimer", where.node_id),
    ):
        if value is not None:
            clauses.append(f"{column} = {mark}")
            params.append(value)
    for term, bound in (("id >=", where.min_id), ("id <=", where.max_id)):
        if bound is not None:
            clauses.append(f"{term} {mark}")
            params.append(bound)
    return clauses, params


def list_jobs_query(
    where: JobFilter,
    limit: int,
    before_id: int | None,
    mark: str,
    queued_terms: Sequence[str] = (),
) -> tuple[str, list[Any]]:
    """The statement and parameters of `Store.list_jobs`, newest id first."""
    clauses, params = job_filter(where, mark, queued_terms)
    if before_id is not None:
        clauses.append(f"id < {mark}")
        params.append(before_id)
    sql = f"SELECT {JOB_COLUMNS} FROM jobs"
    if clauses:
        sql += " WHERE " + " AND ".join(clauses)
    return f"{sql} ORDER BY id DESC LIMIT {mark}", [*params, limit]


# -- job counts -----------------------------------------------------------------------------------


def count_moves(old: JobState, rows: Iterable[tuple[str, str]]) -> Counter[tuple[str, str]]:
    """Counter deltas for jobs, given as (task, new state), that left state `old`."""
    deltas: Counter[tuple[str, str]] = Counter()
    for task, state in rows:
        deltas[(task, state)] += 1
        deltas[(task, old.value)] -= 1
    return deltas


def count_submits(tasks: Iterable[str]) -> Counter[tuple[str, str]]:
    """Counter deltas for new jobs of these tasks, all queued."""
    return Counter((task, JobState.QUEUED.value) for task in tasks)


def count_deletes(rows: Iterable[tuple[str, str]]) -> Counter[tuple[str, str]]:
    """Counter deltas for deleted jobs, given as (task, state): counts are of the rows stored."""
    return Counter({key: -n for key, n in Counter(rows).items()})


# -- retention ------------------------------------------------------------------------------------

DAY_S = 86_400.0
# Every default of retention, in one place. A result is looked up within days of a job's end, if
# ever: a week of succeeded jobs answers "did it run, what did it return" without the table
# growing for ever under a steady load.
KEEP_SUCCEEDED_S = 7 * DAY_S
# Failures are what people come back to investigate, often after a weekend or a holiday.
KEEP_FAILED_S = 30 * DAY_S
# A cancel is a decision someone may be asked about later; as rare as failures, kept as long.
KEEP_CANCELLED_S = 30 * DAY_S
# Node transitions, rebalances and samples: a month of "what happened", as the observer shows it.
KEEP_HISTORY_S = 30 * DAY_S
# Rows deleted by one statement: small enough that each delete is a short transaction whose locks
# no claim or finish waits on for long, large enough to clear a backlog at a useful rate.
PRUNE_BATCH = 1000
FINAL_STATES = (JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED)


@dataclass(frozen=True)
class Retention:
    """How long finished jobs (per final state) and history are kept, in seconds after they
    finished or happened; `math.inf` keeps them for ever. ValueError for a negative or NaN age."""

    succeeded_s: float = KEEP_SUCCEEDED_S
    failed_s: float = KEEP_FAILED_S
    cancelled_s: float = KEEP_CANCELLED_S
    history_s: float = KEEP_HISTORY_S

    def __post_init__(self) -> None:
        for name, value in vars(self).items():
            if not (isinstance(value, int | float) and value >= 0):  # NaN fails too
                raise ValueError(f"retention {name} must be seconds >= 0 or math.inf, not {value}")

    def keep_s(self, state: JobState) -> float:
        """How long jobs that ended in `state` are kept; ValueError for a state not final."""
        by_state = {
            JobState.SUCCEEDED: self.succeeded_s,
            JobState.FAILED: self.failed_s,
            JobState.CANCELLED: self.cancelled_s,
        }
        if state not in by_state:
            raise ValueError(f"jobs in state {state.value} are never pruned")
        return by_state[state]


@dataclass(frozen=True)
class PruneRule:
    """Which finished jobs to delete: those in `state` that finished before `before` (datastore
    time), of the tasks in `tasks`, or when `tasks` is None of every task but `except_tasks`."""

    state: JobState
    before: float
    tasks: tuple[str, ...] | None = None
    except_tasks: tuple[str, ...] = ()


def prune_rules(now: float, default: Retention, tasks: Mapping[str, Retention]) -> list[PruneRule]:
    """The rules that apply `default` to every task and `tasks`' own retention to those tasks,
    at datastore time `now`. Tasks that keep a state as long as the default share its rule;
    a state kept for ever gets no rule."""
    rules: list[PruneRule] = []
    for state in FINAL_STATES:
        base = default.keep_s(state)
        groups: dict[float, list[str]] = {}
        for task, retention in sorted(tasks.items()):
            if retention.keep_s(state) != base:
                groups.setdefault(retention.keep_s(state), []).append(task)
        special = tuple(sorted(t for names in groups.values() for t in names))
        if math.isfinite(base):
            rules.append(PruneRule(state, now - base, None, special))
        for keep_s, names in sorted(groups.items()):
            if math.isfinite(keep_s):
                rules.append(PruneRule(state, now - keep_s, tuple(names)))
    return rules


@dataclass(frozen=True)
class Pruned:
    """What one pruning pass deleted: jobs per (task, state), history events and samples."""

    jobs: Mapping[tuple[str, JobState], int]
    events: int = 0
    samples: int = 0

    @property
    def job_count(self) -> int:
        return sum(self.jobs.values())


# -- periodic schedules ---------------------------------------------------------------------------

# Tick rows kept per schedule, newest first: what `shoal schedules` shows of the past. Older ones
# are deleted as new ones are fired; `fired_through` alone keeps ticks from firing twice.
TICKS_KEPT = 1000

# The columns both dialects read a schedule with, its latest firing and that job's state.
SCHEDULE_COLUMNS = (
    "s.name, s.task, s.cron, s.every_s, s.tz, s.args, s.kwargs, s.missed, s.declared_at,"
    " s.fired_through, t.tick, t.job_id, t.catch_up, j.state"
)
# Every stored schedule with its latest firing and that job's state: plain SQL both dialects run.
SCHEDULES_SQL = f"""
SELECT {SCHEDULE_COLUMNS} FROM schedules s
LEFT JOIN schedule_ticks t ON t.schedule = s.name
    AND t.tick = (SELECT max(m.tick) FROM schedule_ticks m WHERE m.schedule = s.name)
LEFT JOIN jobs j ON j.id = t.job_id
ORDER BY s.name
"""


def check_firings(expected_through: float, fired: Sequence[ScheduledJob], through: float) -> None:
    """ValueError unless every firing's tick is in (expected_through, through], each once."""
    ticks = [f.tick for f in fired]
    if through < expected_through or any(not expected_through < t <= through for t in ticks):
        raise ValueError(f"firings {ticks} are not all within ({expected_through}, {through}]")
    if len(set(ticks)) != len(ticks):
        raise ValueError(f"firings {ticks} name a tick twice")


def schedule_record(row: Sequence[Any]) -> ScheduleRecord:
    """A stored schedule from a row of SCHEDULE_COLUMNS (either dialect)."""
    spec = ScheduleSpec(
        name=str(row[0]),
        task=str(row[1]),
        cron=None if row[2] is None else str(row[2]),
        every_s=None if row[3] is None else float(row[3]),
        tz=str(row[4]),
        args_json=str(row[5]),
        kwargs_json=str(row[6]),
        missed=Missed(row[7]),
    )
    return ScheduleRecord(
        spec=spec,
        declared_at=float(row[8]),
        fired_through=float(row[9]),
        last_tick=None if row[10] is None else float(row[10]),
        last_job_id=None if row[11] is None else int(row[11]),
        last_catch_up=bool(row[12]),
        last_job_state=None if row[13] is None else JobState(row[13]),
    )


def schedule_row(spec: ScheduleSpec) -> dict[str, Any]:
    """The parameters both dialects declare a schedule with."""
    return {
        "name": spec.name,
        "task": spec.task,
        "cron": spec.cron,
        "every_s": spec.every_s,
        "tz": spec.tz,
        "args": spec.args_json,
        "kwargs": spec.kwargs_json,
        "missed": spec.missed.value,
    }
