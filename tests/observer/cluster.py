"""A small cluster of real nodes, run in-process on the observer's store, for observer tests
and screenshots.

Each node is a real `Node` on a thread (thread pool) over the very store the observer reads.
Its tasks are steered (tests/node/steered.py): an attempt runs until the test tells it to report
progress, return or raise. So a test puts the cluster into the state it asserts on (a node
working with a job at progress 0.5, a paused node, a stopped node, a failed job with its
traceback) by asking the nodes, and waits with a deadline until the datastore shows it.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parents[1] / "node"))

from shoal.model import Job, NewJob, NodeState
from shoal.node import Node, NodeConfig
from shoal.store.port import Store

from steered import StallingStore, Steered, until

__all__ = ["HOSTILE", "Cluster", "StallingStore", "later", "submit"]

HOSTILE = '<script>window.__pwned = 1</script><img src=x onerror="window.__pwned = 2">'
TASKS = ("resize", "report", "send_email", HOSTILE, "[blink]resize")
# Heartbeats come quickly, so that a node sees a pause or a resume within a few turns; the
# lease is long, so that no node is declared dead because the machine is busy.
SETTINGS: dict[str, Any] = {"heartbeat_s": 0.05, "lease_s": 30.0, "progress_flush_s": 0.01}


def later(store: Store) -> float:
    """Return a datastore time strictly after every event written so far.

    Datastore timestamps have millisecond resolution, and a node writes several events per
    millisecond; a test that asks "what was true at t" needs t between two of them. This polls
    the datastore clock (at most a millisecond), it does not sleep.
    """
    first = store.now()
    while (now := store.now()) <= first:
        pass
    return now


def submit(
    store: Store, task: str, *args: Any, count: int = 1, delay_s: float = 0.0, **kwargs: Any
) -> list[int]:
    """Queue `count` jobs of one attempt each, so that a failure is final."""
    job = NewJob(
        task=task,
        args_json=json.dumps(list(args)),
        kwargs_json=json.dumps(kwargs),
        max_attempts=1,
        delay_s=delay_s,
    )
    return store.submit_jobs([job] * count)


class Cluster:
    """Real nodes on one store, and the means to steer the jobs they run."""

    def __init__(self, store: Store, tasks: Sequence[str] = TASKS) -> None:
        self.store = store
        self.steered = Steered(store)
        self.app = self.steered.app(tasks)
        self.nodes: list[Node] = []

    def start(self, name: str, store: Store | None = None, **settings: Any) -> Node:
        """Start a node (on its own `store` if given); wait until it has registered and recorded
        `waiting` (with queued work in its section, it may be working already)."""
        config = NodeConfig(name=name, **(SETTINGS | settings))
        node = Node(self.app, store or self.store, config).start()
        self.nodes.append(node)
        until(lambda: node.loop is not None, f"node {name} registered")
        return node

    def state(self, node: Node) -> NodeState | None:
        record = self.store.read_node(node.node_id) if node.node_id else None
        return record.state if record else None

    def running(self, node: Node, count: int) -> list[Job]:
        """Wait until exactly `count` jobs run under `node`, each started by a worker (a job
        claimed ahead but not started would be given back by a pause or a stop); return them,
        oldest first."""

        def claimed() -> list[Job] | None:
            attempts = sorted(self.store.running_attempts(node.node_id))
            if len(attempts) != count or not self.steered.have_started(attempts):
                return None
            return [job for job_id, _ in attempts if (job := self.store.read_job(job_id))]

        return until(claimed, f"{count} jobs running under {node.config.name}")

    def progress(self, job_id: int, fraction: float, message: str | None = None) -> None:
        """Have the job report progress; wait until the datastore holds it."""
        self.steered.report(job_id, fraction, message)

        def written() -> bool:
            job = self.store.read_job(job_id)
            return job is not None and (job.progress, job.progress_message) == (fraction, message)

        until(written, f"progress {fraction} of job {job_id}")

    def succeed(self, job_id: int, result: Any = None) -> None:
        self.steered.succeed(job_id, result)
        self._until_finished(job_id)

    def fail(self, job_id: int, error: BaseException) -> None:
        """Have the job raise `error`: its outcome records the error and the real traceback."""
        self.steered.fail(job_id, error)
        self._until_finished(job_id)

    def pause(self, node: Node) -> None:
        """Ask for a pause; wait until the node has drained and recorded `paused`."""
        self.store.request_pause(str(node.node_id), True)
        until(lambda: self.state(node) is NodeState.PAUSED, f"node {node.config.name} paused")

    def resume(self, node: Node) -> None:
        self.store.request_pause(str(node.node_id), False)
        until(lambda: self.state(node) is NodeState.WAITING, f"node {node.config.name} resumed")

    def stop(self, node: Node) -> None:
        """Stop the node cleanly and wait until it has left (released its jobs, gone dead)."""
        assert node.stop() == 0

    def close(self) -> None:
        """End every attempt and stop every node still running."""
        self.steered.release_all()
        for node in self.nodes:
            node.request_stop(grace_s=0.0)
            node.stop()

    def _until_finished(self, job_id: int) -> None:
        def finished() -> bool:
            job = self.store.read_job(job_id)
            return job is not None and job.finished_at is not None

        until(finished, f"job {job_id} finished")
