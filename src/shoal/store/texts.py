"""The texts people read from a datastore, written once for both dialects.

Error messages (a name taken, a node not found or dead, a fixed partition count, a schema to
create or migrate) and the reasons recorded on jobs that a departed node gave back are built
here in Python. The dialects raise them or pass them to their SQL as parameters, so no dialect's
SQL spells a sentence of its own.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from shoal.load import Move, MoveKind
from shoal.model import TaskLimit

# The parts of a requeued or failed job's error that SQL fills in per row: the markers stand for
# the job's attempt number and its maximum (see `orphan_failed_tail`).
ATTEMPT_MARK = "{attempt}"
MAX_ATTEMPTS_MARK = "{max_attempts}"
DEATHS_MARK = "{deaths}"


def name_taken(name: str, holder: tuple[int, str, float] | None = None) -> str:
    """A live node already has `name`; `holder` is its (id, state, seconds left on its lease)."""
    if holder is None:
        return f"a live node named {name!r} already exists; pick another --name"
    node_id, state, lease_left_s = holder
    return (
        f"a live node named {name!r} already exists (id {node_id}, {state}); its lease ends in "
        f"{max(0.0, lease_left_s):.1f}s. Pick another --name, or stop that node first."
    )


def no_such_node(node_ref: str) -> str:
    return f"no node with id or name {node_ref!r}; see `shoal status`"


def node_is_dead(name: str, node_id: int) -> str:
    return f"node {name} (id {node_id}) is dead; it cannot pause or resume"


PARTITIONS_AT_LEAST_ONE = "partitions must be at least 1"


def partitions_shrink(existing: int, wanted: int) -> str:
    return (
        f"this datastore has {existing} partitions and P can only grow (asked for {wanted}): "
        "every queued job keeps the partition it was given, so fewer would orphan some"
    )


def load_moves(moves: Sequence[Move], last_minute: int) -> str:
    """The history reason of a load move: who lent what to whom, or gave it back, and the load
    moves of the last minute (the rate); followed by "of P" where it is recorded."""
    parts = []
    for kind in MoveKind:
        for (source, target), group in _by_pair(m for m in moves if m.kind is kind).items():
            verb = "lent" if kind is MoveKind.LEND else "gave back"
            parts.append(f"{verb} {len(group)} from node {source} to node {target}")
    return f"load: {'; '.join(parts)}; {last_minute} in the last minute; moved {len(moves)}"


def _by_pair(moves: Iterable[Move]) -> dict[tuple[int | None, int], list[Move]]:
    out: dict[tuple[int | None, int], list[Move]] = {}
    for move in moves:
        out.setdefault((move.source, move.target), []).append(move)
    return out


def partitions_grew(before: int, after: int) -> str:
    return f"partitions grew from {before} to {after}"


def init_command(url: str) -> str:
    return f"run `shoal init --db {url}`"


def no_datastore(path: str, url: str) -> str:
    return f"no Shoal datastore at {path}; start a node or {init_command(url)}"


def no_schema(where: str, url: str) -> str:
    return f"{where} has no Shoal schema; {init_command(url)}"


def old_schema(where: str, version: int, needed: int, url: str) -> str:
    return (
        f"{where} has schema version {version}, this Shoal needs {needed}; "
        f"{init_command(url)} to migrate"
    )


def newer_schema(where: str, version: int, known: int) -> str:
    return (
        f"{where} has schema version {version}, newer than this Shoal understands "
        f"({known}); upgrade Shoal on this host"
    )


NO_CLUSTER_ROW = "the Shoal schema has no cluster row; run `shoal init`"


def no_cluster_row(url: str) -> str:
    return f"{url} has no cluster row; {init_command(url)}"


# -- reasons recorded on jobs and nodes -------------------------------------------------------

LEASE_EXPIRED = "lease expired"
REGISTERED = "registered"


def node_stopped(name: str, why: str) -> str:
    return f"node {name} stopped: {why}"


def node_died(name: str) -> str:
    return f"node {name} died (lease expired)"


def orphan_failed_tail() -> str:
    """What follows the reason on a job whose node departed with no attempts left."""
    return f" during attempt {ATTEMPT_MARK} of {MAX_ATTEMPTS_MARK}; no attempts left"


def quarantine_head() -> str:
    """What precedes the reason (the last node death) on a job failed because nodes kept dying
    under it; the mark stands for the deaths counted."""
    return (
        f"quarantined (node deaths while it ran: {DEATHS_MARK}, most likely caused by it; "
        "the last: "
    )


def quarantine_tail() -> str:
    """What follows the reason on a quarantined job; the marks as in `orphan_failed_tail`."""
    return (
        f" during attempt {ATTEMPT_MARK} of {MAX_ATTEMPTS_MARK}): not run again, so that it takes"
        " down no further node; fix the task, then submit it again"
    )


QUARANTINE_AT_LEAST_ONE = "--quarantine-after must be at least 1"


def orphan_requeued_tail() -> str:
    """What follows the reason on a job whose node departed and that went back to the queue."""
    return f" during attempt {ATTEMPT_MARK}; requeued"


def pause_event(paused: bool, why: str | None = None) -> str:
    said = "pause requested" if paused else "resume requested"
    return f"{said}: {why}" if why else said


def pause_rebalance(name: str, paused: bool) -> str:
    return f"node {name} {'pausing' if paused else 'resuming'}"


def state_rebalance(name: str, state: str) -> str:
    return f"node {name} {state}"


def declared_dead(names: list[str]) -> str:
    return f"declared dead: {', '.join(names)}"


REPAIR = "repair"


# -- what a job waits for ---------------------------------------------------------------------


def waiting_for_node(task: str) -> str:
    """What a queued job of `task` waits for while no live node registers the task (nodes claim
    only the tasks they register): `shoal job` prints it and the observer's job page shows it."""
    return f"a node that registers {task}: no live node does"


# -- cancelling ---------------------------------------------------------------------------------

CANCELLED_QUEUED = "cancelled before it started"
# A running job that ends cancelled records this, followed by how its attempt ended.
CANCELLED_RUNNING = "cancelled while running: "
CANCEL_FINISHED_ANYWAY = "the task finished after the request; its result was discarded"
CANCEL_NODE_STOPPED = "its node stopped before the task did"


def limits_changed(task: str, before: TaskLimit | None, after: TaskLimit | None, node: str) -> str:
    """The log line for a registration that changed a task's cluster-wide limits."""
    was, now = _limits(before), _limits(after)
    return f"node {node!r} changed the limits of task {task!r}: {was} -> {now}"


def _limits(limit: TaskLimit | None) -> str:
    if limit is None or (limit.max_running is None and limit.max_per_s is None):
        return "none"
    parts = []
    if limit.max_running is not None:
        parts.append(f"max_running={limit.max_running}")
    if limit.max_per_s is not None:
        parts.append(f"max_per_s={limit.max_per_s:g}")
    return ", ".join(parts)


def orphan_texts() -> dict[str, str]:
    """The texts REQUEUE_ORPHANS writes into the errors of a departed node's jobs, by parameter
    name (the same in both dialects)."""
    return {
        "quarantine_head": quarantine_head(),
        "quarantine_tail": quarantine_tail(),
        "failed_tail": orphan_failed_tail(),
        "requeued_tail": orphan_requeued_tail(),
        "deaths_mark": DEATHS_MARK,
        "attempt_mark": ATTEMPT_MARK,
        "max_mark": MAX_ATTEMPTS_MARK,
    }
