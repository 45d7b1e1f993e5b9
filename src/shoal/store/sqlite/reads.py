"""What the SQLite store reads: jobs, nodes, the cluster now or at a past moment, history, samples.

Plain functions over an open cursor, so the store's reads and its write transactions share them,
with the conversions of SQLite rows (sections and task lists as JSON text) to Shoal's values.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence

from shoal import model
from shoal.store import rules
from shoal.store.sqlite import queries as q
from shoal.store.sqlite.file import now as clock


def read_job(cur: sqlite3.Cursor, job_id: int) -> model.Job | None:
    row = cur.execute(q.READ_JOB, (job_id,)).fetchone()
    return None if row is None else job_from_row(row)


def list_jobs(
    cur: sqlite3.Cursor, where: model.JobFilter, limit: int, before_id: int | None
) -> list[model.Job]:
    sql, params = rules.list_jobs_query(where, limit, before_id, "?")
    return [job_from_row(r) for r in cur.execute(sql, params).fetchall()]


def known_tasks(cur: sqlite3.Cursor) -> set[str]:
    rows = cur.execute(q.KNOWN_TASKS).fetchall()
    return {task for row in rows for task in json.loads(row[0])}


def read_cluster(cur: sqlite3.Cursor, dead_window_s: float) -> model.ClusterView:
    now = clock(cur)
    partitions, epoch = cur.execute(q.LOCK_CLUSTER).fetchone()
    running = dict(cur.execute(q.RUNNING_BY_NODE).fetchall())
    rows = cur.execute(q.NODES_IN_VIEW, (now - dead_window_s,)).fetchall()
    return model.ClusterView(
        partitions=int(partitions),
        epoch=int(epoch),
        now=now,
        nodes=tuple(node_from_row(r, running.get(r["id"], 0)) for r in rows),
        owners=owners(cur),
        job_counts=count_by_state(cur),
        oldest_queued_age_s=oldest_queued_age(cur, now),
        homes=homes(cur),
    )


def read_node(cur: sqlite3.Cursor, node_id: int) -> model.NodeRecord | None:
    row = cur.execute(q.READ_NODE, (node_id,)).fetchone()
    if row is None:
        return None
    running = cur.execute(q.RUNNING_OF_NODE, (node_id,)).fetchone()[0]
    return node_from_row(row, int(running))


def read_history(
    cur: sqlite3.Cursor, since: float, until: float | None, limit: int
) -> list[model.HistoryEvent]:
    bound = until if until is not None else float("inf")
    return [event_from_row(r) for r in cur.execute(q.READ_HISTORY, (since, bound, limit))]


def read_last_rebalance(cur: sqlite3.Cursor, at: float) -> model.HistoryEvent | None:
    row = cur.execute(q.LAST_REBALANCE, (at,)).fetchone()
    return None if row is None else event_from_row(row)


def read_node_states_at(cur: sqlite3.Cursor, at: float) -> list[model.NodeRecord]:
    past = [
        rules.PastState(
            node=node_from_row(r, 0),
            state=None if r["past_state"] is None else model.NodeState(r["past_state"]),
            changed_at=r["past_changed_at"],
        )
        for r in cur.execute(q.NODE_STATES_AT, {"at": at}).fetchall()
    ]
    return rules.node_states_at(at, past, read_last_rebalance(cur, at))


def read_samples(cur: sqlite3.Cursor, since: float, until: float | None) -> list[model.Sample]:
    bound = until if until is not None else float("inf")
    return [
        model.Sample(
            at=r["at"],
            interval_s=r["interval_s"],
            queued=r["queued"],
            running=r["running"],
            succeeded=r["succeeded"],
            failed=r["failed"],
            live_nodes=r["live_nodes"],
            oldest_queued_age_s=r["oldest_queued_age_s"],
        )
        for r in cur.execute(q.READ_SAMPLES, (since, bound)).fetchall()
    ]


def count_jobs_by_task(cur: sqlite3.Cursor) -> dict[tuple[str, model.JobState], int]:
    return {(r[0], model.JobState(r[1])): int(r[2]) for r in cur.execute(q.COUNT_BY_TASK)}


def list_finished(cur: sqlite3.Cursor, since: float, limit: int) -> list[model.Job]:
    return [job_from_row(r) for r in cur.execute(q.LIST_FINISHED, (since, limit)).fetchall()]


def owners(cur: sqlite3.Cursor) -> tuple[int | None, ...]:
    return tuple(r[0] for r in cur.execute(q.OWNERS).fetchall())


def homes(cur: sqlite3.Cursor) -> tuple[int | None, ...]:
    return tuple(r[0] for r in cur.execute(q.HOMES).fetchall())


def count_by_state(cur: sqlite3.Cursor) -> dict[model.JobState, int]:
    counts = {s: 0 for s in model.JobState}
    for state, n in cur.execute(q.COUNT_BY_STATE):
        counts[model.JobState(state)] = int(n)
    return counts


def oldest_queued_age(cur: sqlite3.Cursor, now: float) -> float | None:
    row = cur.execute(q.OLDEST_QUEUED).fetchone()
    return None if row is None else max(0.0, now - row[0])


# -- rows to values -------------------------------------------------------------------------------


def section_of(text: str) -> tuple[int, ...]:
    return tuple(json.loads(text)) if text else ()


def section_text(section: Sequence[int]) -> str:
    return json.dumps(list(section), separators=(",", ":")) if section else ""


def job_from_row(r: sqlite3.Row) -> model.Job:
    return model.Job(
        id=r["id"],
        partition=r["partition"],
        task=r["task"],
        args_json=r["args"],
        kwargs_json=r["kwargs"],
        state=model.JobState(r["state"]),
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
        priority=r["priority"],
        key=r["key"],
        finished_at=r["finished_at"],
        cancel_requested_at=r["cancel_requested_at"],
        cancel_requested_by=r["cancel_requested_by"],
    )


def node_from_row(r: sqlite3.Row, running: int) -> model.NodeRecord:
    return model.NodeRecord(
        id=r["id"],
        name=r["name"],
        state=model.NodeState(r["state"]),
        section=section_of(r["section"]),
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


def event_from_row(r: sqlite3.Row) -> model.HistoryEvent:
    return model.HistoryEvent(
        id=r["id"],
        at=r["at"],
        kind=model.EventKind(r["kind"]),
        node_id=r["node_id"],
        node_name=r["node_name"],
        from_state=model.NodeState(r["from_state"]) if r["from_state"] else None,
        to_state=model.NodeState(r["to_state"]) if r["to_state"] else None,
        epoch=r["epoch"],
        owners=tuple(json.loads(r["owners"])) if r["owners"] else None,
        reason=r["reason"],
    )
