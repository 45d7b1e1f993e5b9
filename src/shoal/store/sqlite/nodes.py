"""Node membership on the SQLite store: registering, changing state, beating, pausing and dying.

Plain functions over the open write transaction. Every change of membership rebalances the
partitions in the same transaction, bumps the epoch and records history; a node that stops, or
whose lease expires, gives its running jobs back to the queue. The job counters that those
requeues adjust are kept by `add_counts`, which the job side uses too.
"""

from __future__ import annotations

import json
import sqlite3
from collections import Counter
from collections.abc import Sequence

from shoal import states
from shoal.errors import NodeNameTaken
from shoal.load import Backlog, Move, NodeLoad
from shoal.model import Heartbeat, JobState, NodeState
from shoal.store import rules, texts
from shoal.store.port import NewNode
from shoal.store.sqlite import queries as q
from shoal.store.sqlite.limits import write_limits
from shoal.store.sqlite.reads import homes, owners, section_of, section_text


def register(cur: sqlite3.Cursor, now: float, new: NewNode) -> int:
    """Insert a node in `initializing`; NodeNameTaken if a live node has the name."""
    # A node that crashed under this name frees it once its lease has expired.
    mark_dead(cur, now)
    holder = cur.execute(q.LIVE_HOLDER, (now, new.name)).fetchone()
    if holder is not None:
        raise NodeNameTaken(texts.name_taken(new.name, (holder[0], holder[1], holder[2])))
    cur.execute(
        q.INSERT_NODE,
        {**vars(new), "tasks": json.dumps(list(new.tasks)), "now": now, "lease": new.lease_s},
    )
    node_id = int(cur.lastrowid or 0)
    record_state(cur, now, node_id, new.name, None, NodeState.INITIALIZING, texts.REGISTERED)
    write_limits(cur, new)
    return node_id


def apply_state(
    cur: sqlite3.Cursor, now: float, node_id: int, old: NodeState, new: NodeState, why: str
) -> bool:
    """Move the node old -> new if it is still in `old` (the pair is already allowed)."""
    row = cur.execute(
        q.MOVE_NODE, {"new": new.value, "now": now, "node": node_id, "old": old.value}
    ).fetchone()
    if row is None:
        return False
    record_state(cur, now, node_id, row[0], old, new, why)
    if new is NodeState.DEAD:
        requeue_running(cur, now, node_id, texts.node_stopped(row[0], why), died=False)
    rebalance(cur, now, texts.state_rebalance(row[0], new.value))
    return True


def heartbeat(cur: sqlite3.Cursor, now: float, node_id: int, lease_s: float) -> Heartbeat | None:
    row = cur.execute(q.HEARTBEAT, {"now": now, "lease": lease_s, "node": node_id}).fetchone()
    if row is None:
        return None
    epoch = cur.execute(q.EPOCH).fetchone()[0]
    return Heartbeat(
        now=now,
        epoch=int(epoch),
        section=section_of(row[1]),
        pause_requested=bool(row[2]),
        state=NodeState(row[0]),
    )


def request_pause(
    cur: sqlite3.Cursor, now: float, node_ref: str, paused: bool, why: str | None = None
) -> int:
    """Set or clear the node's pause request and rebalance; NotFound if unknown or dead."""
    key = rules.node_key(node_ref)
    find = q.FIND_NODE_BY_ID if isinstance(key, int) else q.FIND_NODE_BY_NAME
    node_id, name = rules.pause_target(node_ref, cur.execute(find, (key,)).fetchone())
    cur.execute(q.SET_PAUSE, (int(paused), node_id))
    cur.execute(q.PAUSE_EVENT, (now, node_id, name, texts.pause_event(paused, why)))
    rebalance(cur, now, texts.pause_rebalance(name, paused))
    return node_id


def record_state(
    cur: sqlite3.Cursor,
    now: float,
    node_id: int,
    name: str,
    old: NodeState | None,
    new: NodeState,
    reason: str,
) -> None:
    cur.execute(
        q.NODE_STATE_EVENT,
        (now, node_id, name, old.value if old else None, new.value, reason),
    )


