"""The read side of the SQLite datastore: what `shoal status`, the observer and metrics show.

Jobs by id or by filter, the cluster and its nodes now or at a past moment, history, samples and
job counts; none of these reads takes the write lock. The conversions of rows to Shoal's values
live here too, with the few reads the write side makes inside its own transactions.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from typing import Any

from shoal import assignment
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
from shoal.store.sqlite_file import SqliteFile

JOB_COLUMNS = (
    "id, partition, task, args, kwargs, state, attempts, max_attempts, timeout_s, run_after, "
    "claimer, progress, progress_message, result, error, traceback, created_at, started_at, "
    "finished_at"
)


class SqliteReads(SqliteFile):
    """The Store's reads on one SQLite file."""

    # -- reading jobs ---------------------------------------------------------------------------

    def read_job(self, job_id: int) -> Job | None:
        with self._read() as cur:
            row = cur.execute(f"SELECT {JOB_COLUMNS} FROM jobs WHERE id = ?", (job_id,)).fetchone()
            return None if row is None else job_from_row(row)

    def list_jobs(
        self, where: JobFilter, limit: int = 50, before_id: int | None = None
    ) -> list[Job]:
        clauses, params = _job_filter_sql(where)
        if before_id is not None:
            clauses.append("id < ?")
            params.append(before_id)
        sql = f"SELECT {JOB_COLUMNS} FROM jobs"
        if clauses:
            sql += " WHERE " + " AND ".join(clauses)
        sql += " ORDER BY id DESC LIMIT ?"
        with self._read() as cur:
            return [job_from_row(r) for r in cur.execute(sql, (*params, limit)).fetchall()]

    def known_tasks(self) -> set[str]:
        with self._read() as cur:
            rows = cur.execute("SELECT tasks FROM nodes WHERE state <> 'dead'").fetchall()
        return {task for row in rows for task in json.loads(row[0])}

    # -- history and views ----------------------------------------------------------------------

    def read_cluster(self, dead_window_s: float = 600.0) -> ClusterView:
        def read(cur: sqlite3.Cursor) -> ClusterView:
            now = self._now(cur)
            partitions, epoch = cur.execute(
                "SELECT partitions, epoch FROM cluster WHERE id = 1"
            ).fetchone()
            running = dict(
                cur.execute(
                    "SELECT claimer, count(*) FROM jobs WHERE state = 'running' GROUP BY claimer"
                ).fetchall()
            )
            rows = cur.execute(
                "SELECT * FROM nodes WHERE state <> 'dead' OR state_changed_at >= ? ORDER BY id",
                (now - dead_window_s,),
            ).fetchall()
            counts = self._count_by_state(cur)
            return ClusterView(
                partitions=int(partitions),
                epoch=int(epoch),
                now=now,
                nodes=tuple(node_from_row(r, running.get(r["id"], 0)) for r in rows),
                owners=self._owners(cur),
                job_counts=counts,
                oldest_queued_age_s=self._oldest_queued_age(cur, now),
            )

        return self._run(read, write=False)

    def read_node(self, node_id: int) -> NodeRecord | None:
        with self._read() as cur:
            row = cur.execute("SELECT * FROM nodes WHERE id = ?", (node_id,)).fetchone()
            if row is None:
                return None
            running = cur.execute(
                "SELECT count(*) FROM jobs WHERE state = 'running' AND claimer = ?", (node_id,)
            ).fetchone()[0]
            return node_from_row(row, int(running))

    def read_history(
        self, since: float, until: float | None = None, limit: int = 10_000
    ) -> list[HistoryEvent]:
        with self._read() as cur:
            rows = cur.execute(
                "SELECT * FROM history WHERE at >= ? AND at <= ? ORDER BY at, id LIMIT ?",
                (since, until if until is not None else float("inf"), limit),
            ).fetchall()
        return [event_from_row(r) for r in rows]

    def read_last_rebalance(self, at: float) -> HistoryEvent | None:
        with self._read() as cur:
            row = cur.execute(
                "SELECT * FROM history WHERE kind = 'rebalance' AND at <= ?"
                " ORDER BY at DESC, id DESC LIMIT 1",
                (at,),
            ).fetchone()
        return None if row is None else event_from_row(row)

    def read_node_states_at(self, at: float) -> list[NodeRecord]:
        rebalance = self.read_last_rebalance(at)
        owned = assignment.sections(rebalance.owners or ()) if rebalance else {}
        with self._read() as cur:
            rows = cur.execute(
                "SELECT n.*, (SELECT h.to_state FROM history h WHERE h.node_id = n.id"
                "  AND h.kind = 'node_state' AND h.at <= ? ORDER BY h.at DESC, h.id DESC LIMIT 1)"
                "  AS past_state,"
                " (SELECT h.at FROM history h WHERE h.node_id = n.id"
                "  AND h.kind = 'node_state' AND h.at <= ? ORDER BY h.at DESC, h.id DESC LIMIT 1)"
                "  AS past_changed_at"
                " FROM nodes n WHERE n.started_at <= ? ORDER BY n.id",
                (at, at, at),
            ).fetchall()
        out = []
        for r in rows:
            if r["past_state"] is None:
                continue
            node = node_from_row(r, 0)
            state = NodeState(r["past_state"])
            if state is NodeState.DEAD and r["past_changed_at"] < at - 600.0:
                continue
            out.append(
                NodeRecord(
                    **{
                        **node.__dict__,
                        "state": state,
                        "section": owned.get(node.id, ()),
                        "state_changed_at": float(r["past_changed_at"]),
                    }
                )
            )
        return out

    def read_samples(self, since: float, until: float | None = None) -> list[Sample]:
        with self._read() as cur:
            rows = cur.execute(
                "SELECT * FROM samples WHERE at >= ? AND at <= ? ORDER BY at",
                (since, until if until is not None else float("inf")),
            ).fetchall()
        return [
            Sample(
                at=r["at"],
                interval_s=r["interval_s"],
                queued=r["queued"],
                running=r["running"],
                succeeded=r["succeeded"],
                failed=r["failed"],
                live_nodes=r["live_nodes"],
                oldest_queued_age_s=r["oldest_queued_age_s"],
            )
            for r in rows
        ]

    def count_jobs_by_task(self) -> dict[tuple[str, JobState], int]:
        with self._read() as cur:
            rows = cur.execute(
                "SELECT task, state, sum(n) FROM job_counts GROUP BY task, state HAVING sum(n) <> 0"
            )
            return {(r[0], JobState(r[1])): int(r[2]) for r in rows}

    def list_finished(self, since: float, limit: int = 1000) -> list[Job]:
        with self._read() as cur:
            rows = cur.execute(
                f"SELECT {JOB_COLUMNS} FROM jobs WHERE finished_at >= ?"
                " ORDER BY finished_at, id LIMIT ?",
                (since, limit),
            ).fetchall()
        return [job_from_row(r) for r in rows]

    # -- inside transactions --------------------------------------------------------------------

    def _owners(self, cur: sqlite3.Cursor) -> tuple[int | None, ...]:
        rows = cur.execute("SELECT owner FROM partitions ORDER BY partition").fetchall()
        return tuple(r[0] for r in rows)

    @staticmethod
    def _count_by_state(cur: sqlite3.Cursor) -> dict[JobState, int]:
        counts = {s: 0 for s in JobState}
        for state, n in cur.execute("SELECT state, sum(n) FROM job_counts GROUP BY state"):
            counts[JobState(state)] = int(n)
        return counts

    @staticmethod
    def _oldest_queued_age(cur: sqlite3.Cursor, now: float) -> float | None:
        row = cur.execute(
            "SELECT created_at FROM jobs WHERE state = 'queued' ORDER BY id LIMIT 1"
        ).fetchone()
        return None if row is None else max(0.0, now - row[0])


