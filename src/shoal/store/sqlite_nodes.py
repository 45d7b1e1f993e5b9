"""Node membership on the SQLite datastore: nodes registering, changing state, beating and dying.

Every change of membership rebalances the partitions in the same write transaction, bumps the
epoch and records history; a node that stops, or whose lease expires, gives its running jobs back
to the queue. The job counters that those requeues adjust are kept by the helpers at the end,
which the job side (`sqlite`) uses too.
"""

from __future__ import annotations

import json
import sqlite3
from collections import Counter
from collections.abc import Iterable, Sequence

from shoal import assignment, states
from shoal.errors import NodeNameTaken, NotFound
from shoal.model import EventKind, Heartbeat, JobState, NodeRecord, NodeState
from shoal.store.sqlite_file import NOW_SQL
from shoal.store.sqlite_read import SqliteReads, _section, _section_text


class SqliteNodes(SqliteReads):
    """Registration, state changes, heartbeats, pauses, deaths and rebalancing on one file."""

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
