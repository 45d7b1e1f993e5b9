"""A small cluster driven through the `Store` port, for observer tests and screenshots.

No processor node runs here: `FakeNode` makes the same port calls a node makes (register, move
to waiting, claim, progress, finish, pause, stop), so the observer sees real rows written by the
real adapter, with no threads and no waiting.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from shoal.model import Job, NewJob, NodeState, Outcome, ProgressUpdate
from shoal.store.port import Store

HOSTILE = '<script>window.__pwned = 1</script><img src=x onerror="window.__pwned = 2">'


def later(store: Store) -> float:
    """Return a datastore time strictly after every event written so far.

    Datastore timestamps have millisecond resolution, and these fakes write several events per
    millisecond; a test that asks "what was true at t" needs t between two of them. This polls
    the datastore clock (at most a millisecond), it does not sleep.
    """
    first = store.now()
    while (now := store.now()) <= first:
        pass
    return now


def submit(store: Store, task: str, *args: Any, count: int = 1, **kwargs: Any) -> list[int]:
    job = NewJob(task=task, args_json=json.dumps(list(args)), kwargs_json=json.dumps(kwargs))
    return store.submit_jobs([job] * count)


@dataclass
class FakeNode:
    store: Store
    name: str
    lease_s: float = 30.0
    concurrency: int = 4
    tasks: Sequence[str] = ("resize", "report", "send_email")
    id: int = 0
    held: dict[int, Job] = field(default_factory=dict)

    def start(self) -> FakeNode:
        record = self.store.register_node(
            self.name,
            "worker-host",
            4000 + len(self.name),
            self.concurrency,
            self.tasks,
            self.lease_s,
        )
        self.id = record.id
        assert self.store.set_node_state(self.id, NodeState.INITIALIZING, NodeState.WAITING)
        return self

    @property
    def state(self) -> NodeState:
        record = self.store.read_node(self.id)
        assert record is not None
        return record.state

    def beat(self) -> None:
        self.store.heartbeat(self.id, self.lease_s)

    def claim(self, limit: int | None = None) -> list[Job]:
        room = self.concurrency - len(self.held) if limit is None else limit
        jobs = self.store.claim_jobs(self.id, max(room, 0)) if room > 0 else []
        self.held.update({job.id: job for job in jobs})
        return jobs

    def progress(self, job_id: int, fraction: float, message: str | None = None) -> None:
        job = self.held[job_id]
        self.store.record_progress(
            self.id, [ProgressUpdate(job.id, job.attempts, fraction, message)]
        )

    def succeed(self, job_id: int, result: Any = None) -> None:
        job = self.held.pop(job_id)
        self.store.finish_jobs(
            self.id, [Outcome(job.id, job.attempts, True, result_json=json.dumps(result))]
        )
        self._maybe_idle()

    def fail(self, job_id: int, error: str, traceback: str | None = None) -> None:
        job = self.held.pop(job_id)
        self.store.finish_jobs(
            self.id, [Outcome(job.id, job.attempts, False, error=error, traceback=traceback)]
        )
        self._maybe_idle()

    def _maybe_idle(self) -> None:
        if not self.held and self.state is NodeState.WORKING:
            self.store.set_node_state(self.id, NodeState.WORKING, NodeState.WAITING)

    def pause(self) -> None:
        """Ask for a pause and, holding nothing, complete it as a node would after draining."""
        self.store.request_pause(str(self.id), True)
        if not self.held:
            self.store.set_node_state(self.id, self.state, NodeState.PAUSED)

    def resume(self) -> None:
        self.store.request_pause(str(self.id), False)
        self.store.set_node_state(self.id, NodeState.PAUSED, NodeState.WAITING)

    def stop(self) -> None:
        """Leave cleanly: release held jobs, then move to dead (which rebalances)."""
        self.store.release_jobs(self.id, list(self.held))
        self.held.clear()
        self.store.set_node_state(self.id, self.state, NodeState.DEAD, "stopped")
