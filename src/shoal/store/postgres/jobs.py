"""The job side of the PostgreSQL store: submitting, cancelling, claiming, progress, finishing
and releasing jobs, and sampling the cluster.

Plain functions over a borrowed connection, each the body of one operation; the hot ones are a
single statement (a submit too, when an earlier submit reserved its ids: see `reserve`). Those
that could be applied twice when a commit's outcome is lost with the connection take `retried`
and look before they write again: a submit checks for the ids it reserved, a claim for its
token, a finish for outcomes already recorded as sent.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from shoal.errors import DatastoreUnavailable, SchemaError
from shoal.model import (
    CancelRequest,
    CancelResult,
    Job,
    JobState,
    NewJob,
    Outcome,
    ProgressUpdate,
    Submitted,
)
from shoal.store import rules, texts
from shoal.store.postgres import queries as q
from shoal.store.postgres.reads import Conn, exists, job_from_row, scalar
from shoal.store.postgres.reserve import SubmitIds


def submit(
    conn: Conn, retried: bool, plan: SubmitIds, jobs: Sequence[NewJob], url: str
) -> list[Submitted]:
    """Insert the batch under ids known before the INSERT is sent: those of `plan`, reserved
    by an earlier INSERT, then ones reserved here for the rest (added to `plan` on the first
    try). The INSERT reserves `plan.ahead` ids for the next submit, into `plan.reserved`. A job
    whose key another job holds is not inserted and gets the holder's id. Keys are distinct."""
    # Sequences never roll back, so a retry after a lost commit can tell whether the batch went
    # in: the batch is all-or-none, so any of its ids says. Ids still missing mean no INSERT
    # was sent. (A batch that found every key held wrote nothing, and doing it again finds the
    # same.)
    ids = plan.ids
    if retried and len(ids) == len(jobs):
        present = {int(r[0]) for r in conn.execute(q.JOBS_PRESENT, (ids,))}
        if present:
            return _as_recorded(conn, ids, jobs, present)
    if len(ids) < len(jobs):
        rows = conn.execute(q.ALLOCATE_IDS, (len(jobs) - len(ids),)).fetchall()
        ids.extend(sorted(int(r[0]) for r in rows))
    if not any(j.key for j in jobs):  # one statement, so no transaction to open
        plan.reserved = _insert(conn, ids, jobs, url, plan.ahead)
        return [Submitted(i, True) for i in ids]
    reserved: list[int] = []
    with conn.transaction():
        held = _take_keys(conn, ids, jobs)
        new = [(i, j) for i, j in zip(ids, jobs, strict=True) if j.key not in held]
        if new:
            reserved = _insert(conn, [i for i, _ in new], [j for _, j in new], url, plan.ahead)
    plan.reserved = reserved  # only once committed (see `reserve`)
    return [
        Submitted(i, True) if j.key not in held else Submitted(held[j.key], False)
        for i, j in zip(ids, jobs, strict=True)
    ]


def _insert(
    conn: Conn, ids: Sequence[int], jobs: Sequence[NewJob], url: str, ahead: int
) -> list[int]:
    """Insert the jobs; the ids reserved for the next submit."""
    params = {
        "batch": q.submit_batch(ids, jobs),
        "shard": q.submitter_shard(),
        "ahead": ahead,
        "park_after": rules.PARK_AFTER_S,
    }
    row = conn.execute(q.SUBMIT, params).fetchone()
    if row is None or row[0] != len(jobs):
        raise SchemaError(texts.no_cluster_row(url))
    return sorted(int(i) for i in row[2])


def _take_keys(conn: Conn, ids: Sequence[int], jobs: Sequence[NewJob]) -> dict[str | None, int]:
    """Take the batch's keys for its jobs; the keys another job holds, with that job's id."""
    pending = sorted((j.key, i, j.key_window_s) for i, j in zip(ids, jobs, strict=True) if j.key)
    held: dict[str | None, int] = {}
    while pending:
        fresh = {r[0] for r in conn.execute(q.TAKE_NEW_KEYS, _key_rows(pending))}
        existing = [row for row in pending if row[0] not in fresh]
        if not existing:
            break
        holders: dict[str, int] = dict(
            conn.execute(q.LOCK_KEYS, {"keys": [r[0] for r in existing]}).fetchall()
        )
        freed = [row for row in existing if row[0] in holders]
        taken = {r[0] for r in conn.execute(q.TAKE_FREED_KEYS, _key_rows(freed))}
        held.update((k, int(i)) for k, i in holders.items() if k not in taken)
        # A key whose job was pruned between the two looks is gone: insert it again.
        pending = [row for row in existing if row[0] not in holders]
    return held


