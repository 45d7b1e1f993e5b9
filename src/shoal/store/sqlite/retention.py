"""Retention in the SQLite store: deleting old finished jobs, history events and samples.

Plain functions over the open transaction. Each call deletes at most one batch, so the single
writer holds the file's lock briefly and claims and finishes get in between batches; the deleted
jobs are counted out of their (task, state) counters in the same transaction.
"""

from __future__ import annotations

import json
import sqlite3
from typing import Any

from shoal.store import rules
from shoal.store.sqlite import queries as q
from shoal.store.sqlite.nodes import add_counts


def rule_params(rule: rules.PruneRule, node_id: int | None) -> dict[str, Any]:
    """The parameters of PRUNABLE for `rule`, limited to `node_id`'s partitions unless None."""
    return {
        "state": rule.state.value,
        "before": rule.before,
        "node": node_id,
        "only": None if rule.tasks is None else json.dumps(rule.tasks),
        "except": json.dumps(rule.except_tasks),
    }


def prune_jobs(
    cur: sqlite3.Cursor, rule: rules.PruneRule, limit: int, node_id: int | None
) -> dict[str, int]:
    rows = cur.execute(q.PRUNE_JOBS, rule_params(rule, node_id) | {"limit": limit}).fetchall()
    gone = [(str(r[0]), str(r[1])) for r in rows]
    add_counts(cur, rules.count_deletes(gone))
    deleted: dict[str, int] = {}
    for task, _ in gone:
        deleted[task] = deleted.get(task, 0) + 1
    return deleted


def count_prunable(cur: sqlite3.Cursor, rule: rules.PruneRule) -> dict[str, int]:
    rows = cur.execute(q.COUNT_PRUNABLE, rule_params(rule, None)).fetchall()
    return {str(task): int(n) for task, n in rows}


def prune_history(cur: sqlite3.Cursor, before: float, limit: int) -> tuple[int, int]:
    params = {"before": before, "limit": limit}
    events = cur.execute(q.PRUNE_EVENTS, params).rowcount
    samples = cur.execute(q.PRUNE_SAMPLES, params).rowcount
    return int(events), int(samples)


def count_prunable_history(cur: sqlite3.Cursor, before: float) -> tuple[int, int]:
    params = {"before": before}
    events = cur.execute(q.COUNT_PRUNABLE_EVENTS, params).fetchone()[0]
    samples = cur.execute(q.COUNT_PRUNABLE_SAMPLES, params).fetchone()[0]
    return int(events), int(samples)


def history_start(cur: sqlite3.Cursor) -> float | None:
    value = cur.execute(q.HISTORY_START).fetchone()[0]
    return None if value is None else float(value)
