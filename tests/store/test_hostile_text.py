"""Conformance, hostile text: what a task reports as progress reaches every datastore as text it
can hold. The node makes each message storable (`loop.progress_update`, escaping as it does for
error texts) before writing, so one hostile message never fails the batch it travels in."""

from __future__ import annotations

from conformance import new_jobs, start_node

from shoal.model import ProgressUpdate
from shoal.node.loop import progress_update
from shoal.node.runner import ProgressEvent
from shoal.store import Store


def test_hostile_progress_messages_are_stored_escaped_beside_the_rest_of_their_batch(
    store: Store,
) -> None:
    node = start_node(store, "a")
    store.submit_jobs(new_jobs(3))
    jobs = store.claim_jobs(node.id, 3)
    messages = ["a\x00b", "x\ud800y", "fine"]
    updates = [
        progress_update(ProgressEvent(j.id, j.attempts, 0.5, m))
        for j, m in zip(jobs, messages, strict=True)
    ]
    assert store.record_progress(node.id, updates) == 3
    stored = [store.read_job(j.id).progress_message for j in jobs]  # type: ignore[union-attr]
    assert stored == ["a\\x00b", "x\\ud800y", "fine"]


def test_a_progress_message_is_capped(store: Store) -> None:
    node = start_node(store, "a")
    store.submit_jobs(new_jobs(1))
    [job] = store.claim_jobs(node.id, 1)
    update = progress_update(ProgressEvent(job.id, job.attempts, 0.1, "m" * 100_000))
    assert isinstance(update, ProgressUpdate) and store.record_progress(node.id, [update]) == 1
    assert len(store.read_job(job.id).progress_message or "") == 500  # type: ignore[union-attr]
