"""`SqliteStore`: the Store on one SQLite file, for a cluster whose nodes share one host.

The class opens the file and runs each operation as one transaction on it (`file.SqliteFile`),
delegating what happens inside to the plain functions of `jobs`, `nodes` and `reads`, which take
the open cursor. The schema is created and migrated on first open (zero set-up), by `schema`.
After a commit that may have made work claimable it rings the waiting nodes (`doorbell`), and a
node's store waits on its own doorbell, polling as before when it cannot have one.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
from collections.abc import Sequence

from shoal import model
from shoal.errors import DatastoreUnavailable, SchemaError
from shoal.load import Move
from shoal.store import rules, texts
from shoal.store.batcher import SubmitBatcher
from shoal.store.loops import PerLoop
from shoal.store.port import AsyncJobs, NewNode, Store
from shoal.store.sqlite import jobs, limits, nodes, reads, retention, schedules, schema
from shoal.store.sqlite import queries as q
from shoal.store.sqlite.aio import FileThread, SqliteAsyncJobs
from shoal.store.sqlite.doorbell import Doorbell, Ringer, directory_for
from shoal.store.sqlite.file import SqliteFile, check_local_path, now, path_from_url

log = logging.getLogger("shoal.store.sqlite")


# How often a node looks for work when it cannot bind a doorbell (a filesystem without sockets).
POLL_WITHOUT_DOORBELL_S = 0.02


class SqliteStore(Store):
    """The Store on one SQLite file. One connection per instance, guarded by a lock."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.url_for_display = f"sqlite:///{path}"
        self.file = SqliteFile(path)
        self._ringer = Ringer(directory_for(path))
        self._bell: Doorbell | None = None
        self._bell_failed = False
        self._bell_lock = threading.Lock()
        self.batcher = SubmitBatcher(self.write_jobs)
        self._file_thread = FileThread(self.submit_jobs)
        self._async = PerLoop(lambda: SqliteAsyncJobs(self._file_thread, self.read_job))

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
        self._ringer.ring()  # P may have grown: sections changed

    def check_schema(self) -> None:
        schema.check(self.schema_version(), self.path, self.url_for_display)

    def close(self) -> None:
        self._file_thread.stop()
        self._ringer.close()
        with self._bell_lock:
            if self._bell is not None:
                self._bell.close()
                self._bell = None
        self.file.close()

    def now(self) -> float:
        with self.file.read() as cur:
            return now(cur)

    # -- jobs -----------------------------------------------------------------------------------

    def write_jobs(self, new: Sequence[model.NewJob]) -> list[model.Submitted]:
        done = self.file.run(lambda cur: jobs.submit(cur, now(cur), new))
        self._ringer.ring()  # after the commit: a node woken now finds the jobs
        return done

    def read_job(self, job_id: int) -> model.Job | None:
        if not rules.could_be_job_id(job_id):
            return None
        with self.file.read() as cur:
            return reads.read_job(cur, job_id)

    def async_jobs(self) -> AsyncJobs:
        return self._async.get()

    async def aclose_async(self) -> None:
        await self._async.aclose_current()

    def list_jobs(
        self, where: model.JobFilter, limit: int = 50, before_id: int | None = None
    ) -> list[model.Job]:
        with self.file.read() as cur:
            return reads.list_jobs(cur, where, limit, before_id)

    def cancel_job(self, job_id: int, by: str | None = None) -> model.CancelResult:
        if not rules.could_be_job_id(job_id):
            return model.CancelResult.NOT_FOUND
        return self.file.run(lambda cur: jobs.cancel(cur, now(cur), job_id, by))

    def read_cancel_requests(self, node_id: int) -> list[model.CancelRequest]:
        with self.file.read() as cur:
            return jobs.cancel_requests(cur, node_id)

    def known_tasks(self) -> set[str]:
        with self.file.read() as cur:
            return reads.known_tasks(cur)

    def claim_jobs(self, node_id: int, limit: int, start: int | None = None) -> list[model.Job]:
        if limit < 1:
            return []
        begin = limit if start is None else start
        with self.file.read() as cur:
            # Look before taking the write lock: idle nodes poll, and must not queue up writers.
            if not jobs.any_claimable(cur, now(cur), node_id):
                return []
        # Not durable: a claim that a power loss takes back only returns its jobs to the queue,
        # where they run again (at-least-once), and it cannot outlive an outcome of its jobs,
        # which commits durably after it in the same log. One disk sync less to the start.
        return self.file.run(
            lambda cur: jobs.claim(cur, now(cur), node_id, limit, begin), durable=False
        )

    def claim_stranded(self, node_id: int, limit: int, start: int | None = None) -> list[model.Job]:
        if limit < 1:
            return []
        begin = limit if start is None else start
        with self.file.read() as cur:  # look first: in a cluster of one release, nothing is
            if not jobs.stranded_ids(cur, now(cur), node_id, 1):
                return []
        return self.file.run(lambda cur: jobs.claim_stranded(cur, now(cur), node_id, limit, begin))

    def start_jobs(self, node_id: int, job_ids: Sequence[int]) -> list[model.Job]:
        if not job_ids:
            return []
        # Not durable, as a claim is not: the start commits before the worker runs the job, so a
        # node killed at any point charges only attempts that began; only a power loss, which
        # takes the node down with it, can take a start back.
        return self.file.run(
            lambda cur: jobs.start_claimed(cur, now(cur), node_id, job_ids), durable=False
        )

    def record_begun(self, node_id: int, begun: Sequence[tuple[int, int]]) -> int:
        if not begun:
            return 0
        return self.file.run(lambda cur: jobs.record_begun(cur, now(cur), node_id, begun))

    def record_progress(self, node_id: int, updates: Sequence[model.ProgressUpdate]) -> int:
        if not updates:
            return 0
        return self.file.run(lambda cur: jobs.record_progress(cur, node_id, updates))

    def finish_jobs(self, node_id: int, outcomes: Sequence[model.Outcome]) -> list[bool]:
        if not outcomes:
            return []

        def finish(cur: sqlite3.Cursor) -> tuple[list[bool], bool]:
            applied = jobs.finish(cur, now(cur), node_id, outcomes)
            return applied, any(applied) and bool(limits.read_limits(cur))

        applied, limited = self.file.run(finish)
        if limited:
            self._ringer.ring()  # room may have freed for a limited task's waiting jobs
        return applied

    def release_jobs(self, node_id: int, job_ids: Sequence[int]) -> int:
        if not job_ids:
            return 0
        released = self.file.run(lambda cur: jobs.release(cur, now(cur), node_id, job_ids))
        if released:
            self._ringer.ring()
        return released

    def last_started(self, node_id: int) -> list[int]:
        with self.file.read() as cur:
            return jobs.last_started(cur, node_id)

    def running_attempts(self, node_id: int) -> list[tuple[int, int]]:
        with self.file.read() as cur:
            return jobs.running_attempts(cur, node_id)

    # -- nodes ----------------------------------------------------------------------------------

    def insert_node(self, new: NewNode) -> int:
        return self.file.run(lambda cur: nodes.register(cur, now(cur), new))

    def apply_node_state(
        self, node_id: int, expected: model.NodeState, new: model.NodeState, reason: str
    ) -> bool:
        moved = self.file.run(
            lambda cur: nodes.apply_state(cur, now(cur), node_id, expected, new, reason)
        )
        if moved:
            self._ringer.ring()  # membership may have changed, and with it the sections
        return moved

    def heartbeat(self, node_id: int, lease_s: float) -> model.Heartbeat | None:
        return self.file.run(lambda cur: nodes.heartbeat(cur, now(cur), node_id, lease_s))

    def apply_pause(self, node_ref: str, paused: bool, why: str | None = None) -> int:
        return self.file.run(lambda cur: nodes.request_pause(cur, now(cur), node_ref, paused, why))

    def mark_dead_nodes(self) -> list[int]:
        with self.file.read() as cur:
            # Cheap check outside a write transaction: most calls find nobody expired.
            if cur.execute(q.ANY_EXPIRED).fetchone() is None:
                return []
        dead = self.file.run(lambda cur: nodes.mark_dead(cur, now(cur)))
        if dead:
            self._ringer.ring()  # their jobs are queued again, their sections moved
        return dead

    def rebalance(self) -> bool:
        changed = self.file.run(lambda cur: nodes.rebalance(cur, now(cur), texts.REPAIR))
        if changed:
            self._ringer.ring()
        return changed

    def unpark_batch(self, lead_s: float, limit: int) -> int:
        args = {"lead": lead_s, "limit": limit}
        with self.file.read() as cur:  # look first: most heartbeats find nothing to unpark
            if cur.execute(q.ANY_TO_UNPARK, {**args, "now": now(cur)}).fetchone() is None:
                return 0
        return self.file.run(lambda cur: cur.execute(q.UNPARK, {**args, "now": now(cur)}).rowcount)

    def read_load(self) -> rules.LoadSnapshot:
        with self.file.read() as cur:
            return nodes.read_load(cur, now(cur))

    def apply_load_moves(self, moves: Sequence[Move]) -> int:
        moved = self.file.run(lambda cur: nodes.move_partitions(cur, now(cur), moves))
        if moved:
            self._ringer.ring()
        return moved

    # -- capabilities ---------------------------------------------------------------------------

    @property
    def supports_wakeups(self) -> bool:
        return True

    def wait_for_work(self, node_id: int, timeout_s: float) -> bool:
        """Block until a store on this host rings after a commit that may have made work
        claimable (a submit, a release, a requeue, a change of sections), or `timeout_s` passes.

        Every ring wakes every waiting node: the nodes share one host, so they are few, and a
        needless wake costs one indexed read. True at once on the first call, which binds the
        doorbell (what rang before was missed). Without a doorbell (a filesystem that refuses
        sockets) this returns True every POLL_WITHOUT_DOORBELL_S: the node polls as it would
        without wake-ups. One doorbell per store: give each node its own store.
        """
        with self._bell_lock:
            made_now = self._bell is None and not self._bell_failed
            if made_now:
                self._make_doorbell()
            bell = self._bell
        if bell is None:
            time.sleep(min(timeout_s, POLL_WITHOUT_DOORBELL_S))
            return True
        return made_now or bool(bell.wait(timeout_s))

    def _make_doorbell(self) -> None:
        """Bind this store's doorbell (under `_bell_lock`); if the folder beside the file cannot
        hold it, note that once and for all."""
        try:
            self._bell = Doorbell(self._ringer.directory)
        except OSError as exc:
            self._bell_failed = True
            log.warning(
                "no wake-ups for %s (%s): the node polls every %.2fs instead",
                self.path,
                exc,
                POLL_WITHOUT_DOORBELL_S,
            )

    # -- periodic schedules ---------------------------------------------------------------------

    def declare_schedules(self, specs: Sequence[model.ScheduleSpec]) -> None:
        if specs:
            self.file.run(lambda cur: schedules.declare(cur, now(cur), specs))

    def read_schedules(self) -> list[model.ScheduleRecord]:
        with self.file.read() as cur:
            return schedules.read_all(cur)

    def fire_schedule(
        self,
        name: str,
        expected_through: float,
        fired: Sequence[model.ScheduledJob],
        through: float,
    ) -> list[int] | None:
        rules.check_firings(expected_through, fired, through)
        ids = self.file.run(
            lambda cur: schedules.fire(cur, now(cur), name, expected_through, fired, through)
        )
        if ids:
            self._ringer.ring()  # after the commit: a node woken now finds the jobs
        return ids

    def forget_schedule(self, name: str) -> bool:
        return self.file.run(lambda cur: schedules.forget(cur, name))

    def list_schedule_ticks(self, name: str, limit: int = 100) -> list[model.ScheduleTick]:
        with self.file.read() as cur:
            return schedules.list_ticks(cur, name, limit)

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

    def read_task_limits(self) -> list[model.TaskLimitUse]:
        with self.file.read() as cur:
            return limits.read_task_limits(cur, now(cur))

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
