"""Retention in the PostgreSQL store: deleting old finished jobs, history events and samples.

Plain functions over a borrowed connection, each one statement and so one short transaction that
deletes at most one batch; the deleted jobs are counted out of their (task, state) counters by
the same statement, in the pruning node's counter shard. Deleting is idempotent, so a statement
retried after a lost connection needs no look-before-write: what it finds is what is left.
"""

from __future__ import annotations

from typing import Any

from shoal.store import rules
from shoal.store.postgres import queries as q
from shoal.store.postgres.reads import Conn, scalar


def rule_params(rule: rules.PruneRule, node_id: int | None) -> dict[str, Any]:
    """The parameters of PRUNABLE for `rule`, limited to `node_id`'s partitions unless None."""
    return {
        "state": rule.state.value,
        "before": rule.before,
        "node": node_id,
        "only": None if rule.tasks is None else list(rule.tasks),
        "except": list(rule.except_tasks),
    }


def prune_jobs(
    conn: Conn, rule: rules.PruneRule, limit: int, node_id: int | None
) -> dict[str, int]:
    shard = q.SUBMITTER_SHARD if node_id is None else q.counter_shard(node_id)
    params = rule_params(rule, node_id) | {"limit": limit, "shard": shard}
    return {str(task): int(n) for task, n in conn.execute(q.PRUNE_JOBS, params)}


def count_prunable(conn: Conn, rule: rules.PruneRule) -> dict[str, int]:
    return {str(t): int(n) for t, n in conn.execute(q.COUNT_PRUNABLE, rule_params(rule, None))}


def prune_history(conn: Conn, before: float, limit: int) -> tuple[int, int]:
    params = {"before": before, "limit": limit}
    events = conn.execute(q.PRUNE_EVENTS, params).rowcount
    samples = conn.execute(q.PRUNE_SAMPLES, params).rowcount
    return int(events), int(samples)


def count_prunable_history(conn: Conn, before: float) -> tuple[int, int]:
    params = {"before": before}
    events = scalar(conn, q.COUNT_PRUNABLE_EVENTS, params)
    samples = scalar(conn, q.COUNT_PRUNABLE_SAMPLES, params)
    return int(events), int(samples)


def history_start(conn: Conn) -> float | None:
    value = scalar(conn, q.HISTORY_START)
    return None if value is None else float(value)