def _key_rows(rows: Sequence[tuple[str, int, float]]) -> dict[str, list[Any]]:
    return {
        "keys": [r[0] for r in rows],
        "ids": [r[1] for r in rows],
        "windows": [r[2] for r in rows],
    }


def _as_recorded(
    conn: Conn, ids: Sequence[int], jobs: Sequence[NewJob], present: set[int]
) -> list[Submitted]:
    """What a batch that did commit made of each job, read back after its outcome was lost."""
    keys = [j.key for i, j in zip(ids, jobs, strict=True) if i not in present and j.key]
    holders: dict[str | None, int] = {}
    if keys:
        holders.update(conn.execute(q.KEY_HOLDERS, (keys,)).fetchall())
    return [
        Submitted(i, True) if i in present else Submitted(int(holders.get(j.key, i)), False)
        for i, j in zip(ids, jobs, strict=True)
    ]


# How often a cancel looks again at a job that changed state under it (claimed as it was about
# to be cancelled, say): each look finds it in a new state, so a few always suffice.
CANCEL_LOOKS = 5


def cancel(conn: Conn, retried: bool, job_id: int, by: str | None) -> CancelResult:
    """Cancel a queued job, or record the request on a running one (see `Store.cancel_job`).

    Each write re-checks the state the look found (a row lock orders it with a concurrent claim
    or outcome); when it changed nothing, the job moved on, and the cancel looks again.
    """
    params = {"id": job_id, "by": by, "error": texts.CANCELLED_QUEUED}
    for _ in range(CANCEL_LOOKS):
        row = conn.execute(q.CANCEL_STATE, (job_id,)).fetchone()
        verdict = rules.cancel_verdict(None if row is None else row[0], bool(row and row[1]))
        if retried and row is not None and by is not None and row[2] == by:
            # An earlier try whose connection broke may have done it already.
            if verdict is CancelResult.ALREADY_REQUESTED:
                return CancelResult.REQUESTED
            if row[0] == JobState.CANCELLED.value:
                return CancelResult.CANCELLED
        if verdict is CancelResult.CANCELLED:
            ahead = row is not None and row[0] == JobState.CLAIMED.value
            if scalar(conn, q.CANCEL_CLAIMED if ahead else q.CANCEL, params) == 1:
                return verdict
        elif verdict is CancelResult.REQUESTED:
            if exists(conn, q.REQUEST_CANCEL, params):
                return verdict
        else:
            return verdict
    raise DatastoreUnavailable(f"job {job_id} kept changing state while being cancelled; try again")


def cancel_requests(conn: Conn, node_id: int) -> list[CancelRequest]:
    return [
        CancelRequest(int(r[0]), int(r[1]), float(r[2]), r[3])
        for r in conn.execute(q.CANCEL_REQUESTS, (node_id,))
    ]


def claim(
    conn: Conn, retried: bool, params: dict[str, Any], busy: bool, by_task: bool
) -> list[Job]:
    """Claim with CLAIM's `params`; a retry first collects what an earlier try took.

    A node that is not `busy` (its last claim found nothing) looks before locking anything.
    `by_task`: find the candidates task by task (CLAIM_BY_TASK; see `untaken_backlog_is_large`).
    """
    node_id, token = params["node"], params["token"]
    if retried:  # did the try whose connection broke commit? then these are ours
        found = conn.execute(q.CLAIMED_BY_TOKEN, {"node": node_id, "token": token}).fetchall()
        if found:
            return [job_from_row(r) for r in found]
    elif not busy:  # idle nodes poll: look before locking anything
        look = q.ANY_CLAIMABLE_BY_TASK if by_task else q.ANY_CLAIMABLE
        if not exists(conn, look, (node_id,)):
            return []
    return [job_from_row(r) for r in conn.execute(q.CLAIM_BY_TASK if by_task else q.CLAIM, params)]


def untaken_backlog_is_large(conn: Conn, node_id: int) -> bool:
    """Whether so many queued jobs are of tasks the node cannot take (UNTAKEN_BACKLOG) that its
    claims should find their candidates task by task, stepping around them."""
    row = conn.execute(q.UNTAKEN_BACKLOG, (node_id,)).fetchone()
    if row is None:
        return False
    untaken, partitions = int(row[0]), int(row[1] or 1)
    return untaken > rules.UNTAKEN_PER_PARTITION * partitions


