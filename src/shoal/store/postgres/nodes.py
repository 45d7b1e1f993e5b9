"""Node membership on the PostgreSQL store: registering, changing state, beating, pausing, dying.

Plain functions over a borrowed connection. A change of membership locks the cluster row, so that
changes apply one at a time, and rebalances the partitions in the same transaction: it bumps the
epoch, records history and wakes every node. A node that stops, or whose lease expires, gives its
running jobs back to the queue. A registration or state change retried after its connection broke
(`retried`) first checks whether the earlier try already applied.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import psycopg.errors as pgerr

from shoal import states
from shoal.errors import NodeNameTaken
from shoal.load import Backlog, Move, NodeLoad
from shoal.model import Heartbeat, NodeState, TaskLimit
from shoal.store import limits, rules, texts
from shoal.store.port import NewNode
from shoal.store.postgres import queries as q
from shoal.store.postgres.reads import Conn, homes, owners, scalar

log = logging.getLogger("shoal.store.postgres")


def register(conn: Conn, retried: bool, new: NewNode) -> int:
    """Insert a node in `initializing`; NodeNameTaken if a live node has the name."""
    if retried:  # the earlier try may have committed: that registration is ours
        row = conn.execute(q.OUR_REGISTRATION, (new.name, new.host, new.pid)).fetchone()
        if row is not None:
            return int(row[0])
    with conn.transaction():
        stored = read_stored_limits(conn, new)
        first = any(lim.task not in stored for lim in limits.declared(new.tasks, new.limits)[0])
        if first:
            # A first limit counts the task's running jobs with no job write in flight (see
            # LOCK_JOBS), locked after the cluster row, as every change of membership locks them.
            conn.execute(q.LOCK_CLUSTER)
            conn.execute(q.LOCK_JOBS)
        # A node that crashed under this name frees it once its lease has expired.
        if conn.execute(q.ANY_EXPIRED).fetchone():
            conn.execute(q.LOCK_CLUSTER)
            mark_dead(conn)
        holder = conn.execute(q.LIVE_HOLDER, (new.name,)).fetchone()
        if holder is not None:
            lease_left_s = float(holder[2])
            raise NodeNameTaken(texts.name_taken(new.name, (holder[0], holder[1], lease_left_s)))
        args = {**vars(new), "tasks": list(new.tasks), "lease": new.lease_s}
        try:
            with conn.transaction():
                node_id = int(scalar(conn, q.INSERT_NODE, args))
        except pgerr.UniqueViolation:  # registered by someone else a moment ago
            raise NodeNameTaken(texts.name_taken(new.name)) from None
        event = (node_id, new.name, None, NodeState.INITIALIZING.value, texts.REGISTERED)
        conn.execute(q.NODE_STATE_EVENT, event)
        write_limits(conn, new, stored, first)
        return node_id


def read_stored_limits(conn: Conn, new: NewNode) -> dict[str, TaskLimit]:
    rows = conn.execute(q.STORED_LIMITS, (list(new.tasks),)).fetchall()
    return {str(r[0]): TaskLimit(str(r[0]), r[1], r[2]) for r in rows}


def write_limits(conn: Conn, new: NewNode, stored: dict[str, TaskLimit], first: bool) -> None:
    """Make the node's declared limits the cluster's (the latest registration wins, see
    `limits.declared`), inside the registration's transaction; `stored` is what it found, and
    `first` whether it holds LOCK_JOBS to create rows."""
    limited, cleared = limits.declared(new.tasks, new.limits)
    changed = limits.changes(stored, limited, cleared)
    if not changed:
        return
    if limited:
        conn.execute(
            q.UPSERT_LIMITS if first else q.UPDATE_LIMITS,
            {
                "tasks": [lim.task for lim in limited],
                "max_running": [lim.max_running for lim in limited],
                "max_per_s": [lim.max_per_s for lim in limited],
            },
        )
    if cleared:
        conn.execute(q.CLEAR_LIMITS, (cleared,))
    for task, before, after in changed:
        log.info("%s", texts.limits_changed(task, before, after, new.name))


def apply_state(
    conn: Conn, retried: bool, node_id: int, old: NodeState, new: NodeState, why: str
) -> bool:
    """Move the node old -> new if it is still in `old` (the pair is already allowed)."""
    # waiting <-> working leaves membership alone: no rebalance, so no cluster lock.
    membership = not (old in states.SECTION_STATES and new in states.SECTION_STATES)
    with conn.transaction():
        if membership:
            conn.execute(q.LOCK_CLUSTER)
        row = conn.execute(
            q.MOVE_NODE, {"new": new.value, "node": node_id, "old": old.value}
        ).fetchone()
        if row is None:
            if retried:  # our earlier try may have made the move already
                now_in = conn.execute(q.NODE_STATE, (node_id,)).fetchone()
                return now_in is not None and now_in[0] == new.value
            return False
        name = str(row[0])
        conn.execute(q.NODE_STATE_EVENT, (node_id, name, old.value, new.value, why))
        if new is NodeState.DEAD:
            requeue_running(conn, node_id, texts.node_stopped(name, why), died=False)
        if membership:
            rebalance(conn, texts.state_rebalance(name, new.value))
        return True


def heartbeat(conn: Conn, node_id: int, lease_s: float) -> Heartbeat | None:
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


def request_pause(conn: Conn, node_ref: str, paused: bool, why: str | None = None) -> int:
    """Set or clear the node's pause request and rebalance; NotFound if unknown or dead."""
    with conn.transaction():
        conn.execute(q.LOCK_CLUSTER)
        key = rules.node_key(node_ref)
        find = q.FIND_NODE_BY_ID if isinstance(key, int) else q.FIND_NODE_BY_NAME
        node_id, name = rules.pause_target(node_ref, conn.execute(find, (key,)).fetchone())
        conn.execute(q.SET_PAUSE, (paused, node_id))
        conn.execute(q.PAUSE_EVENT, (node_id, name, texts.pause_event(paused, why)))
        rebalance(conn, texts.pause_rebalance(name, paused))
        return node_id


