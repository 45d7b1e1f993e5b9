"""Node membership on the PostgreSQL datastore: nodes registering, changing state, beating, dying.

A change of membership locks the cluster row, so that changes apply one at a time, and rebalances
the partitions in the same transaction: it bumps the epoch, records history and wakes every node.
A node that stops, or whose lease expires, gives its running jobs back to the queue. A
registration or state change retried after its connection broke first checks whether the earlier
try already applied.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import psycopg.errors as pgerr

from shoal import assignment, states
from shoal.errors import NodeNameTaken, NotFound
from shoal.model import Heartbeat, NodeRecord, NodeState
from shoal.store import postgres_sql as q
from shoal.store.postgres_read import Conn, PostgresReads, _owners, _scalar


class PostgresNodes(PostgresReads):
    """Registration, state changes, heartbeats, pauses, deaths and rebalancing on PostgreSQL."""

    # -- node lifecycle -----------------------------------------------------------------------

    def register_node(
        self,
        name: str,
        host: str,
        pid: int,
        concurrency: int,
        tasks: Sequence[str],
        lease_s: float,
    ) -> NodeRecord:
        def register(conn: Conn, retried: bool) -> int:
            if retried:  # the earlier try may have committed: that registration is ours
                row = conn.execute(
                    "SELECT id FROM nodes WHERE name = %s AND host = %s AND pid = %s"
                    " AND state = 'initializing'",
                    (name, host, pid),
                ).fetchone()
                if row is not None:
                    return int(row[0])
            with conn.transaction():
                # A node that crashed under this name frees it once its lease has expired.
                if conn.execute(q.ANY_EXPIRED).fetchone():
                    conn.execute(q.LOCK_CLUSTER)
                    self._mark_dead_in_tx(conn)
                holder = conn.execute(
                    f"SELECT id, state, lease_expires_at - {q.NOW} FROM nodes"
                    " WHERE name = %s AND state <> 'dead'",
                    (name,),
                ).fetchone()
                if holder is not None:
                    raise _name_taken(name, holder)
                try:
                    with conn.transaction():
                        node_id = int(
                            _scalar(
                                conn,
                                q.INSERT_NODE,
                                {
                                    "name": name,
                                    "host": host,
                                    "pid": pid,
                                    "concurrency": concurrency,
                                    "tasks": sorted(tasks),
                                    "lease": lease_s,
                                },
                            )
                        )
                except pgerr.UniqueViolation:  # registered by someone else a moment ago
                    raise _name_taken(name, None) from None
                conn.execute(
                    q.NODE_STATE_EVENT,
                    (node_id, name, None, NodeState.INITIALIZING.value, "registered"),
                )
                return node_id

        node = self.read_node(self._db.run("register node", register))
        assert node is not None
        return node

    def set_node_state(
        self, node_id: int, expected: NodeState, new: NodeState, reason: str = ""
    ) -> bool:
        why = reason or states.check_transition(expected, new)
        states.check_transition(expected, new)

        # waiting <-> working leaves membership alone: no rebalance, so no cluster lock.
        membership = not (expected in states.SECTION_STATES and new in states.SECTION_STATES)

        def change(conn: Conn, retried: bool) -> bool:
            with conn.transaction():
                if membership:
                    conn.execute(q.LOCK_CLUSTER)
                row = conn.execute(
                    q.MOVE_NODE, {"new": new.value, "node": node_id, "old": expected.value}
                ).fetchone()
                if row is None:
                    if retried:  # our earlier try may have made the move already
                        now_in = conn.execute(
                            "SELECT state FROM nodes WHERE id = %s", (node_id,)
                        ).fetchone()
                        return now_in is not None and now_in[0] == new.value
                    return False
                name = str(row[0])
                conn.execute(q.NODE_STATE_EVENT, (node_id, name, expected.value, new.value, why))
                if new is NodeState.DEAD:
                    self._requeue_running(conn, node_id, f"node {name} stopped: {why}")
                if membership:
                    self._rebalance_in_tx(conn, f"node {name} {new.value}")
                return True

        return self._db.run("change node state", change)

    def heartbeat(self, node_id: int, lease_s: float) -> Heartbeat | None:
        def beat(conn: Conn, _: bool) -> Heartbeat | None:
            row = conn.execute(q.HEARTBEAT, {"node": node_id, "lease": lease_s}).fetchone()
            if row is None:
                return None
            return Heartbeat(
                now=float(row[0]),
                epoch=int(row[1]),
                section=tuple(row[2]),
                pause_requested=bool(row[3]),
                state=NodeState(row[4]),
            )

        return self._db.run("heartbeat", beat)

    def request_pause(self, node_ref: str, paused: bool) -> NodeRecord:
        def request(conn: Conn, _: bool) -> int:
            with conn.transaction():
                conn.execute(q.LOCK_CLUSTER)
                if node_ref.isdigit():
                    row = conn.execute(q.FIND_NODE_BY_ID, (int(node_ref),)).fetchone()
                else:
                    row = conn.execute(q.FIND_NODE_BY_NAME, (node_ref,)).fetchone()
                if row is None:
                    raise NotFound(f"no node with id or name {node_ref!r}; see `shoal status`")
                node_id, name, state = int(row[0]), str(row[1]), str(row[2])
                if state == NodeState.DEAD.value:
                    raise NotFound(f"node {name} (id {node_id}) is dead; it cannot pause or resume")
                conn.execute(q.SET_PAUSE, (paused, node_id))
                conn.execute(
                    q.PAUSE_EVENT,
                    (node_id, name, "pause requested" if paused else "resume requested"),
                )
                self._rebalance_in_tx(conn, f"node {name} {'pausing' if paused else 'resuming'}")
                return node_id

        node = self.read_node(self._db.run("request pause", request))
        assert node is not None
        return node

    def mark_dead_nodes(self) -> list[int]:
        def mark(conn: Conn, _: bool) -> list[int]:
            # Cheap check outside a write transaction: most calls find nobody expired.
            if conn.execute(q.ANY_EXPIRED).fetchone() is None:
                return []
            with conn.transaction():
                conn.execute(q.LOCK_CLUSTER)
                return self._mark_dead_in_tx(conn)

        return self._db.run("mark dead nodes", mark)

    def rebalance(self) -> bool:
        def repair(conn: Conn, _: bool) -> bool:
            with conn.transaction():
                conn.execute(q.LOCK_CLUSTER)
                return self._rebalance_in_tx(conn, "repair")

        return self._db.run("rebalance", repair)

    # -- inside transactions (the caller holds the cluster row lock) --------------------------

    def _mark_dead_in_tx(self, conn: Conn) -> list[int]:
        rows = conn.execute(q.MARK_EXPIRED_DEAD).fetchall()
        for node_id, name, old in rows:
            conn.execute(
                q.NODE_STATE_EVENT, (node_id, name, old, NodeState.DEAD.value, "lease expired")
            )
            self._requeue_running(conn, node_id, f"node {name} died (lease expired)")
        if rows:
            names = ", ".join(str(r[1]) for r in sorted(rows))
            self._rebalance_in_tx(conn, f"declared dead: {names}")
        return sorted(int(r[0]) for r in rows)

    @staticmethod
    def _requeue_running(conn: Conn, node_id: int, reason: str) -> None:
        """Give a departed node's running jobs back to the queue, counting the attempt."""
        args = {"node": node_id, "shard": q.counter_shard(node_id), "reason": reason}
        if _scalar(conn, q.REQUEUE_ORPHANS, args):
            conn.execute(q.WAKE_ALL)

    @staticmethod
    def _rebalance_in_tx(conn: Conn, reason: str) -> bool:
        partitions = int(_scalar(conn, "SELECT partitions FROM cluster WHERE id = 1"))
        owners = _owners(conn)
        eligible = [int(r[0]) for r in conn.execute(q.ELIGIBLE_NODES)]
        new = assignment.rebalance(owners, eligible, partitions)
        if new == owners:
            return False
        changed = [p for p, (o, was) in enumerate(zip(new, owners, strict=True)) if o != was]
        conn.execute(q.SET_OWNERS, (changed, [new[p] for p in changed]))
        before, after = assignment.sections(owners), assignment.sections(new)
        moved_nodes = [n for n in set(before) | set(after) if before.get(n) != after.get(n)]
        with conn.cursor() as cur:
            cur.executemany(
                q.SET_SECTION, [(list(after.get(n, ())), n) for n in sorted(moved_nodes)]
            )
        epoch = int(_scalar(conn, q.BUMP_EPOCH))
        conn.execute(
            q.REBALANCE_EVENT,
            (epoch, list(new), f"{reason}; moved {assignment.moved(owners, new)} of {partitions}"),
        )
        conn.execute(q.WAKE_ALL)  # sections changed: new owners should look at once
        return True


def _name_taken(name: str, holder: tuple[Any, ...] | None) -> NodeNameTaken:
    if holder is None:
        return NodeNameTaken(f"a live node named {name!r} already exists; pick another --name")
    return NodeNameTaken(
        f"a live node named {name!r} already exists (id {holder[0]}, {holder[1]}); its lease "
        f"ends in {max(0.0, float(holder[2])):.1f}s. Pick another --name, or stop that node first."
    )
