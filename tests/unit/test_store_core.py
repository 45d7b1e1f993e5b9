"""The pure core under the storage port: rules, texts and the migration loader, without I/O."""

from __future__ import annotations

import dataclasses
from collections import Counter
from pathlib import Path

import pytest

from shoal import assignment, states
from shoal.errors import ConfigError, NotFound
from shoal.load import Move, MoveKind
from shoal.model import EventKind, HistoryEvent, JobFilter, JobState, NodeRecord, NodeState
from shoal.store import postgres, rules, sqlite, texts
from shoal.store.migrations import load_migrations


def node(node_id: int, state: NodeState = NodeState.WAITING) -> NodeRecord:
    return NodeRecord(
        id=node_id,
        name=f"n{node_id}",
        state=state,
        section=(99,),
        host="h",
        pid=1,
        concurrency=4,
        tasks=("t",),
        started_at=0.0,
        heartbeat_at=0.0,
        lease_expires_at=30.0,
        state_changed_at=0.0,
        pause_requested=False,
        processed=0,
        failed=0,
        running=3,
    )


def rebalance_event(owners: tuple[int | None, ...]) -> HistoryEvent:
    return HistoryEvent(1, 0.0, EventKind.REBALANCE, None, None, None, None, 1, owners, "")


# -- rebalance plan -------------------------------------------------------------------------


def test_no_plan_when_the_assignment_already_matches_the_eligible_nodes() -> None:
    owners = assignment.rebalance((None,) * 8, [1, 2], 8)
    assert rules.plan_rebalance(owners, owners, {2: 4, 1: 4}, 8, "repair") is None


def test_plan_names_changed_partitions_new_sections_and_how_many_moved() -> None:
    before = assignment.rebalance((None,) * 8, [1, 2], 8)
    plan = rules.plan_rebalance(before, before, {1: 4, 2: 4, 3: 4}, 8, "node n3 waiting")
    assert plan is not None
    assert plan.owners == assignment.rebalance(before, [1, 2, 3], 8)
    assert plan.changed == tuple(p for p in range(8) if plan.owners[p] != before[p])
    assert [n for n, _ in plan.sections] == [1, 2, 3]  # every section changed, by node id
    assert dict(plan.sections) == assignment.sections(plan.owners)
    moved = assignment.moved(before, plan.owners)
    assert moved == len(plan.changed) and plan.reason == f"node n3 waiting; moved {moved} of 8"


def test_plan_gives_a_departed_node_an_empty_section() -> None:
    before = assignment.rebalance((None,) * 4, [1, 2], 4)
    plan = rules.plan_rebalance(before, before, {1: 4}, 4, "declared dead: n2")
    assert plan is not None and plan.owners == (1,) * 4
    assert dict(plan.sections)[2] == ()


def test_a_lent_partition_stays_lent_through_a_membership_change() -> None:
    homes = (1, 2, 1, 2)
    owners = (1, 2, 2, 2)  # partition 2 is lent by node 1 to node 2
    plan = rules.plan_rebalance(owners, homes, {1: 4, 2: 4, 3: 4}, 4, "node n3 waiting")
    assert plan is not None and plan.homes.count(3) == 1
    assert plan.owners[2] == 2  # still lent: the load rule gives it back when it can
    lent = [p for p in range(4) if plan.owners[p] != plan.homes[p]]
    assert lent == [2]
    gone = rules.plan_rebalance(owners, homes, {1: 4}, 4, "declared dead: n2")
    assert gone is not None and gone.owners == gone.homes == (1, 1, 1, 1)


def test_load_moves_apply_only_while_source_owns_and_target_is_eligible() -> None:
    homes = owners = (1, 1, 2, 2)
    moves = [
        Move(0, 1, 2, MoveKind.LEND),
        Move(1, 3, 2, MoveKind.LEND),  # its source no longer owns it
        Move(2, 2, 9, MoveKind.LEND),  # its target may not own a section
    ]
    plan = rules.plan_load_moves(owners, homes, {1, 2}, moves, recent_moves=4)
    assert plan is not None and plan.owners == (2, 1, 2, 2) and plan.homes == homes
    assert plan.changed == (0,)
    assert plan.reason == "load: lent 1 from node 1 to node 2; 5 in the last minute; moved 1 of 4"
    assert rules.plan_load_moves(owners, homes, {1, 2}, moves[1:], 0) is None


