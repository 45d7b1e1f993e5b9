"""The job side of the PostgreSQL store: submitting, cancelling, claiming, progress, finishing
and releasing jobs, and sampling the cluster.

Plain functions over a borrowed connection, each the body of one operation; the hot ones are a
single statement. Those that could be applied twice when a commit's outcome is lost with the
connection take `retried` and look before they write again: a submit checks for the ids it
reserved, a claim for its token, a finish for outcomes already recorded as sent.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from shoal.errors import SchemaError
from shoal.model import Job, JobState, NewJob, Outcome, ProgressUpdate
from shoal.store import rules, texts
from shoal.store.postgres import queries as q
from shoal.store.postgres.reads import Conn, exists, job_from_row, scalar


def submit(
    conn: Conn, retried: bool, ids: list[int], jobs: Sequence[NewJob], url: str
) -> list[int]:
    """Insert the batch under ids reserved first (filled into `ids` on the first try)."""
    # Ids are reserved first (sequences never roll back), so a retry after a lost commit can tell
    # whether the batch went in: the batch is all-or-none, so its first id says.
    if ids and retried and exists(conn, q.JOB_EXISTS, (ids[0],)):
        return ids
    if not ids:
        rows = conn.execute(q.ALLOCATE_IDS, (len(jobs),)).fetchall()
        ids.extend(sorted(int(r[0]) for r in rows))
    row = conn.execute(q.SUBMIT, {"batch": q.submit_batch(ids, jobs)}).fetchone()
    if row is None or row[0] != len(jobs):
        raise SchemaError(texts.no_cluster_row(url))
    return ids


def cancel(conn: Conn, retried: bool, job_id: int) -> bool:
    if scalar(conn, q.CANCEL, {"id": job_id}) == 1:
        return True
    if retried:  # an earlier try may have cancelled it before its connection broke
        row = conn.execute(q.JOB_STATE, (job_id,)).fetchone()
        return row is not None and row[0] == JobState.CANCELLED.value
    return False


def claim(conn: Conn, retried: bool, params: dict[str, Any], busy: bool) -> list[Job]:
    """Claim with CLAIM's `params`; a retry first collects what an earlier try took.

    A node that is not `busy` (its last claim found nothing) looks before locking anything.
    """
    node_id, token = params["node"], params["token"]
    if retried:  # did the try whose connection broke commit? then these are ours
        found = conn.execute(q.CLAIMED_BY_TOKEN, (node_id, token)).fetchall()
        if found:
            return [job_from_row(r) for r in found]
    elif not busy and not exists(conn, q.ANY_CLAIMABLE, (node_id,)):
        return []  # idle nodes poll: look before locking anything
    return [job_from_row(r) for r in conn.execute(q.CLAIM, params)]


def claim_stranded(conn: Conn, retried: bool, params: dict[str, Any]) -> list[Job]:
    """Claim jobs that wait for a task their owner lacks (see `Store.claim_stranded`), with
    CLAIM_STRANDED's `params` but the ids; a retry first collects what an earlier try took."""
    node_id, token, limit = params["node"], params["token"], params["limit"]
    if retried:
        found = conn.execute(q.CLAIMED_BY_TOKEN, (node_id, token)).fetchall()
        if found:
            return [job_from_row(r) for r in found]
    mine = conn.execute(q.ELIGIBLE_TASKS, (node_id,)).fetchone()
    if mine is None:
        return []
    owners = {int(r[0]): list(r[1]) for r in conn.execute(q.OWNER_TASKS)}
    ids: list[int] = []
    for owner, task in rules.stranded_tasks(node_id, list(mine[0]), owners):
        args = {"task": task, "owner": owner, "limit": limit}
        ids += [int(r[0]) for r in conn.execute(q.STRANDED, args)]
    if not ids:
        return []
    args = {**params, "ids": sorted(ids)[:limit]}
    return [job_from_row(r) for r in conn.execute(q.CLAIM_STRANDED, args)]


def collect_lost_claims(conn: Conn, node_id: int, tokens: list[int]) -> list[Job]:
    """The jobs that claims given up as lost did take, if they committed."""
    return [job_from_row(r) for r in conn.execute(q.CLAIMED_BY_TOKENS, (node_id, tokens))]


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
    }
    applied = {(int(r[0]), int(r[1])) for r in conn.execute(q.FINISH, params)}
    if retried:  # outcomes an earlier, lost try already recorded count as applied
        applied |= {(int(r[0]), int(r[1])) for r in conn.execute(q.FINISHED_AS_SENT, params)}
    return [(o.job_id, o.attempt) in applied for o in outcomes]


def release(conn: Conn, node_id: int, job_ids: Sequence[int]) -> int:
    params = {"node": node_id, "shard": q.counter_shard(node_id), "ids": list(job_ids)}
    row = conn.execute(q.RELEASE, params).fetchone()
    return 0 if row is None else int(row[0])


def record_sample(conn: Conn, interval_s: float) -> bool:
    return conn.execute(q.SAMPLE, {"interval": interval_s}).fetchone() is not None
