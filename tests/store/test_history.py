"""Conformance, history and views: the past as it was, samples, counts by task, finished jobs."""

from __future__ import annotations

from conformance import P, new_jobs, start_node, until

from shoal.model import (
    JobState,
    NodeState,
    Outcome,
)
from shoal.store import Store

# -- history and views -----------------------------------------------------------------------


def test_past_moment_shows_states_and_sections_as_they_were(store: Store) -> None:
    a = start_node(store, "a")
    before = store.now()
    until(lambda: store.now() > before)
    b = start_node(store, "b")
    then = {n.id: n for n in store.read_node_states_at(before)}
    assert set(then) == {a.id}
    assert then[a.id].state is NodeState.WAITING and len(then[a.id].section) == P
    now = {n.id: n for n in store.read_node_states_at(store.now())}
    assert len(now[a.id].section) == len(now[b.id].section) == P // 2


def test_sample_is_written_once_per_interval(store: Store) -> None:
    store.submit_jobs(new_jobs(5))
    assert store.record_sample(3600.0)
    assert not store.record_sample(3600.0)
    [sample] = store.read_samples(0)
    assert sample.queued == 5 and sample.interval_s == 3600.0


def test_counts_by_task_and_finished_list(store: Store) -> None:
    node = start_node(store, "a")
    store.submit_jobs(new_jobs(2, task="t") + new_jobs(1, task="u"))
    since = store.now()
    for job in store.claim_jobs(node.id, 1):
        store.finish_jobs(node.id, [Outcome(job.id, 1, True, "null")])
    counts = store.count_jobs_by_task()
    assert counts[("t", JobState.SUCCEEDED)] == 1 and counts[("u", JobState.QUEUED)] == 1
    assert [j.task for j in store.list_finished(since - 1)] == ["t"]
