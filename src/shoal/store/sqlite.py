"""The embedded datastore: SQLite in WAL mode, for a cluster whose nodes share one host.

`SqliteStore` is the Store on one file; this module opens it and holds the job side: submitting,
cancelling, claiming, progress, finishing and releasing jobs, and sampling the cluster. It builds
on `sqlite_nodes` (node membership), which builds on `sqlite_read` (what `status`, the observer
and metrics read), which builds on `sqlite_file` (where the file may live, its connection,
transactions retried through locks, the clock and the schema).
"""

from __future__ import annotations

import os
import sqlite3
from collections import Counter
from collections.abc import Sequence

from shoal.errors import DatastoreUnavailable, SchemaError
from shoal.model import Job, JobState, NewJob, NodeState, Outcome, ProgressUpdate
from shoal.store.port import SCHEMA_VERSION, Store
from shoal.store.sqlite_file import check_local_path, path_from_url
from shoal.store.sqlite_nodes import SqliteNodes, _add_counts, _moved
from shoal.store.sqlite_read import JOB_COLUMNS, job_from_row


class SqliteStore(SqliteNodes, Store):
    """The Store on one SQLite file. One connection per instance, guarded by a lock."""

    @classmethod
    def open(cls, url: str, *, create: bool = True) -> SqliteStore:
        path = path_from_url(url)
        check_local_path(path)
        directory = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(directory):
            raise DatastoreUnavailable(
                f"cannot open {url}: directory {directory} does not exist; create it first"
            )
        exists = os.path.exists(path)
        if not exists and not create:
            raise SchemaError(
                f"no Shoal datastore at {path}; start a node or run `shoal init --db {url}`"
            )
        store = cls(path)
        # Zero set-up: a new file gets the schema and an older one is migrated, on first open.
        if create and (store._schema_version() or 0) < SCHEMA_VERSION:
            store.initialize()
        store.check_schema()
        return store

    # -- submitting and cancelling jobs ---------------------------------------------------------

    def submit_jobs(self, jobs: Sequence[NewJob]) -> list[int]:
        if not jobs:
            return []

        def insert(cur: sqlite3.Cursor) -> list[int]:
            now = self._now(cur)
            partitions, first = cur.execute(
                "SELECT partitions, next_job_id FROM cluster WHERE id = 1"
            ).fetchone()
            ids = list(range(first, first + len(jobs)))
            cur.executemany(
                "INSERT INTO jobs (id, partition, task, args, kwargs, state, max_attempts,"
                " timeout_s, run_after, created_at) VALUES (?, ?, ?, ?, ?, 'queued', ?, ?, ?, ?)",
                [
                    (
                        i,
                        i % partitions,
                        j.task,
                        j.args_json,
                        j.kwargs_json,
                        j.max_attempts,
                        j.timeout_s,
                        now + j.delay_s,
                        now,
                    )
                    for i, j in zip(ids, jobs, strict=True)
                ],
            )
            cur.execute("UPDATE cluster SET next_job_id = ? WHERE id = 1", (first + len(jobs),))
            _add_counts(cur, Counter((j.task, JobState.QUEUED.value) for j in jobs))
            return ids

        return self._run(insert)

    def cancel_job(self, job_id: int) -> bool:
        def cancel(cur: sqlite3.Cursor) -> bool:
            rows = cur.execute(
                "UPDATE jobs SET state = 'cancelled', finished_at = ? "
                "WHERE id = ? AND state = 'queued' RETURNING task, state",
                (self._now(cur), job_id),
            ).fetchall()
            _add_counts(cur, _moved(JobState.QUEUED, rows))
            return len(rows) == 1

        return self._run(cancel)

    # -- running jobs ---------------------------------------------------------------------------

    def claim_jobs(self, node_id: int, limit: int) -> list[Job]:
        pick = (
            "SELECT id FROM jobs WHERE state = 'queued' AND run_after <= ?"
            " AND partition IN (SELECT partition FROM partitions WHERE owner = ?)"
            " ORDER BY id LIMIT ?"
        )
        with self._read() as cur:
            # Look before taking the write lock: idle nodes poll, and must not queue up writers.
            if not cur.execute(pick, (self._now(cur), node_id, 1)).fetchone():
                return []

        def claim(cur: sqlite3.Cursor) -> list[Job]:
            now = self._now(cur)
            rows = cur.execute(
                "UPDATE jobs SET state = 'running', claimer = ?, attempts = attempts + 1,"
                " started_at = ?, progress = 0, progress_message = NULL"
                f" WHERE id IN ({pick}) AND EXISTS (SELECT 1 FROM nodes WHERE id = ?"
                " AND state IN ('waiting', 'working') AND pause_requested = 0)"
                f" RETURNING {JOB_COLUMNS}",
                (node_id, now, now, node_id, limit, node_id),
            ).fetchall()
            if rows:
                self._move_node(cur, now, node_id, NodeState.WAITING, NodeState.WORKING)
                _add_counts(cur, _moved(JobState.QUEUED, [(r["task"], r["state"]) for r in rows]))
            return sorted((job_from_row(r) for r in rows), key=lambda j: j.id)

        return self._run(claim)

    def record_progress(self, node_id: int, updates: Sequence[ProgressUpdate]) -> int:
        if not updates:
            return 0

        def write(cur: sqlite3.Cursor) -> int:
            cur.executemany(
                "UPDATE jobs SET progress = ?, progress_message = ? WHERE id = ? AND claimer = ?"
                " AND attempts = ? AND state = 'running'",
                [(u.fraction, u.message, u.job_id, node_id, u.attempt) for u in updates],
            )
            return int(cur.rowcount)

        return self._run(write)

    def finish_jobs(self, node_id: int, outcomes: Sequence[Outcome]) -> list[bool]:
        if not outcomes:
            return []

        def finish(cur: sqlite3.Cursor) -> list[bool]:
            now = self._now(cur)
            applied = []
            finished: list[tuple[str, str]] = []
            for o in outcomes:
                fence = (o.job_id, node_id, o.attempt)
                where = (
                    " WHERE id = ? AND claimer = ? AND attempts = ? AND state = 'running'"
                    " RETURNING task, state"
                )
                if o.succeeded:
                    cur.execute(
                        "UPDATE jobs SET state = 'succeeded', result = ?, error = NULL,"
                        " traceback = NULL, progress = 1.0, finished_at = ?" + where,
                        (o.result_json, now, *fence),
                    )
                elif o.retry_in_s is not None:
                    cur.execute(
                        "UPDATE jobs SET state = 'queued', claimer = NULL, error = ?,"
                        " traceback = ?, run_after = ?, progress = 0" + where,
                        (o.error, o.traceback, now + o.retry_in_s, *fence),
                    )
                else:
                    cur.execute(
                        "UPDATE jobs SET state = 'failed', error = ?, traceback = ?,"
                        " finished_at = ?" + where,
                        (o.error, o.traceback, now, *fence),
                    )
                row = cur.fetchone()
                applied.append(row is not None)
                if row is not None:
                    finished.append((row[0], row[1]))
            _add_counts(cur, _moved(JobState.RUNNING, finished))
            done = sum(applied)
            failed = sum(
                1 for o, ok in zip(outcomes, applied, strict=True) if ok and not o.succeeded
            )
            if done:
                cur.execute(
                    "UPDATE nodes SET processed = processed + ?, failed = failed + ? WHERE id = ?",
                    (done, failed, node_id),
                )
            return applied

        return self._run(finish)

    def release_jobs(self, node_id: int, job_ids: Sequence[int]) -> int:
        if not job_ids:
            return 0

        def release(cur: sqlite3.Cursor) -> int:
            now = self._now(cur)
            released = []
            for job_id in job_ids:
                released += cur.execute(
                    "UPDATE jobs SET state = 'queued', claimer = NULL, attempts = attempts - 1,"
                    " run_after = ?, progress = 0, progress_message = NULL"
                    " WHERE id = ? AND claimer = ? AND state = 'running' RETURNING task, state",
                    (now, job_id, node_id),
                ).fetchall()
            _add_counts(cur, _moved(JobState.RUNNING, released))
            return len(released)

        return self._run(release)

    def running_attempts(self, node_id: int) -> list[tuple[int, int]]:
        with self._read() as cur:
            rows = cur.execute(
                "SELECT id, attempts FROM jobs WHERE state = 'running' AND claimer = ? ORDER BY id",
                (node_id,),
            ).fetchall()
        return [(int(r[0]), int(r[1])) for r in rows]

    # -- samples --------------------------------------------------------------------------------

    def record_sample(self, interval_s: float) -> bool:
        with self._read() as cur:
            bucket = int(self._now(cur) // interval_s)
            if cur.execute("SELECT 1 FROM samples WHERE bucket = ?", (bucket,)).fetchone():
                return False

        def sample(cur: sqlite3.Cursor) -> bool:
            now = self._now(cur)
            bucket = int(now // interval_s)
            end = bucket * interval_s
            counts = dict(
                cur.execute(
                    "SELECT state, count(*) FROM jobs WHERE finished_at >= ? AND finished_at < ?"
                    " GROUP BY state",
                    (end - interval_s, end),
                ).fetchall()
            )
            counted = self._count_by_state(cur)
            queued, running = counted[JobState.QUEUED], counted[JobState.RUNNING]
            live = cur.execute(
                "SELECT count(*) FROM nodes WHERE state IN ('waiting', 'working')"
            ).fetchone()[0]
            cur.execute(
                "INSERT OR IGNORE INTO samples (bucket, at, interval_s, queued, running, succeeded,"
                " failed, live_nodes, oldest_queued_age_s) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    bucket,
                    end,
                    interval_s,
                    queued,
                    running,
                    counts.get("succeeded", 0),
                    counts.get("failed", 0),
                    live,
                    self._oldest_queued_age(cur, now),
                ),
            )
            return cur.rowcount == 1

        return self._run(sample)


__all__ = ["SqliteStore", "path_from_url"]
