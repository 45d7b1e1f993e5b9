"""Conformance: the partition count P grows on a running cluster and never shrinks."""

from __future__ import annotations

import pytest
from conformance import P, new_jobs, start_node

from shoal.errors import ConfigError
from shoal.model import EventKind, JobState
from shoal.store import Store


def test_p_grows_online_new_jobs_use_it_and_queued_jobs_keep_theirs(store: Store) -> None:
    a, b = start_node(store, "a"), start_node(store, "b")
    queued = store.submit_jobs(new_jobs(10))
    before = store.read_cluster()

    store.initialize(partitions=P * 2)

    view = store.read_cluster()
    assert view.partitions == P * 2 and view.epoch > before.epoch
    assert set(view.owners) == {a.id, b.id} and len(view.owners) == P * 2
    sections = [set(n.section) for n in view.nodes]
    assert set().union(*sections) == set(range(P * 2)) and sum(map(len, sections)) == P * 2
    for job_id in queued:  # queued jobs stay in the partition they were given
        job = store.read_job(job_id)
        assert job is not None and job.partition == job_id % P
    [fresh] = store.submit_jobs(new_jobs(1))
    job = store.read_job(fresh)
    assert job is not None and job.partition == fresh % (P * 2)
    claimed = store.claim_jobs(a.id, 100) + store.claim_jobs(b.id, 100)
    assert sorted(j.id for j in claimed) == sorted([*queued, fresh])
    assert all(j.state is JobState.RUNNING for j in claimed)
    history = store.read_history(before.now)
    assert any(
        e.kind is EventKind.REBALANCE and f"partitions grew from {P} to {P * 2}" in e.reason
        for e in history
    )


def test_p_never_shrinks_and_the_same_or_no_count_changes_nothing(store: Store) -> None:
    start_node(store, "a")
    epoch = store.read_cluster().epoch
    with pytest.raises(ConfigError, match=f"has {P} partitions and P can only grow"):
        store.initialize(partitions=P - 1)
    store.initialize(partitions=P)
    store.initialize()
    view = store.read_cluster()
    assert view.partitions == P and view.epoch == epoch


def test_p_grows_with_no_node_live(store: Store) -> None:
    store.initialize(partitions=P + 3)
    view = store.read_cluster()
    assert view.partitions == P + 3 and view.owners == (None,) * (P + 3)
