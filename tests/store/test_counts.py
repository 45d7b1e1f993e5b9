"""Conformance, job counts: the counters follow every change of a job's state, on every adapter,
and a SQLite file from before the counters is migrated with them backfilled.
"""

from __future__ import annotations

import random
import sqlite3
from collections import Counter
from importlib import resources
from pathlib import Path

import pytest
from conformance import P, new_jobs, start_node, until

from shoal.errors import SchemaError
from shoal.model import (
    JobFilter,
    JobState,
    Outcome,
)
from shoal.store import Store, open_store
from shoal.store.sqlite import SCHEMA_VERSION

# -- job counts ------------------------------------------------------------------------------


def counted_directly(store: Store) -> Counter[tuple[str, JobState]]:
    """Jobs per (task, state), counted row by row: what the counters must always say."""
    return Counter((j.task, j.state) for j in store.list_jobs(JobFilter(), limit=1_000_000))


def assert_counts_match(store: Store, step: str) -> None:
    direct = counted_directly(store)
    assert store.count_jobs_by_task() == {k: n for k, n in direct.items() if n}, step
    by_state = {s: sum(n for (_, st), n in direct.items() if st is s) for s in JobState}
    assert store.read_cluster().job_counts == by_state, step


def test_counts_follow_every_state_change(store: Store) -> None:
    rng = random.Random(20240611)
    node = start_node(store, "a")
    held: dict[int, int] = {}  # job id -> attempt, for jobs node a holds
    for step in range(120):
        op = rng.choice(
            ["submit", "submit", "claim", "claim", "finish", "finish", "release"]
            + ["cancel"]
            + (["die"] if step % 30 == 29 else [])
        )
        if op == "submit":
            store.submit_jobs(
                new_jobs(rng.randint(1, 6), task=rng.choice("tu"), max_attempts=rng.randint(1, 3))
            )
        elif op == "claim":
            held.update((j.id, j.attempts) for j in store.claim_jobs(node.id, rng.randint(1, 5)))
        elif op == "finish" and held:
            picked = rng.sample(sorted(held), rng.randint(1, len(held)))
            outcomes = [_random_outcome(rng, job_id, held.pop(job_id)) for job_id in picked]
            assert all(store.finish_jobs(node.id, outcomes))
        elif op == "release" and held:
            picked = rng.sample(sorted(held), rng.randint(1, len(held)))
            assert store.release_jobs(node.id, picked) == len(picked)
            for job_id in picked:
                del held[job_id]
        elif op == "cancel":
            queued = store.list_jobs(JobFilter(state=JobState.QUEUED), limit=20)
            if queued:
                assert store.cancel_job(rng.choice(queued).id)
        elif op == "die":  # a second node claims, then its lease runs out
            doomed = start_node(store, f"d{step}", lease_s=0.3)
            assert store.claim_jobs(doomed.id, 10) is not None
            assert until(store.mark_dead_nodes) == [doomed.id]
        assert_counts_match(store, f"step {step}: {op}")
    assert store.record_sample(3600.0)
    [sample] = store.read_samples(0)
    direct = counted_directly(store)
    assert sample.queued == sum(n for (_, s), n in direct.items() if s is JobState.QUEUED)
    assert sample.running == sum(n for (_, s), n in direct.items() if s is JobState.RUNNING)


def _random_outcome(rng: random.Random, job_id: int, attempt: int) -> Outcome:
    kind = rng.choice(["success", "retry", "failure"])
    if kind == "success":
        return Outcome(job_id, attempt, True, "1")
    retry = 0.0 if kind == "retry" else None
    return Outcome(job_id, attempt, False, error="boom", traceback="tb", retry_in_s=retry)


def test_opening_a_v1_sqlite_file_migrates_it_and_backfills_the_counts(tmp_path: Path) -> None:
    path = tmp_path / "v1.db"
    script = (
        resources.files("shoal.store.sqlite").joinpath("migrations/0001_initial.sql").read_text()
    )
    with sqlite3.connect(path) as conn:  # a file as Shoal 1 left it
        conn.executescript(script)
        conn.execute("INSERT INTO shoal_meta (key, value) VALUES ('schema_version', '1')")
        conn.execute(
            "INSERT INTO cluster (id, partitions, next_job_id, created_at) VALUES (1, 128, 1201, 0)"
        )
        conn.executemany("INSERT INTO partitions (partition) VALUES (?)", [(p,) for p in range(P)])
        states = ["queued", "succeeded", "failed", "cancelled"]
        conn.executemany(
            "INSERT INTO jobs (id, partition, task, args, kwargs, state, max_attempts, run_after,"
            " created_at) VALUES (?, ?, ?, '[]', '{}', ?, 1, 0, 0)",
            [(i, i % P, "a" if i % 3 == 0 else "b", states[i % 4]) for i in range(1, 1201)],
        )
    url = f"sqlite:///{path}"
    with pytest.raises(SchemaError, match="shoal init"):
        open_store(url, create=False)  # only a store that may create migrates
    store = open_store(url)
    try:
        counts = store.count_jobs_by_task()
        assert counts[("a", JobState.QUEUED)] == 100 and counts[("b", JobState.FAILED)] == 200
        assert sum(counts.values()) == 1200
        node = start_node(store, "n", tasks=["a", "b"])
        assert len(store.claim_jobs(node.id, 10)) == 10
        assert_counts_match(store, "after a claim on the migrated file")
    finally:
        store.close()
    with sqlite3.connect(path) as conn:
        names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='index'")}
        version = conn.execute("SELECT value FROM shoal_meta WHERE key='schema_version'").fetchone()
    assert version == (str(SCHEMA_VERSION),) and SCHEMA_VERSION == 11
    assert {"jobs_final", "jobs_task_id"} <= names and not {"jobs_state", "jobs_task"} & names
    again = open_store(url)  # a second open finds nothing left to do
    try:
        assert_counts_match(again, "reopened")
    finally:
        again.close()
