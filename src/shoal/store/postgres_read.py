"""The read side of the PostgreSQL datastore: what `shoal status`, the observer and metrics show.

Jobs by id or by filter, the cluster and its nodes now or at a past moment, history, samples and
job counts, each read on a pooled connection and retried through outages like any operation. The
conversions of rows to Shoal's values live here too, with the small query helpers that the write
side shares.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from psycopg import Connection

from shoal import assignment
from shoal.errors import SchemaError
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
)
from shoal.store import postgres_sql as q
from shoal.store.postgres_conn import Connector

Conn = Connection[tuple[Any, ...]]


class PostgresReads:
    """The Store's reads on one PostgreSQL database, each on a connection borrowed from `_db`."""

    _db: Connector  # set by PostgresStore

    # -- reading jobs -------------------------------------------------------------------------

    def read_job(self, job_id: int) -> Job | None:
        def read(conn: Conn, _: bool) -> Job | None:
            row = conn.execute(
                f"SELECT {q.JOB_COLUMNS} FROM jobs WHERE id = %s", (job_id,)
            ).fetchone()
            return None if row is None else job_from_row(row)

        return self._db.run("read job", read)

    def list_jobs(
        self, where: JobFilter, limit: int = 50, before_id: int | None = None
    ) -> list[Job]:
        sql, params = list_jobs_query(where, limit, before_id)

        def read(conn: Conn, _: bool) -> list[Job]:
            return [job_from_row(r) for r in conn.execute(sql, params)]

        return self._db.run("list jobs", read)

    def known_tasks(self) -> set[str]:
        def read(conn: Conn, _: bool) -> set[str]:
            rows = conn.execute("SELECT DISTINCT unnest(tasks) FROM nodes WHERE state <> 'dead'")
            return {str(r[0]) for r in rows}

        return self._db.run("read known tasks", read)

    # -- history and views --------------------------------------------------------------------

    def read_cluster(self, dead_window_s: float = 600.0) -> ClusterView:
        def read(conn: Conn, _: bool) -> ClusterView:
            with conn.transaction():
                conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                now = float(_scalar(conn, f"SELECT {q.NOW}"))
                cluster = conn.execute("SELECT partitions, epoch FROM cluster WHERE id = 1")
                partitions, epoch = _one(cluster.fetchone())
                rows = conn.execute(
                    f"{q.NODE_WITH_RUNNING} WHERE state <> 'dead' OR state_changed_at >= %s"
                    " ORDER BY id",
                    (now - dead_window_s,),
                ).fetchall()
                counts = {s: 0 for s in JobState}
                for state, n in conn.execute(q.COUNT_BY_STATE):
                    counts[JobState(state)] = int(n)
                oldest = conn.execute(q.OLDEST_QUEUED_AGE).fetchone()
                return ClusterView(
                    partitions=int(partitions),
                    epoch=int(epoch),
                    now=now,
                    nodes=tuple(node_from_row(r) for r in rows),
                    owners=_owners(conn),
                    job_counts=counts,
                    oldest_queued_age_s=None if oldest is None else float(oldest[0]),
                )

        return self._db.run("read cluster", read)

    def read_node(self, node_id: int) -> NodeRecord | None:
        def read(conn: Conn, _: bool) -> NodeRecord | None:
            row = conn.execute(f"{q.NODE_WITH_RUNNING} WHERE id = %s", (node_id,)).fetchone()
            return None if row is None else node_from_row(row)

        return self._db.run("read node", read)

    def read_history(
        self, since: float, until: float | None = None, limit: int = 10_000
    ) -> list[HistoryEvent]:
        def read(conn: Conn, _: bool) -> list[HistoryEvent]:
            rows = conn.execute(
                f"SELECT {q.EVENT_COLUMNS} FROM history WHERE at >= %s AND at <= %s"
                " ORDER BY at, id LIMIT %s",
                (since, until if until is not None else float("inf"), limit),
            )
            return [event_from_row(r) for r in rows]

        return self._db.run("read history", read)

    def read_last_rebalance(self, at: float) -> HistoryEvent | None:
        def read(conn: Conn, _: bool) -> HistoryEvent | None:
            row = conn.execute(
                f"SELECT {q.EVENT_COLUMNS} FROM history WHERE kind = 'rebalance' AND at <= %s"
                " ORDER BY at DESC, id DESC LIMIT 1",
                (at,),
            ).fetchone()
            return None if row is None else event_from_row(row)

        return self._db.run("read last rebalance", read)

    def read_node_states_at(self, at: float) -> list[NodeRecord]:
        rebalance = self.read_last_rebalance(at)
        owned = assignment.sections(rebalance.owners or ()) if rebalance else {}

        def read(conn: Conn, _: bool) -> list[NodeRecord]:
            out = []
            for row in conn.execute(q.NODE_STATES_AT, {"at": at}):
                state, changed_at = NodeState(row[-2]), float(row[-1])
                if state is NodeState.DEAD and changed_at < at - 600.0:
                    continue  # long gone by then, as the live view would show it
                node = node_from_row((*row[:-2], 0))
                out.append(
                    NodeRecord(
                        **{
                            **node.__dict__,
                            "state": state,
                            "section": owned.get(node.id, ()),
                            "state_changed_at": changed_at,
                        }
                    )
                )
            return out

        return self._db.run("read past node states", read)

    def read_samples(self, since: float, until: float | None = None) -> list[Sample]:
        def read(conn: Conn, _: bool) -> list[Sample]:
            rows = conn.execute(
                "SELECT at, interval_s, queued, running, succeeded, failed, live_nodes,"
                " oldest_queued_age_s FROM samples WHERE at >= %s AND at <= %s ORDER BY at",
                (since, until if until is not None else float("inf")),
            )
            return [Sample(*r) for r in rows]

        return self._db.run("read samples", read)

    def count_jobs_by_task(self) -> dict[tuple[str, JobState], int]:
        def read(conn: Conn, _: bool) -> dict[tuple[str, JobState], int]:
            rows = conn.execute(q.COUNT_BY_TASK)
            return {(str(r[0]), JobState(r[1])): int(r[2]) for r in rows}

        return self._db.run("count jobs by task", read)

    def list_finished(self, since: float, limit: int = 1000) -> list[Job]:
        def read(conn: Conn, _: bool) -> list[Job]:
            rows = conn.execute(
                f"SELECT {q.JOB_COLUMNS} FROM jobs WHERE finished_at >= %s"
                " ORDER BY finished_at, id LIMIT %s",
                (since, limit),
            )
            return [job_from_row(r) for r in rows]

        return self._db.run("list finished jobs", read)