# -- rows to values -------------------------------------------------------------------------------


def _section(text: str) -> tuple[int, ...]:
    return tuple(json.loads(text)) if text else ()


def _section_text(section: Sequence[int]) -> str:
    return json.dumps(list(section), separators=(",", ":")) if section else ""


def job_from_row(r: sqlite3.Row) -> Job:
    return Job(
        id=r["id"],
        partition=r["partition"],
        task=r["task"],
        args_json=r["args"],
        kwargs_json=r["kwargs"],
        state=JobState(r["state"]),
        attempts=r["attempts"],
        max_attempts=r["max_attempts"],
        timeout_s=r["timeout_s"],
        run_after=r["run_after"],
        claimer=r["claimer"],
        progress=r["progress"],
        progress_message=r["progress_message"],
        result_json=r["result"],
        error=r["error"],
        traceback=r["traceback"],
        created_at=r["created_at"],
        started_at=r["started_at"],
        finished_at=r["finished_at"],
    )


def node_from_row(r: sqlite3.Row, running: int) -> NodeRecord:
    return NodeRecord(
        id=r["id"],
        name=r["name"],
        state=NodeState(r["state"]),
        section=_section(r["section"]),
        host=r["host"],
        pid=r["pid"],
        concurrency=r["concurrency"],
        tasks=tuple(json.loads(r["tasks"])),
        started_at=r["started_at"],
        heartbeat_at=r["heartbeat_at"],
        lease_expires_at=r["lease_expires_at"],
        state_changed_at=r["state_changed_at"],
        pause_requested=bool(r["pause_requested"]),
        processed=r["processed"],
        failed=r["failed"],
        running=running,
    )


def event_from_row(r: sqlite3.Row) -> HistoryEvent:
    return HistoryEvent(
        id=r["id"],
        at=r["at"],
        kind=EventKind(r["kind"]),
        node_id=r["node_id"],
        node_name=r["node_name"],
        from_state=NodeState(r["from_state"]) if r["from_state"] else None,
        to_state=NodeState(r["to_state"]) if r["to_state"] else None,
        epoch=r["epoch"],
        owners=tuple(json.loads(r["owners"])) if r["owners"] else None,
        reason=r["reason"],
    )


def _job_filter_sql(where: JobFilter) -> tuple[list[str], list[Any]]:
    clauses: list[str] = []
    params: list[Any] = []
    if where.state is not None:
        # A literal (one of five fixed words), not a parameter: SQLite uses a partial index only
        # when the query's own terms prove its WHERE clause, and a parameter proves nothing.
        clauses.append(f"state = '{JobState(where.state).value}'")
    if where.task is not None:
        clauses.append("task = ?")
        params.append(where.task)
    if where.node_id is not None:
        clauses.append("claimer = ?")
        params.append(where.node_id)
    if where.min_id is not None:
        clauses.append("id >= ?")
        params.append(where.min_id)
    if where.max_id is not None:
        clauses.append("id <= ?")
        params.append(where.max_id)
    return clauses, params
