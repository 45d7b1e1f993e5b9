"""The SQLite claim reads the queued jobs' index, never every job of a task: with a million
finished jobs of the claimed task in the file, a claim through the (task, id) index took most of
a second, and a lone job waited 350 ms to start. The planner's choice is checked as SQLite
states it (EXPLAIN QUERY PLAN), on a file with finished jobs in it."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from shoal.model import NewJob, NodeState, Outcome
from shoal.store.sqlite import SqliteStore
from shoal.store.sqlite import queries as q

PARAMS = {"node": 1, "now": 1e12, "limit": 10, "full": "[]", "task": "t", "owner": 1}


@pytest.mark.parametrize("analyzed", [False, True])
@pytest.mark.parametrize(
    ("name", "index"),
    [
        ("PICK", "jobs_queued_priority"),
        ("PICK_WITHIN_LIMITS", "jobs_queued_priority"),
        ("PICK_TASK", "jobs_queued_task"),
        ("STRANDED", "jobs_queued_task"),
    ],
)
def test_a_claim_reads_only_queued_jobs(
    tmp_path: Path, name: str, index: str, analyzed: bool
) -> None:
    path = str(tmp_path / "plans.db")
    store = SqliteStore(path)
    store.initialize(partitions=4)
    node = store.register_node("a", "host", 1, 4, ["t"], 30.0)
    assert store.set_node_state(node.id, NodeState.INITIALIZING, NodeState.WAITING)
    store.submit_jobs([NewJob("t", "[]", "{}") for _ in range(200)])
    jobs = store.claim_jobs(node.id, 200, start=200)
    store.finish_jobs(node.id, [Outcome(j.id, j.attempts, True, "null") for j in jobs])
    store.close()
    with sqlite3.connect(path) as conn:
        if analyzed:  # with statistics as without, the plan must not change
            conn.execute("ANALYZE")
        plan = [row[3] for row in conn.execute(f"EXPLAIN QUERY PLAN {getattr(q, name)}", PARAMS)]
    reads = [step for step in plan if step.startswith(("SCAN jobs", "SEARCH jobs"))]
    assert reads in (
        [f"SCAN jobs USING INDEX {index}"],
        [f"SEARCH jobs USING INDEX {index} (task=?)"],
    ), plan