def mark_dead_nodes(conn: Conn) -> list[int]:
    # Cheap check outside a write transaction: most calls find nobody expired.
    if conn.execute(q.ANY_EXPIRED).fetchone() is None:
        return []
    with conn.transaction():
        conn.execute(q.LOCK_CLUSTER)
        return mark_dead(conn)


def repair(conn: Conn) -> bool:
    with conn.transaction():
        conn.execute(q.LOCK_CLUSTER)
        return rebalance(conn, texts.REPAIR)


# -- inside transactions (the caller holds the cluster row lock) ----------------------------------


def mark_dead(conn: Conn) -> list[int]:
    """Declare dead every node whose lease expired, requeue their jobs, rebalance."""
    rows = conn.execute(q.MARK_EXPIRED_DEAD).fetchall()
    for node_id, name, old, isolated in rows:
        conn.execute(
            q.NODE_STATE_EVENT, (node_id, name, old, NodeState.DEAD.value, texts.LEASE_EXPIRED)
        )
        # Tasks that ran in a worker process could not have killed the node: no death counted.
        requeue_running(conn, node_id, texts.node_died(name), died=not isolated)
    if rows:
        rebalance(conn, texts.declared_dead([str(r[1]) for r in sorted(rows)]))
    return sorted(int(r[0]) for r in rows)


def requeue_running(conn: Conn, node_id: int, reason: str, died: bool) -> None:
    """Give a departed node's running jobs back to the queue, counting the attempt; if the node
    `died`, count the death on each job and fail those it quarantines (see REQUEUE_ORPHANS);
    those asked to cancel end cancelled. Its jobs claimed ahead go back as they were."""
    args = {
        "node": node_id,
        "shard": q.counter_shard(node_id),
        "reason": reason,
        "died": died,
        **texts.orphan_texts(),
    }
    requeued = scalar(conn, q.REQUEUE_ORPHANS, args)
    if scalar(conn, q.REQUEUE_CLAIMED, args) or requeued:
        conn.execute(q.WAKE_ALL)
    args["error"] = texts.CANCELLED_RUNNING + reason
    conn.execute(q.CANCEL_ORPHANS, args)