def claim_stranded(conn: Conn, retried: bool, params: dict[str, Any]) -> list[Job]:
    """Claim jobs that wait for a task their owner lacks (see `Store.claim_stranded`), with
    CLAIM_STRANDED's `params` but the ids; a retry first collects what an earlier try took."""
    node_id, token, limit = params["node"], params["token"], params["limit"]
    if retried:
        found = conn.execute(q.CLAIMED_BY_TOKEN, {"node": node_id, "token": token}).fetchall()
        if found:
            return [job_from_row(r) for r in found]
    mine = conn.execute(q.ELIGIBLE_TASKS, (node_id,)).fetchone()
    if mine is None:
        return []
    owners = {int(r[0]): list(r[1]) for r in conn.execute(q.OWNER_TASKS)}
    waiting: list[tuple[int, int]] = []  # (-priority, id): claim order
    for owner, task in rules.stranded_tasks(node_id, list(mine[0]), owners):
        args = {"task": task, "owner": owner, "limit": limit}
        waiting += [(-int(r[1]), int(r[0])) for r in conn.execute(q.STRANDED, args)]
    if not waiting:
        return []
    args = {**params, "ids": [job_id for _, job_id in sorted(waiting)[:limit]]}
    return [job_from_row(r) for r in conn.execute(q.CLAIM_STRANDED, args)]


def start_claimed(conn: Conn, params: dict[str, Any]) -> list[Job]:
    """Start jobs claimed ahead (START_CLAIMED's `params`), in claim order; the same call again
    after an outcome lost with the connection returns the same jobs."""
    started = [job_from_row(r) for r in conn.execute(q.START_CLAIMED, params)]
    return sorted(started, key=rules.claim_order)


def collect_lost_claims(conn: Conn, node_id: int, tokens: list[int]) -> list[Job]:
    """The jobs that claims given up as lost did take, if they committed."""
    rows = conn.execute(q.CLAIMED_BY_TOKENS, {"node": node_id, "tokens": tokens})
    return [job_from_row(r) for r in rows]


def record_progress(conn: Conn, node_id: int, updates: Sequence[ProgressUpdate]) -> int:
    params = {
        "node": node_id,
        "ids": [u.job_id for u in updates],
        "attempts": [u.attempt for u in updates],
        "fractions": [u.fraction for u in updates],
        "messages": [u.message for u in updates],
    }
    return int(conn.execute(q.PROGRESS, params).rowcount)


def finish(conn: Conn, retried: bool, node_id: int, outcomes: Sequence[Outcome]) -> list[bool]:
    params = {
        "node": node_id,
        "shard": q.counter_shard(node_id),
        "batch": q.outcome_batch(outcomes),
        "head": texts.CANCELLED_RUNNING,
        "anyway": texts.CANCEL_FINISHED_ANYWAY,
        "park_after": rules.PARK_AFTER_S,
    }
    applied = {(int(r[0]), int(r[1])) for r in conn.execute(q.FINISH, params)}
    rest = [o for o in outcomes if (o.job_id, o.attempt) not in applied]
    if rest:  # asked to cancel, or no longer held: one more statement only then
        cancelled = {**params, "batch": q.outcome_batch(rest)}
        applied |= {(int(r[0]), int(r[1])) for r in conn.execute(q.FINISH_CANCELLED, cancelled)}
        rest = [o for o in rest if (o.job_id, o.attempt) not in applied]
    if rest:
        # A row written by someone else while FINISH ran: the worker process recording the start
        # of a tiny job as the lease ran short (`record_begun`). FINISH waited for that row,
        # found it under a new ctid and so left it; a new statement finds the new version.
        again = {**params, "batch": q.outcome_batch(rest)}
        applied |= {(int(r[0]), int(r[1])) for r in conn.execute(q.FINISH, again)}
    if retried:  # outcomes an earlier, lost try already recorded count as applied
        applied |= {(int(r[0]), int(r[1])) for r in conn.execute(q.FINISHED_AS_SENT, params)}
    return [(o.job_id, o.attempt) in applied for o in outcomes]


def release(conn: Conn, node_id: int, job_ids: Sequence[int]) -> int:
    params = {
        "node": node_id,
        "shard": q.counter_shard(node_id),
        "ids": list(job_ids),
        "error": texts.CANCELLED_RUNNING + texts.CANCEL_NODE_STOPPED,
    }
    released = 0
    for statement in (q.RELEASE, q.RELEASE_CLAIMED):
        row = conn.execute(statement, params).fetchone()
        released += 0 if row is None else int(row[0])
    return released + int(scalar(conn, q.RELEASE_CANCELLED, params))


def record_sample(conn: Conn, interval_s: float) -> bool:
    return conn.execute(q.SAMPLE, {"interval": interval_s}).fetchone() is not None