# -- rows to values -------------------------------------------------------------------------------


def _scalar(conn: Conn, sql: str, params: Any = None) -> Any:
    return _one(conn.execute(sql, params).fetchone())[0]


def _one(row: tuple[Any, ...] | None) -> tuple[Any, ...]:
    if row is None:
        raise SchemaError("the Shoal schema has no cluster row; run `shoal init`")
    return row


def _owners(conn: Conn) -> tuple[int | None, ...]:
    return tuple(None if r[0] is None else int(r[0]) for r in conn.execute(q.OWNERS))


_JOB_STATES = {state.value: state for state in JobState}


def job_from_row(r: Sequence[Any]) -> Job:
    """A Job from a row of JOB_COLUMNS (positional: claims turn thousands of rows a second)."""
    return Job(r[0], r[1], r[2], r[3], r[4], _JOB_STATES[r[5]], *r[6:19])


def node_from_row(r: Sequence[Any]) -> NodeRecord:
    """A node from NODE_COLUMNS followed by its running count."""
    return NodeRecord(
        id=r[0],
        name=r[1],
        state=NodeState(r[2]),
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


def event_from_row(r: Sequence[Any]) -> HistoryEvent:
    return HistoryEvent(
        id=r[0],
        at=r[1],
        kind=EventKind(r[2]),
        node_id=r[3],
        node_name=r[4],
        from_state=NodeState(r[5]) if r[5] else None,
        to_state=NodeState(r[6]) if r[6] else None,
        epoch=r[7],
        owners=tuple(r[8]) if r[8] is not None else None,
        reason=r[9],
    )


def list_jobs_query(where: JobFilter, limit: int, before_id: int | None) -> tuple[str, list[Any]]:
    """The statement and parameters of `list_jobs`."""
    clauses, params = _job_filter_sql(where)
    if before_id is not None:
        clauses.append("id < %s")
        params.append(before_id)
    sql = f"SELECT {q.JOB_COLUMNS} FROM jobs"
    if clauses:
        sql += " WHERE " + " AND ".join(clauses)
    return sql + " ORDER BY id DESC LIMIT %s", [*params, limit]


def _job_filter_sql(where: JobFilter) -> tuple[list[str], list[Any]]:
    clauses: list[str] = []
    params: list[Any] = []
    if where.state is not None:
        # A literal (one of five fixed words), not a parameter: the indexes that serve a state
        # are partial, and a generic plan of a prepared statement could not prove one applies.
        clauses.append(f"state = '{JobState(where.state).value}'")
        if where.state is JobState.QUEUED:
            clauses.append("partition >= 0")  # selects index jobs_queued_by_id (migration 0003)
    for column, value in (
        ("task = %s", where.task),
        ("claimer = %s", where.node_id),
        ("id >= %s", where.min_id),
        ("id <= %s", where.max_id),
    ):
        if value is not None:
            clauses.append(column)
            params.append(value)
    return clauses, params