def test_plan_shares_follow_each_nodes_slots() -> None:
    plan = rules.plan_rebalance((None,) * 9, (None,) * 9, {1: 1, 2: 8}, 9, "nodes joined")
    assert plan is not None
    assert plan.owners.count(1) == 1 and plan.owners.count(2) == 8


# -- the past -------------------------------------------------------------------------------


def test_states_at_a_moment_take_the_then_section_and_drop_the_long_dead() -> None:
    at = 10_000.0
    past = [
        rules.PastState(node(1), NodeState.WORKING, 9_000.0),
        rules.PastState(node(2), None, None),  # registered, but history has nothing by then
        rules.PastState(node(3, NodeState.DEAD), NodeState.DEAD, at - rules.DEAD_WINDOW_S - 1),
        rules.PastState(node(4), NodeState.DEAD, at - rules.DEAD_WINDOW_S + 1),
    ]
    out = rules.node_states_at(at, past, rebalance_event((1, 1, 4, None)))
    assert [n.id for n in out] == [1, 4]
    assert out[0] == dataclasses.replace(
        node(1), state=NodeState.WORKING, section=(0, 1), state_changed_at=9_000.0, running=0
    )
    assert out[1].state is NodeState.DEAD and out[1].section == (2,)
    assert rules.node_states_at(at, past[:1], None)[0].section == ()


# -- job lists ------------------------------------------------------------------------------


@pytest.mark.parametrize("mark", ["?", "%s"])
def test_job_filter_terms_in_either_placeholder_style(mark: str) -> None:
    where = JobFilter(state=JobState.FAILED, task="t", node_id=7, min_id=3, max_id=9)
    clauses, params = rules.job_filter(where, mark)
    assert clauses == [
        "state = 'failed'",
        f"task = {mark}",
        f"claimer = {mark}",
        f"id >= {mark}",
        f"id <= {mark}",
    ]
    assert params == ["t", 7, 3, 9]
    assert rules.job_filter(JobFilter(), mark) == ([], [])


def test_list_query_adds_the_queued_hint_only_for_queued_jobs() -> None:
    sql, params = rules.list_jobs_query(JobFilter(state=JobState.QUEUED), 5, 100, "%s", ["p >= 0"])
    assert sql == (
        f"SELECT {rules.JOB_COLUMNS} FROM jobs WHERE state = 'queued' AND p >= 0 AND id < %s"
        " ORDER BY id DESC LIMIT %s"
    )
    assert params == [100, 5]
    sql, params = rules.list_jobs_query(JobFilter(state=JobState.RUNNING), 5, None, "?", ["x"])
    assert "x" not in sql.split("FROM")[1] and params == [5]
    assert (
        postgres.list_jobs_query(JobFilter(state=JobState.QUEUED), 5, None)[0].count(
            "partition >= 0"
        )
        == 1
    )


def test_section_states_fragment_names_exactly_the_states_that_may_own_a_section() -> None:
    named = {s for s in NodeState if f"'{s.value}'" in rules.SECTION_STATES_SQL}
    assert named == set(states.SECTION_STATES)
    assert f"{rules.SECTION_STATES_SQL} AND NOT pause_requested" == rules.ELIGIBLE_SQL
    assert {s for s in NodeState if states.may_own_section(s, False)} == named
    assert not any(states.may_own_section(s, True) for s in NodeState)


# -- counters and pausing ----------------------------------------------------------------------


def test_counter_deltas_move_each_job_out_of_its_old_state() -> None:
    deltas = rules.count_moves(
        JobState.RUNNING, [("a", "succeeded"), ("a", "queued"), ("b", "failed")]
    )
    assert deltas == Counter(
        {
            ("a", "succeeded"): 1,
            ("a", "queued"): 1,
            ("a", "running"): -2,
            ("b", "failed"): 1,
            ("b", "running"): -1,
        }
    )
    assert sum(deltas.values()) == 0
    assert rules.count_submits(["a", "a", "b"]) == Counter({("a", "queued"): 2, ("b", "queued"): 1})