def move_node(
    cur: sqlite3.Cursor, now: float, node_id: int, old: NodeState, new: NodeState
) -> bool:
    """A transition that leaves membership alone (waiting <-> working): no rebalance."""
    row = cur.execute(
        q.MOVE_NODE, {"new": new.value, "now": now, "node": node_id, "old": old.value}
    ).fetchone()
    if row is not None:
        record_state(cur, now, node_id, row[0], old, new, states.TRANSITIONS[(old, new)])
    return row is not None


def mark_dead(cur: sqlite3.Cursor, now: float) -> list[int]:
    """Declare dead every node whose lease expired before `now`, requeue, rebalance."""
    # Requeue only after the lease has expired in database time: a slow commit is not a death.
    rows = cur.execute(q.EXPIRED, (now,)).fetchall()
    for node_id, name, state, isolated in rows:
        cur.execute(q.MARK_EXPIRED_DEAD, (now, node_id))
        record_state(cur, now, node_id, name, NodeState(state), NodeState.DEAD, texts.LEASE_EXPIRED)
        # Tasks that ran in a worker process could not have killed the node: no death counted.
        requeue_running(cur, now, node_id, texts.node_died(name), died=not isolated)
    if rows:
        rebalance(cur, now, texts.declared_dead([r[1] for r in rows]))
    return [int(r[0]) for r in rows]


def requeue_running(cur: sqlite3.Cursor, now: float, node_id: int, reason: str, died: bool) -> None:
    """Give a departed node's running jobs back to the queue, counting the attempt; if the node
    `died`, count the death on each job and fail those it quarantines (see REQUEUE_ORPHANS);
    those asked to cancel end cancelled. Its jobs claimed ahead go back as they were."""
    rows = cur.execute(
        q.REQUEUE_ORPHANS,
        {
            "now": now,
            "node": node_id,
            "reason": reason,
            "died": int(died),
            "quarantine_after": cur.execute(q.QUARANTINE_AFTER).fetchone()[0],
            **texts.orphan_texts(),
        },
    ).fetchall()
    error = texts.CANCELLED_RUNNING + reason
    rows += cur.execute(q.CANCEL_ORPHANS, {"now": now, "node": node_id, "error": error}).fetchall()
    add_counts(cur, rules.count_moves(JobState.RUNNING, rows))
    ahead = cur.execute(q.REQUEUE_CLAIMED, {"node": node_id}).fetchall()
    add_counts(cur, rules.count_moves(JobState.CLAIMED, ahead))


def rebalance(cur: sqlite3.Cursor, now: float, why: str) -> bool:
    """Make the assignment match the eligible nodes; True if it changed."""
    partitions, _ = cur.execute(q.LOCK_CLUSTER).fetchone()
    before, at_home = owners(cur), homes(cur)
    eligible = {int(r[0]): int(r[1]) for r in cur.execute(q.ELIGIBLE_NODES)}
    plan = rules.plan_rebalance(before, at_home, eligible, partitions, why)
    if plan is None:
        return False
    write_plan(cur, now, plan, q.REBALANCE_EVENT)
    return True


def write_plan(cur: sqlite3.Cursor, now: float, plan: rules.RebalancePlan, event: str) -> None:
    """Owners, homes and sections as planned, the epoch bumped, the history row `event`."""
    _, epoch = cur.execute(q.LOCK_CLUSTER).fetchone()
    moved = now if event == q.LOAD_MOVE_EVENT else None
    cur.executemany(
        q.SET_OWNER,
        [
            {"owner": plan.owners[p], "home": plan.homes[p], "moved": moved, "partition": p}
            for p in plan.changed
        ],
    )
    cur.executemany(q.SET_SECTION, [(section_text(s), n) for n, s in plan.sections])
    cur.execute(q.SET_EPOCH, (epoch + 1,))
    cur.execute(event, (now, epoch + 1, json.dumps(plan.owners), plan.reason))


