"""The embedded datastore: SQLite in WAL mode, for a cluster whose nodes share one host.

`SqliteStore` is the Store on one file: the writes are here, the reads that `status`, the observer
and metrics make are in `sqlite_read.SqliteReads`, and the file itself (where it may live, the
connection, transactions retried through locks, the clock and the schema) is
`sqlite_file.SqliteFile`. Each builds on the one after it.
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections import Counter
from collections.abc import Iterable, Sequence

from shoal import assignment, states
from shoal.errors import (
    DatastoreUnavailable,
    NodeNameTaken,
    NotFound,
    SchemaError,
)
from shoal.model import (
    EventKind,
    Heartbeat,
    Job,
    JobState,
    NewJob,
    NodeRecord,
    NodeState,
    Outcome,
    ProgressUpdate,
)
from shoal.store.port import SCHEMA_VERSION, Store
from shoal.store.sqlite_file import NOW_SQL, check_local_path, path_from_url
from shoal.store.sqlite_read import JOB_COLUMNS, SqliteReads, _section, _section_text, job_from_row


class SqliteStore(SqliteReads, Store):
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

    # -- submitting and reading jobs ------------------------------------------------------------

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

    # -- node lifecycle -------------------------------------------------------------------------

    def register_node(
        self,
        name: str,
        host: str,
        pid: int,
        concurrency: int,
        tasks: Sequence[str],
        lease_s: float,
    ) -> NodeRecord:
        def register(cur: sqlite3.Cursor) -> int:
            now = self._now(cur)
            # A node that crashed under this name frees it once its lease has expired.
            self._mark_dead_in_tx(cur, now)
            holder = cur.execute(
                "SELECT id, state, lease_expires_at FROM nodes WHERE name = ? AND state <> 'dead'",
                (name,),
            ).fetchone()
            if holder is not None:
                raise NodeNameTaken(
                    f"a live node named {name!r} already exists (id {holder[0]}, "
                    f"{holder[1]}); its lease ends in {max(0.0, holder[2] - now):.1f}s. "
                    "Pick another --name, or stop that node first."
                )
            cur.execute(
                "INSERT INTO nodes (name, state, host, pid, concurrency, tasks, started_at,"
                " heartbeat_at, lease_expires_at, state_changed_at)"
                " VALUES (?, 'initializing', ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    name,
                    host,
                    pid,
                    concurrency,
                    json.dumps(sorted(tasks)),
                    now,
                    now,
                    now + lease_s,
                    now,
                ),
            )
            node_id = int(cur.lastrowid or 0)
            self._record_state(cur, now, node_id, name, None, NodeState.INITIALIZING, "registered")
            return node_id

        node_id = self._run(register)
        node = self.read_node(node_id)
        assert node is not None
        return node

    def set_node_state(
        self, node_id: int, expected: NodeState, new: NodeState, reason: str = ""
    ) -> bool:
        why = reason or states.check_transition(expected, new)
        states.check_transition(expected, new)

        def change(cur: sqlite3.Cursor) -> bool:
            now = self._now(cur)
            row = cur.execute(
                "UPDATE nodes SET state = ?, state_changed_at = ? WHERE id = ? AND state = ?"
                " RETURNING name",
                (new.value, now, node_id, expected.value),
            ).fetchone()
            if row is None:
                return False
            self._record_state(cur, now, node_id, row[0], expected, new, why)
            if new is NodeState.DEAD:
                self._requeue_running(cur, now, node_id, f"node {row[0]} stopped: {why}")
            self._rebalance_in_tx(cur, now, f"node {row[0]} {new.value}")
            return True

        return self._run(change)

    def heartbeat(self, node_id: int, lease_s: float) -> Heartbeat | None:
        def beat(cur: sqlite3.Cursor) -> Heartbeat | None:
            now = self._now(cur)
            row = cur.execute(
                "UPDATE nodes SET heartbeat_at = ?, lease_expires_at = ?"
                " WHERE id = ? AND state <> 'dead' RETURNING state, section, pause_requested",
                (now, now + lease_s, node_id),
            ).fetchone()
            if row is None:
                return None
            epoch = cur.execute("SELECT epoch FROM cluster WHERE id = 1").fetchone()[0]
            return Heartbeat(
                now=now,
                epoch=int(epoch),
                section=_section(row[1]),
                pause_requested=bool(row[2]),
                state=NodeState(row[0]),
            )

        return self._run(beat)

    def request_pause(self, node_ref: str, paused: bool) -> NodeRecord:
        def request(cur: sqlite3.Cursor) -> int:
            now = self._now(cur)
            if node_ref.isdigit():
                row = cur.execute(
                    "SELECT id, name, state FROM nodes WHERE id = ?", (int(node_ref),)
                ).fetchone()
            else:
                row = cur.execute(
                    "SELECT id, name, state FROM nodes WHERE name = ? ORDER BY state = 'dead', id"
                    " DESC LIMIT 1",
                    (node_ref,),
                ).fetchone()
            if row is None:
                raise NotFound(f"no node with id or name {node_ref!r}; see `shoal status`")
            if row[2] == NodeState.DEAD.value:
                raise NotFound(f"node {row[1]} (id {row[0]}) is dead; it cannot pause or resume")
            cur.execute("UPDATE nodes SET pause_requested = ? WHERE id = ?", (int(paused), row[0]))
            cur.execute(
                "INSERT INTO history (at, kind, node_id, node_name, reason) VALUES (?, ?, ?, ?, ?)",
                (
                    now,
                    EventKind.PAUSE_REQUEST.value,
                    row[0],
                    row[1],
                    "pause requested" if paused else "resume requested",
                ),
            )
            verb = "pausing" if paused else "resuming"
            self._rebalance_in_tx(cur, now, f"node {row[1]} {verb}")
            return int(row[0])

        node = self.read_node(self._run(request))
        assert node is not None
        return node

    def mark_dead_nodes(self) -> list[int]:
        with self._read() as cur:
            # Cheap check outside a write transaction: most calls find nobody expired.
            due = cur.execute(
                f"SELECT 1 FROM nodes WHERE state <> 'dead' AND lease_expires_at < ({NOW_SQL})"
                " LIMIT 1"
            ).fetchone()
        if due is None:
            return []
        return self._run(lambda cur: self._mark_dead_in_tx(cur, self._now(cur)))

    def rebalance(self) -> bool:
        return self._run(lambda cur: self._rebalance_in_tx(cur, self._now(cur), "repair"))

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

    # -- history and views ----------------------------------------------------------------------

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

    # -- inside transactions --------------------------------------------------------------------

    def _record_state(
        self,
        cur: sqlite3.Cursor,
        now: float,
        node_id: int,
        name: str,
        old: NodeState | None,
        new: NodeState,
        reason: str,
    ) -> None:
        cur.execute(
            "INSERT INTO history (at, kind, node_id, node_name, from_state, to_state, reason)"
            " VALUES (?, 'node_state', ?, ?, ?, ?, ?)",
            (now, node_id, name, old.value if old else None, new.value, reason),
        )

    def _move_node(
        self, cur: sqlite3.Cursor, now: float, node_id: int, old: NodeState, new: NodeState
    ) -> bool:
        row = cur.execute(
            "UPDATE nodes SET state = ?, state_changed_at = ? WHERE id = ? AND state = ?"
            " RETURNING name",
            (new.value, now, node_id, old.value),
        ).fetchone()
        if row is not None:
            self._record_state(cur, now, node_id, row[0], old, new, states.TRANSITIONS[(old, new)])
        return row is not None

    def _mark_dead_in_tx(self, cur: sqlite3.Cursor, now: float) -> list[int]:
        # Requeue only after the lease has expired in database time: a slow commit is not a death.
        rows = cur.execute(
            "SELECT id, name, state FROM nodes WHERE state <> 'dead' AND lease_expires_at < ?",
            (now,),
        ).fetchall()
        for node_id, name, state in rows:
            cur.execute(
                "UPDATE nodes SET state = 'dead', state_changed_at = ? WHERE id = ?", (now, node_id)
            )
            self._record_state(
                cur, now, node_id, name, NodeState(state), NodeState.DEAD, "lease expired"
            )
            self._requeue_running(cur, now, node_id, f"node {name} died (lease expired)")
        if rows:
            names = ", ".join(r[1] for r in rows)
            self._rebalance_in_tx(cur, now, f"declared dead: {names}")
        return [int(r[0]) for r in rows]

    def _requeue_running(self, cur: sqlite3.Cursor, now: float, node_id: int, reason: str) -> None:
        """Give a departed node's running jobs back to the queue, counting the attempt."""
        failed = cur.execute(
            "UPDATE jobs SET state = 'failed', finished_at = ?, traceback = NULL,"
            " error = ? || ' during attempt ' || attempts || ' of ' || max_attempts"
            "  || '; no attempts left'"
            " WHERE state = 'running' AND claimer = ? AND attempts >= max_attempts"
            " RETURNING task, state",
            (now, reason, node_id),
        ).fetchall()
        requeued = cur.execute(
            "UPDATE jobs SET state = 'queued', claimer = NULL, run_after = ?, progress = 0,"
            " progress_message = NULL, traceback = NULL,"
            " error = ? || ' during attempt ' || attempts || '; requeued'"
            " WHERE state = 'running' AND claimer = ? RETURNING task, state",
            (now, reason, node_id),
        ).fetchall()
        _add_counts(cur, _moved(JobState.RUNNING, failed + requeued))

    def _rebalance_in_tx(self, cur: sqlite3.Cursor, now: float, reason: str) -> bool:
        partitions, epoch = cur.execute(
            "SELECT partitions, epoch FROM cluster WHERE id = 1"
        ).fetchone()
        owners = self._owners(cur)
        eligible = [
            r[0]
            for r in cur.execute(
                "SELECT id FROM nodes WHERE state IN ('waiting', 'working') AND pause_requested = 0"
            )
        ]
        new = assignment.rebalance(owners, eligible, partitions)
        if new == owners:
            return False
        cur.executemany(
            "UPDATE partitions SET owner = ? WHERE partition = ?",
            [(o, p) for p, (o, was) in enumerate(zip(new, owners, strict=True)) if o != was],
        )
        before, after = assignment.sections(owners), assignment.sections(new)
        for node_id in set(before) | set(after):
            if before.get(node_id) != after.get(node_id):
                cur.execute(
                    "UPDATE nodes SET section = ? WHERE id = ?",
                    (_section_text(after.get(node_id, ())), node_id),
                )
        epoch += 1
        cur.execute("UPDATE cluster SET epoch = ? WHERE id = 1", (epoch,))
        cur.execute(
            "INSERT INTO history (at, kind, epoch, owners, reason)"
            " VALUES (?, 'rebalance', ?, ?, ?)",
            (
                now,
                epoch,
                json.dumps(new),
                f"{reason}; moved {assignment.moved(owners, new)} of {partitions}",
            ),
        )
        return True


# -- job counts -----------------------------------------------------------------------------------


def _moved(old: JobState, rows: Iterable[tuple[str, str]]) -> Counter[tuple[str, str]]:
    """Deltas for jobs (task, new state) that left `old`."""
    deltas: Counter[tuple[str, str]] = Counter()
    for task, state in rows:
        deltas[(task, state)] += 1
        deltas[(task, old.value)] -= 1
    return deltas


def _add_counts(cur: sqlite3.Cursor, deltas: Counter[tuple[str, str]]) -> None:
    """Add the deltas to the counters, in the same transaction as the change they count."""
    cur.executemany(
        "INSERT INTO job_counts (shard, task, state, n) VALUES (0, ?, ?, ?)"
        " ON CONFLICT (shard, task, state) DO UPDATE SET n = n + excluded.n",
        [(task, state, n) for (task, state), n in sorted(deltas.items()) if n],
    )


__all__ = ["SqliteStore", "path_from_url"]
