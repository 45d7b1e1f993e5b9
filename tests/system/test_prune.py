"""Retention with real nodes and the CLI: nodes prune old finished jobs while they drain other
work, leaving counters equal to a full count; `shoal prune` does a one-off run and says what it
deleted (or, with --dry-run, would delete)."""

from __future__ import annotations

from collections import Counter

import pytest
from click.testing import CliRunner

from shoal.cli import cli
from shoal.model import JobFilter, JobState, NewJob, Outcome
from shoal.store import Store, open_store

from realnodes import Cluster, until


def stored(store: Store) -> Counter[tuple[str, JobState]]:
    return Counter((j.task, j.state) for j in store.list_jobs(JobFilter(), limit=1_000_000))


def test_nodes_prune_while_draining_and_counters_stay_a_full_count(cluster: Cluster) -> None:
    store = open_store(cluster.url)
    try:
        cluster.start("a")
        cluster.start("b")
        until(lambda: len([n for n in store.read_cluster().nodes if n.section]) == 2)
        store.submit_jobs([NewJob("ephemeral", f"[{i}]", "{}") for i in range(2500)])
        work = store.submit_jobs([NewJob("work", f"[{i}, 0.02]", "{}") for i in range(1500)])

        def pruning_seen() -> float | None:
            """Datastore time once some ephemeral jobs are gone while others' are pending."""
            counts = store.count_jobs_by_task()
            ephemeral = sum(n for (task, _), n in counts.items() if task == "ephemeral")
            pending = sum(n for (_, s), n in counts.items() if not s.is_final)
            return store.now() if pending and ephemeral < 2500 else None

        seen_at = until(pruning_seen, timeout_s=60, what="pruning while work is pending")
        until(lambda: not stored(store).get(("ephemeral", JobState.SUCCEEDED)), 60, "all pruned")
        until(lambda: stored(store) == {("work", JobState.SUCCEEDED): 1500}, 60, "work drained")
        assert store.count_jobs_by_task() == {("work", JobState.SUCCEEDED): 1500}
        assert store.read_cluster().job_counts[JobState.SUCCEEDED] == 1500
        last_work = max(store.read_job(i).finished_at or 0.0 for i in work)  # type: ignore[union-attr]
        assert seen_at < last_work  # the pruning happened during the drain
    finally:
        store.close()


def finished_jobs(url: str, count: int) -> None:
    store = open_store(url)
    node = store.register_node("finisher", "host", 1, 4, ["t"], 30.0)
    store.set_node_state(node.id, node.state, node.state.WAITING)
    store.submit_jobs([NewJob("t", "[]", "{}")] * count)
    claimed = store.claim_jobs(node.id, count)
    store.finish_jobs(node.id, [Outcome(j.id, j.attempts, True, "1") for j in claimed])
    store.close()


def test_shoal_prune_reports_and_deletes_finished_jobs(sqlite_url: str) -> None:
    finished_jobs(sqlite_url, 3)
    runner = CliRunner()
    fresh = runner.invoke(cli, ["prune", "--db", sqlite_url])
    assert fresh.exit_code == 0, fresh.output
    assert fresh.output.startswith("deleted 0 finished jobs")  # a week has not passed
    dry = runner.invoke(cli, ["prune", "--db", sqlite_url, "--older-than", "0s", "--dry-run"])
    assert dry.exit_code == 0, dry.output
    assert dry.output.splitlines()[0].startswith("would delete 3 finished jobs")
    assert "succeeded" in dry.output.splitlines()[1] and dry.output.splitlines()[1].endswith("t")
    assert open_store(sqlite_url).count_jobs_by_task() == {("t", JobState.SUCCEEDED): 3}
    done = runner.invoke(cli, ["prune", "--db", sqlite_url, "--older-than", "0s"])
    assert done.exit_code == 0, done.output
    assert done.output.startswith("deleted 3 finished jobs")
    assert open_store(sqlite_url).count_jobs_by_task() == {}


@pytest.mark.parametrize("age", ["soon", "-1d", "nan", "1w"])
def test_shoal_prune_refuses_an_age_it_cannot_read(sqlite_url: str, age: str) -> None:
    out = CliRunner().invoke(cli, ["prune", "--db", sqlite_url, "--older-than", age])
    assert out.exit_code == 2 and "is not an age such as 90s" in out.output


def test_the_overview_says_where_the_stored_history_begins(sqlite_url: str) -> None:
    from shoal.observer.views import read_overview

    store = open_store(sqlite_url)
    try:
        assert read_overview(store).history_from is None
        finished_jobs(sqlite_url, 1)  # a node registers: history begins
        assert store.record_sample(0.001)
        began = read_overview(store).history_from
        assert began is not None and began <= store.now()
        until(lambda: store.record_sample(0.001), what="a sample of a later bucket")
        _, second = store.read_samples(0)
        store.prune_history(second.at)  # the first sample goes; the node's last event stays
        assert read_overview(store).history_from == second.at > began
    finally:
        store.close()