def test_pause_target_is_the_live_node_found_or_a_not_found_that_says_why() -> None:
    assert rules.node_key("42") == 42 and rules.node_key("n42") == "n42"
    assert rules.pause_target("a", (3, "a", "waiting")) == (3, "a")
    with pytest.raises(NotFound, match="no node with id or name 'x'"):
        rules.pause_target("x", None)
    with pytest.raises(NotFound, match=r"node a \(id 3\) is dead"):
        rules.pause_target("3", (3, "a", "dead"))


def test_orphan_tails_carry_the_marks_sql_fills_in() -> None:
    for tail in (texts.orphan_failed_tail(), texts.orphan_requeued_tail()):
        assert texts.ATTEMPT_MARK in tail
    assert texts.MAX_ATTEMPTS_MARK in texts.orphan_failed_tail()
    filled = texts.orphan_failed_tail().replace(texts.ATTEMPT_MARK, "2")
    assert (
        filled.replace(texts.MAX_ATTEMPTS_MARK, "3") == " during attempt 2 of 3; no attempts left"
    )


# -- migrations -----------------------------------------------------------------------------


def test_each_dialect_owns_its_schema_version_from_its_numbered_files() -> None:
    for package, version in (
        ("shoal.store.postgres", postgres.SCHEMA_VERSION),
        ("shoal.store.sqlite", sqlite.SCHEMA_VERSION),
    ):
        migrations = load_migrations(package)
        assert [m.version for m in migrations] == list(range(1, version + 1))
        assert migrations[0].name == "0001_initial.sql"
        assert all(m.name.startswith(f"{m.version:04d}_") for m in migrations)
    # The dialects number apart: PostgreSQL took two index changes SQLite never needed.
    assert postgres.SCHEMA_VERSION > sqlite.SCHEMA_VERSION >= 6


def make_package(root: Path, name: str, files: list[str]) -> None:
    folder = root / name / "migrations"
    folder.mkdir(parents=True)
    (root / name / "__init__.py").write_text("")
    for file in files:
        (folder / file).write_text(f"-- {file}\n")


def test_loader_orders_by_number_and_refuses_gaps_and_repeats(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.syspath_prepend(str(tmp_path))
    make_package(tmp_path, "m_ok", ["0002_b.sql", "0001_a.sql", "README.md", "1_bad.sql"])
    make_package(tmp_path, "m_gap", ["0001_a.sql", "0003_c.sql"])
    make_package(tmp_path, "m_twice", ["0001_a.sql", "0001_b.sql"])
    found = load_migrations("m_ok")
    assert [(m.version, m.name, m.sql) for m in found] == [
        (1, "0001_a.sql", "-- 0001_a.sql\n"),
        (2, "0002_b.sql", "-- 0002_b.sql\n"),
    ]
    for broken in ("m_gap", "m_twice"):
        with pytest.raises(ValueError, match=r"not numbered 1\.\.n"):
            load_migrations(broken)


# -- rolling deploys ------------------------------------------------------------------------------


def test_stranded_tasks_are_the_ones_this_node_has_and_another_owner_lacks() -> None:
    owners = {1: ["t"], 2: ["t", "new"], 3: ["t", "u"]}
    assert rules.stranded_tasks(2, ["t", "new"], owners) == [(1, "new"), (3, "new")]
    assert rules.stranded_tasks(3, ["t", "u"], owners) == [(1, "u"), (2, "u")]
    assert rules.stranded_tasks(1, ["t"], owners) == []
    assert rules.stranded_tasks(2, ["t", "new"], {2: ["t", "new"]}) == []  # itself: never


def test_quarantine_after_must_be_at_least_one() -> None:
    rules.check_quarantine_after(None)
    rules.check_quarantine_after(1)
    with pytest.raises(ConfigError, match="--quarantine-after must be at least 1"):
        rules.check_quarantine_after(0)