# -- load moves -----------------------------------------------------------------------------------


def read_load(cur: sqlite3.Cursor, now: float) -> rules.LoadSnapshot:
    """What the load rule looks at, read in one transaction (see `queries.LOAD_*`)."""
    rows = cur.execute(q.LOAD_PARTITIONS).fetchall()
    nodes = {int(r[0]): NodeLoad(int(r[1]), int(r[2])) for r in cur.execute(q.LOAD_NODES)}
    backlog = _backlog_by_task(cur, now)
    if backlog is None:
        backlog = {
            int(r[0]): Backlog(int(r[1]), max(0.0, float(r[2])))
            for r in cur.execute(q.LOAD_BACKLOG, (now, now, rules.LOAD_SCAN_JOBS))
        }
    return rules.LoadSnapshot(
        owners=tuple(r[0] for r in rows),
        homes=tuple(r[1] for r in rows),
        nodes=nodes,
        backlog=backlog,
        moved_ago_s={p: now - r[2] for p, r in enumerate(rows) if r[2] is not None},
    )


def _backlog_by_task(cur: sqlite3.Cursor, now: float) -> dict[int, Backlog] | None:
    """Each partition's backlog counted task by task (LOAD_BACKLOG_OF_TASK), when more than
    `rules.UNTAKEN_PER_PARTITION` queued jobs per partition are of tasks that some eligible node
    does not register; None while they are fewer, and LOAD_BACKLOG's one scan finds the same."""
    queued = {str(r[0]): int(r[1]) for r in cur.execute(q.QUEUED_TASKS)}
    everyone = [set(json.loads(r[0])) for r in cur.execute(q.ELIGIBLE_NODE_TASKS)]
    untaken = sum(n for task, n in queued.items() if any(task not in t for t in everyone))
    partitions = int(cur.execute(q.LOCK_CLUSTER).fetchone()[0])
    if untaken <= rules.UNTAKEN_PER_PARTITION * partitions:
        return None
    tasks_of = {int(r[0]): set(json.loads(r[1])) for r in cur.execute(q.LOAD_OWNER_TASKS)}
    someone_takes = set().union(*tasks_of.values())
    if len(tasks_of) < partitions:  # a partition without an owner counts every job
        someone_takes |= set(queued)
    counted: dict[int, list[float]] = {}
    for task in sorted(someone_takes & set(queued)):
        for r in cur.execute(q.LOAD_BACKLOG_OF_TASK, (task, now, rules.LOAD_SCAN_JOBS)):
            owner_tasks = tasks_of.get(int(r[0]))
            if owner_tasks is None or task in owner_tasks:
                counted.setdefault(int(r[0]), []).append(max(float(r[1]), float(r[2])))
    return {p: Backlog(len(ts), max(0.0, now - min(ts))) for p, ts in counted.items()}


def move_partitions(cur: sqlite3.Cursor, now: float, moves: Sequence[Move]) -> int:
    """Apply load moves in this write transaction; returns how many applied (see
    `rules.plan_load_moves` for which do)."""
    before, at_home = owners(cur), homes(cur)
    eligible = {int(r[0]) for r in cur.execute(q.ELIGIBLE_NODES)}
    recent = int(cur.execute(q.RECENT_LOAD_MOVES, (now - 60.0,)).fetchone()[0])
    plan = rules.plan_load_moves(before, at_home, eligible, moves, recent)
    if plan is None:
        return 0
    write_plan(cur, now, plan, q.LOAD_MOVE_EVENT)
    return len(plan.changed)


def add_counts(cur: sqlite3.Cursor, deltas: Counter[tuple[str, str]]) -> None:
    """Add the deltas to the counters, in the same transaction as the change they count."""
    cur.executemany(
        q.ADD_COUNTS, [(task, state, n) for (task, state), n in sorted(deltas.items()) if n]
    )
