"""`SqliteStore`: the Store on one SQLite file, for a cluster whose nodes share one host.

The class opens the file and runs each operation as one transaction on it (`file.SqliteFile`),
delegating what happens inside to the plain functions of `jobs`, `nodes` and `reads`, which take
the open cursor. The schema is created and migrated on first open (zero set-up), by `schema`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from shoal import model
from shoal.errors import DatastoreUnavailable, SchemaError
from shoal.load import Move
from shoal.store import rules, texts
from shoal.store.port import NewNode, Store
from shoal.store.sqlite import jobs, nodes, reads, retention, schema
from shoal.store.sqlite import queries as q
from shoal.store.sqlite.file import SqliteFile, check_local_path, now, path_from_url


class SqliteStore(Store):
    """The Store on one SQLite file. One connection per instance, guarded by a lock."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.url_for_display = f"sqlite:///{path}"
        self.file = SqliteFile(path)

    @classmethod
    def open(cls, url: str, *, create: bool = True) -> SqliteStore:
        path = path_from_url(url)
        check_local_path(path)
        directory = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(directory):
            raise DatastoreUnavailable(
                f"cannot open {url}: directory {directory} does not exist; create it first"
            )
        if not os.path.exists(path) and not create:
            raise SchemaError(texts.no_datastore(path, url))
        store = cls(path)
        # Zero set-up: a new file gets the schema and an older one is migrated, on first open.
        if create and (store.schema_version() or 0) < schema.SCHEMA_VERSION:
            store.initialize()
        store.check_schema()
        return store

    # -- setting up -----------------------------------------------------------------------------

    def schema_version(self) -> int | None:
        with self.file.read() as cur:
            return schema.version_of(cur)

    def initialize(
        self, partitions: int | None = None, quarantine_after: int | None = None
    ) -> None:
        self.file.run(lambda cur: schema.initialize(cur, self.path, partitions, quarantine_after))

    def check_schema(self) -> None:
        schema.check(self.schema_version(), self.path, self.url_for_display)

    def close(self) -> None:
        self.file.close()

    def now(self) -> float:
        with self.file.read() as cur:
            return now(cur)

    # -- jobs -----------------------------------------------------------------------------------

    def submit_jobs(self, new: Sequence[model.NewJob]) -> list[int]:
        if not new:
            return []
        return self.file.run(lambda cur: jobs.submit(cur, now(cur), new))

    def read_job(self, job_id: int) -> model.Job | None:
        if not rules.could_be_job_id(job_id):
            return None
        with self.file.read() as cur:
            return reads.read_job(cur, job_id)

    def list_jobs(
        self, where: model.JobFilter, limit: int = 50, before_id: int | None = None
    ) -> list[model.Job]:
        with self.file.read() as cur:
            return reads.list_jobs(cur, where, limit, before_id)

    def cancel_job(self, job_id: int) -> bool:
        if not rules.could_be_job_id(job_id):
            return False
        return self.file.run(lambda cur: jobs.cancel(cur, now(cur), job_id))

    def known_tasks(self) -> set[str]:
        with self.file.read() as cur:
            return reads.known_tasks(cur)

    def claim_jobs(self, node_id: int, limit: int) -> list[model.Job]:
        with self.file.read() as cur:
            # Look before taking the write lock: idle nodes poll, and must not queue up writers.
            if not jobs.any_claimable(cur, now(cur), node_id):
                return []
        return self.file.run(lambda cur: jobs.claim(cur, now(cur), node_id, limit))

    def claim_stranded(self, node_id: int, limit: int) -> list[model.Job]:
        if limit < 1:
            return []
        with self.file.read() as cur:  # look first: in a cluster of one release, nothing is
            if not jobs.stranded_ids(cur, now(cur), node_id, 1):
                return []
        return self.file.run(lambda cur: jobs.claim_stranded(cur, now(cur), node_id, limit))

    def record_progress(self, node_id: int, updates: Sequence[model.ProgressUpdate]) -> int:
        if not updates:
            return 0
        return self.file.run(lambda cur: jobs.record_progress(cur, node_id, updates))

    def finish_jobs(self, node_id: int, outcomes: Sequence[model.Outcome]) -> list[bool]:
        if not outcomes:
            return []
        return self.file.run(lambda cur: jobs.finish(cur, now(cur), node_id, outcomes))

    def release_jobs(self, node_id: int, job_ids: Sequence[int]) -> int:
        if not job_ids:
            return 0
        return self.file.run(lambda cur: jobs.release(cur, now(cur), node_id, job_ids))

    def running_attempts(self, node_id: int) -> list[tuple[int, int]]:
        with self.file.read() as cur:
            return jobs.running_attempts(cur, node_id)

    # -- nodes ----------------------------------------------------------------------------------

    def insert_node(self, new: NewNode) -> int:
        return self.file.run(lambda cur: nodes.register(cur, now(cur), new))

    def apply_node_state(
        self, node_id: int, expected: model.NodeState, new: model.NodeState, reason: str
    ) -> bool:
        return self.file.run(
            lambda cur: nodes.apply_state(cur, now(cur), node_id, expected, new, reason)
        )

    def heartbeat(self, node_id: int, lease_s: float) -> model.Heartbeat | None:
        return self.file.run(lambda cur: nodes.heartbeat(cur, now(cur), node_id, lease_s))

    def apply_pause(self, node_ref: str, paused: bool) -> int:
        return self.file.run(lambda cur: nodes.request_pause(cur, now(cur), node_ref, paused))

    def mark_dead_nodes(self) -> list[int]:
        with self.file.read() as cur:
            # Cheap check outside a write transaction: most calls find nobody expired.
            if cur.execute(q.ANY_EXPIRED).fetchone() is None:
                return []
        return self.file.run(lambda cur: nodes.mark_dead(cur, now(cur)))

    def rebalance(self) -> bool:
        return self.file.run(lambda cur: nodes.rebalance(cur, now(cur), texts.REPAIR))

    def read_load(self) -> rules.LoadSnapshot:
        with self.file.read() as cur:
            return nodes.read_load(cur, now(cur))

    def apply_load_moves(self, moves: Sequence[Move]) -> int:
        return self.file.run(lambda cur: nodes.move_partitions(cur, now(cur), moves))

    # -- history and views ----------------------------------------------------------------------

    def record_sample(self, interval_s: float) -> bool:
        with self.file.read() as cur:
            if jobs.has_sample(cur, int(now(cur) // interval_s)):
                return False
        return self.file.run(lambda cur: jobs.record_sample(cur, now(cur), interval_s))

    def read_cluster(self, dead_window_s: float = rules.DEAD_WINDOW_S) -> model.ClusterView:
        return self.file.run(lambda cur: reads.read_cluster(cur, dead_window_s), write=False)

    def read_node(self, node_id: int) -> model.NodeRecord | None:
        with self.file.read() as cur:
            return reads.read_node(cur, node_id)

    def read_history(
        self, since: float, until: float | None = None, limit: int = 10_000
    ) -> list[model.HistoryEvent]:
        with self.file.read() as cur:
            return reads.read_history(cur, since, until, limit)

    def read_last_rebalance(self, at: float) -> model.HistoryEvent | None:
        with self.file.read() as cur:
            return reads.read_last_rebalance(cur, at)

    def read_node_states_at(self, at: float) -> list[model.NodeRecord]:
        with self.file.read() as cur:
            return reads.read_node_states_at(cur, at)

    def read_samples(self, since: float, until: float | None = None) -> list[model.Sample]:
        with self.file.read() as cur:
            return reads.read_samples(cur, since, until)

    def count_jobs_by_task(self) -> dict[tuple[str, model.JobState], int]:
        with self.file.read() as cur:
            return reads.count_jobs_by_task(cur)

    def list_finished(self, since: float, limit: int = 1000) -> list[model.Job]:
        with self.file.read() as cur:
            return reads.list_finished(cur, since, limit)

    # -- retention ------------------------------------------------------------------------------

    def prune_jobs(
        self, rule: rules.PruneRule, limit: int = rules.PRUNE_BATCH, node_id: int | None = None
    ) -> dict[str, int]:
        return self.file.run(lambda cur: retention.prune_jobs(cur, rule, limit, node_id))

    def count_prunable(self, rule: rules.PruneRule) -> dict[str, int]:
        with self.file.read() as cur:
            return retention.count_prunable(cur, rule)

    def prune_history(self, before: float, limit: int = rules.PRUNE_BATCH) -> tuple[int, int]:
        return self.file.run(lambda cur: retention.prune_history(cur, before, limit))

    def count_prunable_history(self, before: float) -> tuple[int, int]:
        with self.file.read() as cur:
            return retention.count_prunable_history(cur, before)

    def read_history_start(self) -> float | None:
        with self.file.read() as cur:
            return retention.history_start(cur)
