"""What the task bodies saw against what the datastore recorded: the soak's invariants.

The side file holds one JSON line per attempt start and end, written by the task bodies
(chaostasks.note). These functions are pure: they take those records, the jobs as the
datastore has them and the faults the suite injected, and count what went wrong.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shoal.model import Job, JobState


@dataclass(frozen=True)
class Record:
    event: str  # "start" or "end"
    job_id: int
    attempt: int
    at: float  # wall clock of the host: the suite and every node run on it
    pid: int
    ppid: int


@dataclass(frozen=True)
class Kill:
    """A SIGKILL the suite sent: when, and to which node process."""

    at: float
    pid: int


@dataclass(frozen=True)
class Findings:
    lost: list[int]  # submitted, and no row; or running under a node that is dead or gone
    stuck: list[int]  # not final after the settle time
    duplicates: list[int]  # a final outcome not from the job's last attempt, or recorded twice
    started_twice: list[int]  # one attempt number started twice, or more starts than attempts
    charged_unrun: int  # attempts the datastore charged that no task body started
    charged_jobs: list[int]
    not_succeeded: list[int]  # final, but not succeeded (every steady job must succeed)
    recovery_s: list[float]  # per job running on a SIGKILLed node: kill -> started elsewhere
    unrecovered: int  # jobs running on a killed node that never started again
    # Where the outcomes and the bodies' ends disagree: per job, the attempts whose body started
    # but never recorded its end, and those the datastore counts with no start recorded at all
    # (for reading a failure; "more outcomes than bodies ended" names no job itself).
    unended: dict[int, list[int]] = field(default_factory=dict)
    # How each job of `not_succeeded` ended: its state and recorded error (for reading a failure).
    endings: dict[int, str] = field(default_factory=dict)


def read_records(path: Path) -> list[Record]:
    if not path.exists():
        return []
    records = []
    for line in path.read_text().splitlines():
        raw: dict[str, Any] = json.loads(line)
        records.append(
            Record(raw["ev"], raw["job"], raw["attempt"], raw["t"], raw["pid"], raw["ppid"])
        )
    return records


def examine(
    submitted: Sequence[int],
    jobs: dict[int, Job | None],
    records: Sequence[Record],
    kills: Sequence[Kill],
    applied_outcomes: int,
    live_nodes: frozenset[int] = frozenset(),
) -> Findings:
    """Count what went wrong. `applied_outcomes` is the sum of every node's processed counter:
    each attempt outcome the datastore accepted; `live_nodes` the ids of live nodes at the end
    (a job still running under any other node is lost: nothing will ever requeue it)."""
    starts: dict[int, list[Record]] = defaultdict(list)
    ended: set[tuple[int, int]] = set()
    for r in records:
        if r.event == "start":
            starts[r.job_id].append(r)
        else:
            ended.add((r.job_id, r.attempt))
    present = [j for j in (jobs.get(i) for i in submitted) if j is not None]
    orphans = [j.id for j in present if j.state is JobState.RUNNING and j.claimer not in live_nodes]
    lost = [i for i in submitted if jobs.get(i) is None] + orphans
    stuck = [j.id for j in present if not j.state.is_final]
    charged = {j.id: j.attempts - len({r.attempt for r in starts[j.id]}) for j in present}
    recovery, unrecovered = recovery_times(records, kills)
    duplicates = [j.id for j in present if not _outcome_is_last_attempt(j)]
    # Every accepted outcome is that of an attempt whose body began, so more outcomes than
    # attempts begun means one was recorded twice. Not more than bodies *ended*: an attempt cut
    # short has an outcome and no end, rightly. A node frozen past its lease whose worker
    # process ended the attempts it ran (as it must, they may run elsewhere) fails each of them
    # when it wakes, and if no node has declared it dead by then, that write is accepted.
    begun = {(r.job_id, r.attempt) for rs in starts.values() for r in rs}
    if applied_outcomes > len(begun) and not duplicates:
        duplicates = [-1] * (applied_outcomes - len(begun))  # more outcomes than attempts begun
    return Findings(
        lost=lost,
        stuck=stuck,
        duplicates=duplicates,
        started_twice=[j.id for j in present if _started_twice(j, starts[j.id])],
        charged_unrun=sum(c for c in charged.values() if c > 0),
        charged_jobs=sorted(i for i, c in charged.items() if c > 0),
        not_succeeded=[
            j.id for j in present if j.state.is_final and j.state is not JobState.SUCCEEDED
        ],
        recovery_s=recovery,
        unrecovered=unrecovered,
        endings={
            j.id: f"{j.state.value} after {j.attempts} attempts: {j.error}"
            for j in present
            if j.state.is_final and j.state is not JobState.SUCCEEDED
        },
        unended={
            j.id: sorted(a for a in range(1, j.attempts + 1) if (j.id, a) not in ended)
            for j in present
            if any((j.id, a) not in ended for a in range(1, j.attempts + 1))
        },
    )


def _outcome_is_last_attempt(job: Job) -> bool:
    """A success must be the one its last charged attempt returned (the task returns it)."""
    if job.state is not JobState.SUCCEEDED:
        return True
    result = job.result
    return isinstance(result, dict) and result.get("attempt") == job.attempts


def _started_twice(job: Job, starts: Sequence[Record]) -> bool:
    attempts = [r.attempt for r in starts]
    return len(attempts) != len(set(attempts)) or len(attempts) > job.max_attempts


def recovery_times(records: Sequence[Record], kills: Iterable[Kill]) -> tuple[list[float], int]:
    """For each job whose body ran on a node when it was SIGKILLed, the seconds until a later
    attempt of it started; and how many never started again."""
    ended = {(r.job_id, r.attempt): r.at for r in records if r.event == "end"}
    starts = [r for r in records if r.event == "start"]
    times: list[float] = []
    unrecovered = 0
    for kill in kills:
        for r in starts:
            on_node = kill.pid in (r.pid, r.ppid)
            finished_before = ended.get((r.job_id, r.attempt), math.inf) < kill.at
            if not on_node or r.at > kill.at or finished_before:
                continue
            later = [s.at for s in starts if s.job_id == r.job_id and s.attempt > r.attempt]
            if any(t <= kill.at for t in later):
                continue  # superseded before the kill (its node was presumed dead earlier)
            later = [t for t in later if t > kill.at]
            if later:
                times.append(min(later) - kill.at)
            else:
                unrecovered += 1
    return times, unrecovered


def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-th percentile (nearest rank), None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(0, math.ceil(q / 100 * len(ordered)) - 1)
    return ordered[rank]
