"""What the PostgreSQL store reads: jobs, nodes, the cluster now or at a past moment, history,
samples and job counts.

Plain functions over a borrowed connection, so the store's reads and its write transactions share
them, with the small query helpers and the conversions of rows to Shoal's values (positional:
claims turn thousands of rows a second).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from psycopg import Connection

from shoal import model
from shoal.errors import SchemaError
from shoal.store import rules, texts
from shoal.store.postgres import queries as q

Conn = Connection[tuple[Any, ...]]

# The term that selects index jobs_queued_by_id (migration 0003) for a list of queued jobs.
QUEUED_BY_ID = "partition >= 0"


def read_job(conn: Conn, job_id: int) -> model.Job | None:
    row = conn.execute(q.READ_JOB, (job_id,)).fetchone()
    return None if row is None else job_from_row(row)


def list_jobs_query(
    where: model.JobFilter, limit: int, before_id: int | None
) -> tuple[str, list[Any]]:
    """The statement and parameters of `list_jobs`."""
    return rules.list_jobs_query(where, limit, before_id, "%s", [QUEUED_BY_ID])


def list_jobs(
    conn: Conn, where: model.JobFilter, limit: int, before_id: int | None
) -> list[model.Job]:
    sql, params = list_jobs_query(where, limit, before_id)
    return [job_from_row(r) for r in conn.execute(sql, params)]


def known_tasks(conn: Conn) -> set[str]:
    return {str(r[0]) for r in conn.execute(q.KNOWN_TASKS)}


def read_cluster(conn: Conn, dead_window_s: float) -> model.ClusterView:
    with conn.transaction():
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        now = float(scalar(conn, f"SELECT {q.NOW}"))
        partitions, epoch = one(conn.execute(q.CLUSTER).fetchone())
        rows = conn.execute(q.NODES_IN_VIEW, (now - dead_window_s,)).fetchall()
        counts = {s: 0 for s in model.JobState}
        for state, n in conn.execute(q.COUNT_BY_STATE):
            counts[model.JobState(state)] = int(n)
        oldest = conn.execute(q.OLDEST_QUEUED_AGE).fetchone()
        return model.ClusterView(
            partitions=int(partitions),
            epoch=int(epoch),
            now=now,
            nodes=tuple(node_from_row(r) for r in rows),
            owners=owners(conn),
            job_counts=counts,
            oldest_queued_age_s=None if oldest is None else float(oldest[0]),
            homes=homes(conn),
        )


def read_node(conn: Conn, node_id: int) -> model.NodeRecord | None:
    row = conn.execute(q.READ_NODE, (node_id,)).fetchone()
    return None if row is None else node_from_row(row)


def read_history(
    conn: Conn, since: float, until: float | None, limit: int
) -> list[model.HistoryEvent]:
    bound = until if until is not None else float("inf")
    return [event_from_row(r) for r in conn.execute(q.READ_HISTORY, (since, bound, limit))]


def read_last_rebalance(conn: Conn, at: float) -> model.HistoryEvent | None:
    row = conn.execute(q.LAST_REBALANCE, (at,)).fetchone()
    return None if row is None else event_from_row(row)


def read_node_states_at(conn: Conn, at: float) -> list[model.NodeRecord]:
    past = [
        rules.PastState(
            node=node_from_row((*row[:-2], 0)),
            state=model.NodeState(row[-2]),
            changed_at=float(row[-1]),
        )
        for row in conn.execute(q.NODE_STATES_AT, {"at": at})
    ]
    return rules.node_states_at(at, past, read_last_rebalance(conn, at))


def read_samples(conn: Conn, since: float, until: float | None) -> list[model.Sample]:
    bound = until if until is not None else float("inf")
    return [model.Sample(*r) for r in conn.execute(q.READ_SAMPLES, (since, bound))]


def count_jobs_by_task(conn: Conn) -> dict[tuple[str, model.JobState], int]:
    return {(str(r[0]), model.JobState(r[1])): int(r[2]) for r in conn.execute(q.COUNT_BY_TASK)}


def list_finished(conn: Conn, since: float, limit: int) -> list[model.Job]:
    return [job_from_row(r) for r in conn.execute(q.LIST_FINISHED, (since, limit))]


def last_started(conn: Conn, node_id: int) -> list[int]:
    return [int(r[0]) for r in conn.execute(q.LAST_STARTED, {"node": node_id})]


def running_attempts(conn: Conn, node_id: int) -> list[tuple[int, int]]:
    return [(int(r[0]), int(r[1])) for r in conn.execute(q.RUNNING_ATTEMPTS, {"node": node_id})]


def read_task_limits(conn: Conn) -> list[model.TaskLimitUse]:
    return [
        model.TaskLimitUse(model.TaskLimit(str(r[0]), r[1], r[2]), int(r[3]), int(r[4]))
        for r in conn.execute(q.READ_TASK_LIMITS)
    ]


def section_of_node(conn: Conn, node_id: int) -> frozenset[int]:
    row = conn.execute(q.SECTION_OF_NODE, (node_id,)).fetchone()
    return frozenset(row[0]) if row else frozenset()


# -- small helpers --------------------------------------------------------------------------------


def scalar(conn: Conn, sql: str, params: Any = None) -> Any:
    """The first column of the statement's one row; SchemaError if it returns none."""
    return one(conn.execute(sql, params).fetchone())[0]


def one(row: tuple[Any, ...] | None) -> tuple[Any, ...]:
    if row is None:
        raise SchemaError(texts.NO_CLUSTER_ROW)
    return row


def exists(conn: Conn, sql: str, params: Any = None) -> bool:
    return conn.execute(sql, params).fetchone() is not None


def owners(conn: Conn) -> tuple[int | None, ...]:
    return tuple(None if r[0] is None else int(r[0]) for r in conn.execute(q.OWNERS))


def homes(conn: Conn) -> tuple[int | None, ...]:
    return tuple(None if r[0] is None else int(r[0]) for r in conn.execute(q.HOMES))


# -- rows to values -------------------------------------------------------------------------------

JOB_STATES = {state.value: state for state in model.JobState}


def job_from_row(r: Sequence[Any]) -> model.Job:
    """A Job from a row of JOB_COLUMNS (positional: claims turn thousands of rows a second)."""
    return model.Job(r[0], r[1], r[2], r[3], r[4], JOB_STATES[r[5]], *r[6:23])


def node_from_row(r: Sequence[Any]) -> model.NodeRecord:
    """A node from NODE_COLUMNS followed by its running count."""
    return model.NodeRecord(
        id=r[0],
        name=r[1],
        state=model.NodeState(r[2]),
        section=tuple(r[3]),
        host=r[4],
        pid=r[5],
        concurrency=r[6],
        tasks=tuple(r[7]),
        started_at=r[8],
        heartbeat_at=r[9],
        lease_expires_at=r[10],
        state_changed_at=r[11],
        pause_requested=bool(r[12]),
        processed=r[13],
        failed=r[14],
        running=int(r[15]),
    )


def event_from_row(r: Sequence[Any]) -> model.HistoryEvent:
    return model.HistoryEvent(
        id=r[0],
        at=r[1],
        kind=model.EventKind(r[2]),
        node_id=r[3],
        node_name=r[4],
        from_state=model.NodeState(r[5]) if r[5] else None,
        to_state=model.NodeState(r[6]) if r[6] else None,
        epoch=r[7],
        owners=tuple(r[8]) if r[8] is not None else None,
        reason=r[9],
    )
