"""A processor node's life: register, take a section, claim and run jobs, leave or be declared dead.

One main thread owns every datastore call; workers only run tasks and report events. Each turn
of the loop writes finished outcomes (batched), flushes progress (throttled), heartbeats when
due, claims work for free slots, and sleeps until the next event or poll. A node that finds
itself declared dead stops writing, abandons its attempts (their writes would be rejected anyway)
and registers again as a new node.
"""

from __future__ import annotations

import logging
import os
import queue
import signal
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import FrameType
from typing import TypeVar

from shoal.app import App
from shoal.assignment import format_section
from shoal.errors import DatastoreUnavailable, NodeNameTaken
from shoal.model import Heartbeat, Job, NodeState, Outcome, ProgressUpdate
from shoal.node.config import NodeConfig
from shoal.node.executor import Executor, ThreadExecutor, Wake
from shoal.node.reconcile import RecentOutcomes, reconcile
from shoal.node.runner import Finished, ProgressEvent, Work, outcome_for
from shoal.node.services import Housekeeping
from shoal.store import Store

log = logging.getLogger("shoal.node")
T = TypeVar("T")


class DeclaredDead(Exception):
    """This node's record is dead: another node saw its lease expire."""


@dataclass
class _Held:
    job: Job
    backoff_s: float


