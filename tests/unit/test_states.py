"""Table tests for the node state machine: every (state, state) pair."""

from __future__ import annotations

import itertools

import pytest

from shoal.errors import IllegalTransition
from shoal.model import NodeState
from shoal.states import TRANSITIONS, check_transition, may_own_section

S = NodeState
ALLOWED = {
    (S.INITIALIZING, S.WAITING),
    (S.INITIALIZING, S.DEAD),
    (S.WAITING, S.WORKING),
    (S.WORKING, S.WAITING),
    (S.WAITING, S.PAUSED),
    (S.WORKING, S.PAUSED),
    (S.PAUSED, S.WAITING),
    (S.WAITING, S.DEAD),
    (S.WORKING, S.DEAD),
    (S.PAUSED, S.DEAD),
}


@pytest.mark.parametrize(("old", "new"), list(itertools.product(S, S)))
def test_transition_table(old: NodeState, new: NodeState) -> None:
    if (old, new) in ALLOWED:
        assert check_transition(old, new) == TRANSITIONS[(old, new)]
    else:
        with pytest.raises(IllegalTransition):
            check_transition(old, new)


def test_dead_is_terminal() -> None:
    assert not [new for (old, new) in TRANSITIONS if old is S.DEAD]


@pytest.mark.parametrize("state", list(S))
def test_only_waiting_and_working_nodes_without_pause_own_sections(state: NodeState) -> None:
    assert may_own_section(state, False) == (state in (S.WAITING, S.WORKING))
    assert not may_own_section(state, True)
