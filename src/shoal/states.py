"""The node state machine, as data.

`TRANSITIONS` lists every allowed (from, to) pair with the reason it happens; `check_transition`
is the one function that applies it. Adapters write a transition only as a conditional update
(`expected state -> new state`), so two writers can never both move a node from the same state.
"""

from __future__ import annotations

from shoal.errors import IllegalTransition
from shoal.model import NodeState

INIT, WAIT, WORK, PAUSE, DEAD = (
    NodeState.INITIALIZING,
    NodeState.WAITING,
    NodeState.WORKING,
    NodeState.PAUSED,
    NodeState.DEAD,
)

TRANSITIONS: dict[tuple[NodeState, NodeState], str] = {
    (INIT, WAIT): "registered and granted a section",
    (INIT, DEAD): "could not start",
    (WAIT, WORK): "claimed jobs",
    (WORK, WAIT): "all jobs done",
    (WAIT, PAUSE): "pause requested",
    (WORK, PAUSE): "pause requested; in-flight jobs drained",
    (PAUSE, WAIT): "resumed",
    (WAIT, DEAD): "stopped or lease expired",
    (WORK, DEAD): "stopped or lease expired",
    (PAUSE, DEAD): "stopped or lease expired",
}

# States whose nodes may own a section and claim jobs (unless a pause was requested).
SECTION_STATES = frozenset({WAIT, WORK})


def check_transition(old: NodeState, new: NodeState) -> str:
    """Return the reason for `old -> new`; raise IllegalTransition if the table forbids it."""
    try:
        return TRANSITIONS[(old, new)]
    except KeyError:
        raise IllegalTransition(f"a node cannot go from {old} to {new}") from None


def is_allowed(old: NodeState, new: NodeState) -> bool:
    return (old, new) in TRANSITIONS


def may_own_section(state: NodeState, pause_requested: bool) -> bool:
    return state in SECTION_STATES and not pause_requested