def rebalance(conn: Conn, why: str) -> bool:
    """Make the assignment match the eligible nodes; True if it changed."""
    partitions = int(scalar(conn, q.CLUSTER_PARTITIONS))
    eligible = {int(r[0]): int(r[1]) for r in conn.execute(q.ELIGIBLE_NODES)}
    plan = rules.plan_rebalance(owners(conn), homes(conn), eligible, partitions, why)
    if plan is None:
        return False
    write_plan(conn, plan, q.REBALANCE_EVENT)
    return True


def write_plan(conn: Conn, plan: rules.RebalancePlan, event: str) -> None:
    """Owners, homes and sections as planned, the epoch bumped, the history row `event`, and
    every node woken (sections changed: new owners should look at once)."""
    changed = list(plan.changed)
    lent = event == q.LOAD_MOVE_EVENT
    conn.execute(
        q.SET_OWNERS,
        (lent, changed, [plan.owners[p] for p in changed], [plan.homes[p] for p in changed]),
    )
    with conn.cursor() as cur:
        cur.executemany(q.SET_SECTION, [(list(s), n) for n, s in plan.sections])
    epoch = int(scalar(conn, q.BUMP_EPOCH))
    conn.execute(event, (epoch, list(plan.owners), plan.reason))
    conn.execute(q.WAKE_ALL)


# -- load moves -----------------------------------------------------------------------------------


def read_load(conn: Conn, by_task: bool) -> rules.LoadSnapshot:
    """What the load rule looks at, read in one read-only snapshot (see `queries.LOAD_*`);
    `by_task`: count the backlog task by task (LOAD_BACKLOG_BY_TASK, see `untaken_is_large`)."""
    with conn.transaction():
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        rows = conn.execute(q.LOAD_PARTITIONS).fetchall()
        loads = {int(r[0]): NodeLoad(int(r[1]), int(r[2])) for r in conn.execute(q.LOAD_NODES)}
        backlog = {
            int(r[0]): Backlog(int(r[1]), max(0.0, float(r[2])))
            for r in conn.execute(q.LOAD_BACKLOG_BY_TASK if by_task else q.LOAD_BACKLOG)
        }
    return rules.LoadSnapshot(
        owners=tuple(None if r[0] is None else int(r[0]) for r in rows),
        homes=tuple(None if r[1] is None else int(r[1]) for r in rows),
        nodes=loads,
        backlog=backlog,
        moved_ago_s={p: float(r[2]) for p, r in enumerate(rows) if r[2] is not None},
    )


def untaken_is_large(conn: Conn) -> bool:
    """Whether so many queued jobs are of tasks some eligible node does not register
    (LOAD_UNTAKEN) that the backlog is best counted task by task."""
    row = conn.execute(q.LOAD_UNTAKEN).fetchone()
    if row is None:
        return False
    return int(row[0]) > rules.UNTAKEN_PER_PARTITION * int(row[1] or 1)


def move_partitions(conn: Conn, moves: Sequence[Move]) -> int:
    """Apply load moves under the cluster lock; returns how many applied (see
    `rules.plan_load_moves` for which do)."""
    with conn.transaction():
        conn.execute(q.LOCK_CLUSTER)
        eligible = {int(r[0]) for r in conn.execute(q.ELIGIBLE_NODES)}
        recent = int(scalar(conn, q.RECENT_LOAD_MOVES))
        plan = rules.plan_load_moves(owners(conn), homes(conn), eligible, moves, recent)
        if plan is None:
            return 0
        write_plan(conn, plan, q.LOAD_MOVE_EVENT)
        return len(plan.changed)
