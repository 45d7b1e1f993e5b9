"""A node's share of retention: deleting finished jobs past their age, and old history.

Every live node prunes the finished jobs of its own section only (the datastore filters by the
partitions the node owns at that moment), so the work is spread without a leader and no two
nodes pick the same rows. Each statement deletes one bounded batch in its own short transaction.
A pass runs every PRUNE_EVERY_S, or a quarter of the shortest age when that is sooner; while a
backlog remains (a batch came back full) the node prunes again at its next heartbeat, one batch
per rule, so a large backlog drains steadily without holding the node's loop for long. Ages
follow the node's app: the app's retention for every task, a task's own `keep_*_s` for that task.
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from collections.abc import Mapping

from shoal.app import App
from shoal.model import JobState
from shoal.store import Store
from shoal.store.rules import (
    FINAL_STATES,
    PRUNE_BATCH,
    Pruned,
    PruneRule,
    Retention,
    prune_rules,
)

log = logging.getLogger("shoal.node")
PRUNE_EVERY_S = 60.0  # between passes once nothing is due; a backlog is pruned every heartbeat


def retention_of(app: App) -> tuple[Retention, dict[str, Retention]]:
    """The app's retention and each of its tasks' own."""
    default = app.retention
    return default, {name: t.options.retention(default) for name, t in app.tasks.items()}


class Pruner:
    """Prunes by `retention` for every task and `tasks`' own retention for those tasks."""

    def __init__(
        self,
        store: Store,
        retention: Retention,
        tasks: Mapping[str, Retention],
        node_id: int | None = None,
        batch: int = PRUNE_BATCH,
    ) -> None:
        self.store = store
        self.retention = retention
        self.tasks = dict(tasks)
        self.node_id = node_id  # None: every partition (a one-off run, not a node)
        self.batch = batch
        self.next_at = -math.inf
        ages = [r.keep_s(s) for r in (retention, *self.tasks.values()) for s in FINAL_STATES]
        self.every_s = min([PRUNE_EVERY_S, *(age / 4 for age in ages)])
        self.has_backlog = False  # the last pass left rows due: prune again at once

    @classmethod
    def for_app(cls, store: Store, app: App, node_id: int | None = None) -> Pruner:
        default, tasks = retention_of(app)
        return cls(store, default, tasks, node_id)

    def rules(self, now: float) -> list[PruneRule]:
        """What this retention deletes at datastore time `now`."""
        return prune_rules(now, self.retention, self.tasks)

    def run_once(self, now: float) -> Pruned | None:
        """One pass at datastore time `now`, if one is due: a batch per rule, and one of history.

        Returns what it deleted, or None when no pass was due. Raises DatastoreUnavailable if the
        datastore cannot be reached (the caller tries again at its next heartbeat).
        """
        if now < self.next_at:
            return None
        deleted: Counter[tuple[str, JobState]] = Counter()
        backlog = False
        for rule in self.rules(now):
            gone = self.store.prune_jobs(rule, self.batch, self.node_id)
            deleted.update({(task, rule.state): n for task, n in gone.items()})
            backlog = backlog or sum(gone.values()) >= self.batch
        events = samples = 0
        if math.isfinite(self.retention.history_s):
            events, samples = self.store.prune_history(now - self.retention.history_s, self.batch)
            backlog = backlog or max(events, samples) >= self.batch
        self.has_backlog = backlog
        self.next_at = now if backlog else now + self.every_s
        pruned = Pruned(dict(deleted), events, samples)
        if pruned.job_count or events or samples:
            log.info(
                "pruned %d finished jobs, %d history events, %d samples%s",
                pruned.job_count,
                events,
                samples,
                "; more to prune" if backlog else "",
            )
        return pruned