class Node:
    def __init__(
        self,
        app: App,
        store: Store,
        config: NodeConfig,
        executor_factory: type[ThreadExecutor] | None = None,
        app_spec: str | None = None,
    ) -> None:
        self.app = app
        self.store = store
        self.config = config
        self.app_spec = app_spec
        self.stopping = False
        self.stop_now = False
        self.node_id = 0
        self.state = NodeState.INITIALIZING

    # -- the outer life ---------------------------------------------------------------------------

    def run(self) -> int:
        """Run until stopped by SIGTERM/SIGINT. Returns the process exit code."""
        self._install_signals()
        while True:
            try:
                self._register()
            except NodeNameTaken as exc:
                log.error("%s", exc)
                return 2
            try:
                self._serve()
                return 0
            except DeclaredDead:
                log.error(
                    "node %s (id %s) was declared dead by the cluster (its lease expired); "
                    "its jobs were requeued elsewhere. Registering again as a new node.",
                    self.config.name,
                    self.node_id,
                )
                if self.stopping:
                    return 0

    def _install_signals(self) -> None:
        def on_signal(signum: int, frame: FrameType | None) -> None:
            if self.stopping:
                log.warning("second stop signal: releasing in-flight jobs and leaving now")
                self.stop_now = True
            else:
                log.info(
                    "stop signal: no more claims; draining in-flight jobs (up to %.0fs)",
                    self.config.grace_s,
                )
            self.stopping = True

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)

    def _register(self) -> None:
        record = self._retrying(
            lambda: self.store.register_node(
                self.config.name,
                socket.gethostname(),
                os.getpid(),
                self.config.concurrency,
                sorted(self.app.tasks),
                self.config.lease_s,
            )
        )
        self.node_id, self.state = record.id, NodeState.INITIALIZING
        self.executor: Executor = self._make_executor()
        self._retrying(
            lambda: self.store.set_node_state(
                self.node_id, NodeState.INITIALIZING, NodeState.WAITING
            )
        )
        self.state = NodeState.WAITING
        node = self.store.read_node(self.node_id)
        section = self.section = node.section if node else ()
        log.info(
            "node %s (id %d) waiting; section of %d partitions: %s; tasks: %s",
            self.config.name,
            self.node_id,
            len(section),
            format_section(section),
            ", ".join(sorted(self.app.tasks)) or "none",
        )

    def _make_executor(self) -> Executor:
        if self.config.pool == "process":
            from shoal.node.procpool import ProcessExecutor

            if self.app_spec is None:
                raise DatastoreUnavailable("the process pool needs the app as 'module:attribute'")
            return ProcessExecutor(
                self.app_spec, self.config.concurrency, self.store.url_for_display
            )
        return ThreadExecutor(self.app, self.config.concurrency)

    # -- the main loop ---------------------------------------------------------------------------

    def _serve(self) -> None:
        cfg = self.config
        self.held: dict[int, _Held] = {}
        self.outcomes: list[Outcome] = []
        self.progress: dict[int, ProgressUpdate] = {}
        self.housekeeping = Housekeeping(self.store, self.node_id, cfg, self.section)
        self.draining = False
        self.avg_run_s: float | None = None
        self.idle_poll_s = cfg.notified_poll_s if self._start_waker() else cfg.poll_s
        self.recent = RecentOutcomes()
        self.interruptions_seen = self.store.interruptions
        last_flush = last_beat = idle_since = last_check = time.monotonic()
        drain_deadline: float | None = None
        while True:
            now = time.monotonic()
            self._take_events(block_s=0.0)
            self.outcomes.extend(self._finish(f) for f in self.executor.expire(now))
            self._write_outcomes()
            if now - last_flush >= cfg.progress_flush_s:
                self._write_progress()
                last_flush = now
            if now - last_beat >= cfg.heartbeat_s:
                last_beat = now
                try:
                    self._on_heartbeat(self.housekeeping.run_once())
                except DatastoreUnavailable as exc:
                    log.warning("heartbeat failed (%s); jobs keep running, retrying", exc)
                if (
                    self.store.interruptions != self.interruptions_seen
                    or now - last_check >= cfg.reconcile_s
                ) and self._reconcile():
                    last_check = now
            if self.stopping:
                if drain_deadline is None:
                    self._release_unstarted()
                drain_deadline = drain_deadline or now + cfg.grace_s
                if not self.held or self.stop_now or now > drain_deadline:
                    self._leave()
                    return
            elif not self.draining:
                self._claim()
            if self.held:
                idle_since = now
            elif (
                self.state is NodeState.WORKING
                and not self.draining
                and now - idle_since >= cfg.idle_grace_s
            ):
                self._move(NodeState.WORKING, NodeState.WAITING)
            if self.draining and not self.held and self.state is not NodeState.PAUSED:
                self._move(self.state, NodeState.PAUSED)
                log.info("node %s paused (in-flight jobs drained)", cfg.name)
            # Sleep until a worker reports, a wake-up arrives or the next poll is due.
            self._take_events(block_s=0.0 if self.outcomes else self.idle_poll_s)

    def _start_waker(self) -> bool:
        """Listen for datastore wake-ups in the background, if the store offers them.

        The listener only turns notifications into Wake events; the main thread still makes
        every claim, and keeps polling (less often) in case a notification is lost.
        """
        if not self.store.supports_wakeups:
            return False
        wait_for_work, node_id, executor = self.store.wait_for_work, self.node_id, self.executor

        def listen() -> None:
            while self.node_id == node_id and not self.stopping:
                if wait_for_work(node_id, 1.0):
                    executor.events.put(Wake())

        threading.Thread(target=listen, name="shoal-wakeups", daemon=True).start()
        return True

    def _take_events(self, block_s: float) -> None:
        events = self.executor.events
        try:
            event = events.get(timeout=block_s) if block_s > 0 else events.get_nowait()
        except queue.Empty:
            return
        while True:
            if isinstance(event, ProgressEvent):
                if event.job_id in self.held:
                    self.progress[event.job_id] = ProgressUpdate(
                        event.job_id, event.attempt, event.fraction, event.message
                    )
            elif isinstance(event, Finished) and event.job_id in self.held:
                self.outcomes.append(self._finish(event))
                run_s = event.duration_s
                self.avg_run_s = (
                    run_s if self.avg_run_s is None else 0.9 * self.avg_run_s + 0.1 * run_s
                )
            try:
                event = self.executor.events.get_nowait()
            except queue.Empty:
                return

    def _finish(self, finished: Finished) -> Outcome:
        held = self.held[finished.job_id]
        outcome = outcome_for(
            finished, held.job.max_attempts, held.backoff_s, self.config.max_backoff_s
        )
        if not outcome.succeeded:
            retry = outcome.retry_in_s
            what = f"retrying in {retry:.1f}s" if retry is not None else "failed"
            log.warning(
                "job %d (%s) attempt %d: %s; %s",
                finished.job_id,
                held.job.task,
                finished.attempt,
                finished.error,
                what,
            )
        return outcome

    def _write_outcomes(self) -> None:
        if not self.outcomes:
            return
        batch = self.outcomes
        try:
            applied = self.store.finish_jobs(self.node_id, batch)
        except DatastoreUnavailable as exc:
            log.warning("cannot record %d outcomes yet (%s); will retry", len(batch), exc)
            return
        self.outcomes = []
        self.recent.add([o for o, ok in zip(batch, applied, strict=True) if ok])
        for outcome, ok in zip(batch, applied, strict=True):
            self.held.pop(outcome.job_id, None)
            self.progress.pop(outcome.job_id, None)
            if not ok:
                log.warning(
                    "outcome of job %d attempt %d rejected: the job is no longer held by this "
                    "node (it was requeued after this node was presumed dead)",
                    outcome.job_id,
                    outcome.attempt,
                )

    def _reconcile(self) -> bool:
        """Set right what the datastore has running under this node and the node does not hold.

        Returns False if the datastore could not be asked (the check is tried again later).
        """
        seen = self.store.interruptions
        try:
            running = self.store.running_attempts(self.node_id)
        except DatastoreUnavailable as exc:
            log.warning("cannot check the jobs recorded as running here yet (%s)", exc)
            return False
        self.interruptions_seen = seen
        pending = {o.job_id for o in self.outcomes}  # not written yet: not lost either
        found = reconcile(running, self.held.keys() | pending, self.recent)
        if found.record_again:
            log.warning(
                "the datastore lost %d outcomes this node had recorded (a failover to a standby "
                "that had not received them?); recording them again: jobs %s",
                len(found.record_again),
                _some([o.job_id for o in found.record_again]),
            )
            self.outcomes.extend(found.record_again)
        if found.release:
            try:
                released = self.store.release_jobs(self.node_id, found.release)
            except DatastoreUnavailable as exc:
                log.warning("cannot release jobs this node does not hold yet (%s)", exc)
                return False
            log.warning(
                "released %d jobs recorded as running here that this node does not hold "
                "(a claim or an outcome lost by the datastore): jobs %s",
                released,
                _some(found.release),
            )
        return True

    def _write_progress(self) -> None:
        if not self.progress:
            return
        updates = list(self.progress.values())
        try:
            self.store.record_progress(self.node_id, updates)
            self.progress.clear()
        except DatastoreUnavailable as exc:
            log.warning("cannot record progress yet (%s)", exc)

    def _prefetch(self) -> int:
        """How many jobs to hold beyond the running ones: many for tiny jobs, none for slow ones."""
        if self.config.pool != "thread" or self.avg_run_s is None:
            return 0
        cfg = self.config
        room = cfg.concurrency * cfg.prefetch_budget_s / max(self.avg_run_s, 1e-5)
        return int(min(cfg.max_prefetch, room))

    def _claim(self) -> None:
        prefetch = self._prefetch()
        free = self.executor.free_slots(prefetch)
        if free <= 0:
            return
        if (
            free < (self.config.concurrency + prefetch) // 2
            and len(self.held) > self.config.concurrency
        ):
            return  # enough work is queued here; claim again in a bigger batch
        try:
            jobs = self.store.claim_jobs(self.node_id, free)
        except DatastoreUnavailable as exc:
            log.warning("cannot claim jobs (%s); retrying", exc)
            return
        if jobs and self.state is NodeState.WAITING:
            self.state = NodeState.WORKING
        for job in jobs:
            task = self.app.tasks.get(job.task)
            options = task.options if task else None
            self.held[job.id] = _Held(job, options.backoff_s if options else 0.0)
            self.executor.submit(Work.of(job, options.timeout_s if options else None))

    def _release_unstarted(self) -> None:
        """Give back jobs claimed ahead that no worker has started (pausing or stopping)."""
        waiting = self.executor.take_unstarted()
        if not waiting:
            return
        for job_id in waiting:
            self.held.pop(job_id, None)
        try:
            self.store.release_jobs(self.node_id, waiting)
        except DatastoreUnavailable as exc:
            log.warning("could not release %d unstarted jobs (%s)", len(waiting), exc)

    def _on_heartbeat(self, beat: Heartbeat | None) -> None:
        if beat is None:
            self.executor.shutdown()
            raise DeclaredDead()
        self.state = beat.state
        if beat.pause_requested and not self.draining and self.state is not NodeState.PAUSED:
            self.draining = True
            self._release_unstarted()
            log.info("pause requested: no more claims; draining %d in-flight jobs", len(self.held))
        elif not beat.pause_requested and (self.draining or self.state is NodeState.PAUSED):
            self.draining = False
            if self.state is NodeState.PAUSED:
                self._move(NodeState.PAUSED, NodeState.WAITING)
            log.info("node %s resumed", self.config.name)

    def _move(self, old: NodeState, new: NodeState) -> None:
        try:
            if self.store.set_node_state(self.node_id, old, new):
                self.state = new
        except DatastoreUnavailable as exc:
            log.warning("cannot record state %s yet (%s)", new.value, exc)

    def _leave(self) -> None:
        """Stop cleanly: record what finished, release the rest, go dead, hand the section over.

        If the datastore is down right now, leaving is best effort: whatever is not written
        here is recovered by the other nodes when this node's lease expires.
        """
        self._write_progress()
        self._write_outcomes()
        self.executor.shutdown()
        try:
            leftover = list(self.held)
            if leftover:
                released = self.store.release_jobs(self.node_id, leftover)
                log.warning("released %d unfinished jobs back to the queue", released)
            node = self.store.read_node(self.node_id)
            if node is not None and node.state is not NodeState.DEAD:
                self.store.set_node_state(self.node_id, node.state, NodeState.DEAD, "stopped")
        except DatastoreUnavailable as exc:
            log.error("could not leave cleanly (%s); the lease will expire instead", exc)
            return
        log.info(
            "node %s (id %d) left the cluster; its section was handed over",
            self.config.name,
            self.node_id,
        )

    def _retrying(self, call: Callable[[], T]) -> T:
        delay = 0.5
        while True:
            try:
                return call()
            except DatastoreUnavailable as exc:
                if self.stopping:
                    raise
                log.warning("datastore unavailable (%s); retrying in %.1fs", exc, delay)
                time.sleep(delay)
                delay = min(delay * 2, 10.0)


def _some(ids: list[int], shown: int = 10) -> str:
    """A few ids for a log line: "1, 2, 3" or "1, 2, ... (40 in all)"."""
    head = ", ".join(str(i) for i in ids[:shown])
    return head if len(ids) <= shown else f"{head}, ... ({len(ids)} in all)"
