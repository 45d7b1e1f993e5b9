"""A processor node's life: register, take a section, claim and run jobs, leave or be declared dead.

The loop is a step function: `Node.step(now)` does one turn (write finished outcomes in batches,
flush progress, heartbeat when due, pass cancel requests on to the attempts, claim for free
slots, move between states, drain and leave when stopping) and says how long to wait for worker
events before the next. One thread runs
the steps and makes every datastore call; workers only run tasks and report events. `run`
steps on the calling thread, `start`/`stop` on a background one; neither touches signals, which
belong to whoever owns the process (the CLI). A node that finds itself declared dead stops
writing, abandons its attempts (their writes would be rejected anyway) and registers again as a
new node.

Leaving is bounded: once a stop is requested, every datastore call the node makes runs under a
deadline (the grace period plus LEAVE_MARGIN_S; LEAVE_NOW_S after a second request), so a
datastore that is down cannot hold the node past it. What could not be written then is
recovered by the other nodes when this node's lease expires.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import queue
import socket
import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import TYPE_CHECKING, TypeVar

from shoal.app import App
from shoal.assignment import format_section
from shoal.errors import (
    AppNotLoadable,
    ConfigError,
    DatastoreUnavailable,
    NodeNameTaken,
    NotFound,
)
from shoal.model import Heartbeat, NodeState
from shoal.node.config import NodeConfig
from shoal.node.eventqueue import EventQueue
from shoal.node.executor import Executor, ThreadExecutor, Wake
from shoal.node.loop import NodeLoop
from shoal.node.retention import Pruner
from shoal.node.schedules import Scheduler
from shoal.node.services import Housekeeping
from shoal.store import Store, redact_url
from shoal.store.deadline import Deadline, retrying_until

if TYPE_CHECKING:
    from shoal.node.hosted import HostedExecutor

log = logging.getLogger("shoal.node")
T = TypeVar("T")
LEAVE_MARGIN_S = 2.0  # past the grace period, the time left for the writes of leaving
LEAVE_NOW_S = 0.5  # after a second stop request, the time left for them
# How long a node waits for its first worker process to load the app before it registers.
START_WAIT_S = 60.0


class Node:
    """One processor node. Not started by creating it: call `run`, `start`, or `step` yourself.

    `exit_code` is None while the node lives; 0 once it has left, 2 if its name was taken, 1
    if its first worker process could not load the app (it never registers then) or an error
    escaped the loop on its thread (the thread reports it).

    `db_url` is the URL of `store`, which worker processes open for the tasks that use the
    app's datastore (a task that submits jobs submits them where the node runs, in every pool).
    Without it they open the app's own URL if it names the same datastore as `store`, else
    `store.url_for_display` (exact, unless it hides a password).
    """

    def __init__(
        self,
        app: App,
        store: Store,
        config: NodeConfig,
        executor_factory: type[ThreadExecutor] | None = None,
        app_spec: str | None = None,
        db_url: str | None = None,
    ) -> None:
        self.app = app
        self.store = store
        self.config = config
        self.app_spec = app_spec
        self.db_url = db_url
        self.node_id = 0
        self.state = NodeState.INITIALIZING
        self.section: tuple[int, ...] = ()
        self.loop: NodeLoop | None = None  # None until registered, and after a declared death
        self.exit_code: int | None = None
        self.stop_requested = False
        self._self_paused = False  # paused by itself: its workers cannot run tasks (see below)
        self.leave_now = False
        self._grace_s = config.grace_s
        self._deadline = Deadline()  # for the datastore calls: set by a stop request
        # Cuts short the waits between registration retries. An EventQueue, because its put is
        # safe in a signal handler (an Event's set could deadlock on its own lock there) and a
        # signal cannot make its timed get endless.
        self._stop_signals: EventQueue[bool] = EventQueue()
        self._thread: threading.Thread | None = None
        self._warned_inline = False
        self._worker_loaded = False  # a worker process of this node has loaded the app

    # -- running it -------------------------------------------------------------------------------

    def run(self) -> int:
        """Step on this thread until the node has left; returns the process exit code."""
        while self.exit_code is None:
            self.wait(self.step(time.monotonic()))
        return self.exit_code

    def start(self) -> Node:
        """Run the node on a background thread and return at once."""
        if self._thread is not None:
            raise ConfigError(f"node {self.config.name} was already started")
        self._thread = threading.Thread(
            target=self._run_on_thread, name=f"shoal-node-{self.config.name}", daemon=True
        )
        self._thread.start()
        return self

    def stop(self, grace_s: float | None = None, wait: bool = True) -> int | None:
        """Ask the node to leave, as a first `request_stop` does, unless it is already stopping;
        with `wait`, block until its thread has left and return the exit code.

        Stopping a node that is already stopping only waits: to leave at once, call
        `request_stop` again or pass `grace_s=0` to the first stop.
        """
        if not self.stop_requested:
            self.request_stop(grace_s)
        if wait and self._thread is not None:
            self._thread.join()
        return self.exit_code

    def request_stop(self, grace_s: float | None = None) -> None:
        """Ask the node to leave: no more claims, in-flight jobs get up to `grace_s` (the config's
        grace by default) to finish, then the rest are released and the node goes dead.

        A second request leaves at once, releasing in-flight jobs to the queue. Safe to call from
        any thread or a signal handler; returns without waiting.
        """
        if self.stop_requested:
            self.leave_now = True
            # A retry under way gives up soon, though a lock held for a moment is waited out.
            self._deadline.bring_forward(time.monotonic() + LEAVE_NOW_S)
        else:
            self._grace_s = self.config.grace_s if grace_s is None else grace_s
            self._deadline.bring_forward(time.monotonic() + self._grace_s + LEAVE_MARGIN_S)
            self.stop_requested = True
        self._stop_signals.put(True)
        loop = self.loop
        if loop is not None:
            loop.executor.events.put(Wake())  # end the current wait now, not at the next poll

    def __enter__(self) -> Node:
        return self.start()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.stop()

    def _run_on_thread(self) -> None:
        try:
            self.run()
        finally:
            if self.exit_code is None:  # an error escaped run(); the thread reports it
                self.exit_code = 1

    # -- one turn ---------------------------------------------------------------------------------

    def step(self, now: float) -> float:
        """Do one turn at monotonic time `now`; return how long to wait for events before the next.

        Registers first when the node is not registered (blocking while the datastore is down).
        Once the node has left (`exit_code` is set) a step does nothing. `now` is read from
        `time.monotonic()` by `run`; a test may pass its own to bring heartbeats, reconciling or
        a drain's end forward, but attempts' time limits always count on the real clock.
        """
        if self.exit_code is not None:
            return 0.0
        with retrying_until(self._deadline):
            loop = self.loop
            if loop is None:
                if self.stop_requested:
                    self.exit_code = 0
                else:
                    self._begin(now)
                return 0.0
            return self._turn(loop, now)

    def _turn(self, loop: NodeLoop, now: float) -> float:
        cfg = self.config
        loop.take_events(block_s=0.0)
        loop.check_cancels(now)
        loop.outcomes.extend(loop.finish(f) for f in loop.executor.expire(now))
        if not (self.stop_requested or loop.draining):
            loop.start_ahead()  # first: free workers wait on it, not on the outcomes' commit
        loop.record_starts()
        loop.write_outcomes()
        if now - loop.last_flush >= cfg.progress_flush_s:
            loop.write_progress()
            loop.last_flush = now
        if now - loop.last_beat >= cfg.heartbeat_s:
            loop.last_beat = now
            if not self._heartbeat(loop):
                return 0.0  # declared dead: the next step registers again
            if (
                self.store.interruptions != loop.interruptions_seen
                or now - loop.last_check >= cfg.reconcile_s
            ) and loop.reconcile():
                loop.last_check = now
        if self.stop_requested:
            if self._drain_to_leave(loop, now):
                return 0.0
        elif not loop.draining:
            loop.return_stale()
            self.state = loop.claim(self.state)
            if loop.follow_load(now):
                self.state = loop.claim(self.state)
            self.state = loop.claim_stranded(now, self.state)
        self._settle(loop, now)
        # An idle node wakes for its heartbeat on a turn of its own. Were the heartbeat due when
        # a wake-up for a job arrived, the job would wait for the whole round (the heartbeat and
        # the housekeeping after it, several statements) before its claim.
        return min(loop.wait_s(), max(0.0, loop.last_beat + cfg.heartbeat_s - now))

    def wait(self, timeout_s: float) -> None:
        """Wait until a worker reports, a wake-up arrives or `timeout_s` passes; take the events."""
        if self.loop is not None:
            self.loop.take_events(block_s=timeout_s)

    def _settle(self, loop: NodeLoop, now: float) -> None:
        """Record idleness (after a grace, so a busy node does not flap) and a finished drain."""
        if loop.held:
            loop.idle_since = now
        elif (
            self.state is NodeState.WORKING
            and not loop.draining
            and now - loop.idle_since >= self.config.idle_grace_s
        ):
            self._move(NodeState.WORKING, NodeState.WAITING)
        if loop.draining and not loop.held and self.state is not NodeState.PAUSED:
            self._move(self.state, NodeState.PAUSED)
            log.info("node %s paused (in-flight jobs drained)", self.config.name)

    def _drain_to_leave(self, loop: NodeLoop, now: float) -> bool:
        """Stopping: release what no worker started, wait out the grace, leave. True once left."""
        if loop.drain_deadline is None:
            loop.release_unstarted()
            loop.drain_deadline = now + self._grace_s
        if loop.held and not self.leave_now and now <= loop.drain_deadline:
            return False
        self._leave(loop)
        self.exit_code = 0
        return True

    # -- membership -------------------------------------------------------------------------------

    def _begin(self, now: float) -> None:
        """Register (again, after a declared death) and start a fresh loop."""
        try:
            executor = self._register()
        except NodeNameTaken as exc:
            log.error("%s", exc)
            self.exit_code = 2
            return
        except AppNotLoadable as exc:
            log.error("node %s cannot start: %s", self.config.name, exc)
            self.exit_code = 1
            return
        except DatastoreUnavailable as exc:
            if not self.stop_requested:
                raise
            log.error("stopped before registering: %s", exc)  # a stop cuts the retries short
            self.exit_code = 0
            return
        notified = self.store.supports_wakeups
        loop = NodeLoop(
            app=self.app,
            store=self.store,
            config=self.config,
            node_id=self.node_id,
            executor=executor,
            housekeeping=Housekeeping(
                self.store,
                self.node_id,
                self.config,
                self.section,
                Pruner.for_app(self.store, self.app, self.node_id),
                Scheduler(self.store, self.app),
            ),
            idle_poll_s=self._idle_poll_s(notified),
            interruptions_seen=self.store.interruptions,
            last_flush=now,
            last_beat=now,
            last_check=now,
            idle_since=now,
        )
        if notified:
            self._start_waker(executor)
        self.loop = loop

    def _idle_poll_s(self, notified: bool) -> float:
        """How long an idle turn waits for events: shorter while a task has a rate limit."""
        poll_s = self.config.notified_poll_s if notified else self.config.poll_s
        if any(limit.max_per_s is not None for limit in self.app.task_limits()):
            poll_s = min(poll_s, self.config.rate_poll_s)
        return poll_s

    def _register(self) -> Executor:
        """Make the workers, register, move to waiting; returns the workers. A node whose
        first worker process cannot load the app never registers (AppNotLoadable)."""
        pool = self._pool()
        executor = self._make_executor(pool)
        try:
            began, record = self._retrying(
                lambda: (
                    time.monotonic(),
                    self.store.register_node(
                        self.config.name,
                        socket.gethostname(),
                        os.getpid(),
                        self.config.concurrency,
                        sorted(self.app.tasks),
                        self.config.lease_s,
                        self.app.task_limits(),
                        isolated=pool != "inline",
                    ),
                )
            )
        except BaseException:
            executor.shutdown()
            raise
        executor.renew_lease(began + self.config.lease_s)
        self.node_id, self.state = record.id, NodeState.INITIALIZING
        self._self_paused = False
        executor.serve_node(record.id)
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
        return executor

    def _pool(self) -> str:
        """The pool this node runs: the configured one, or inline threads for a node that was
        not given its app as 'module:attribute' (a worker process could not load it)."""
        pool = self.config.pool
        if pool != "inline" and self.app_spec is None:
            if pool == "process":
                raise ConfigError("the process pool needs the app as 'module:attribute'")
            if not self._warned_inline:
                log.warning(
                    "node %s runs tasks in its own process (no app given as "
                    "'module:attribute' to load in a worker process): a task that kills its "
                    "process takes the node down with it",
                    self.config.name,
                )
                self._warned_inline = True
            pool = "inline"
        return pool

    def _make_executor(self, pool: str) -> Executor:
        if pool == "process":
            from shoal.node.procpool import ProcessExecutor

            assert self.app_spec is not None
            return ProcessExecutor(self.app_spec, self.config.concurrency, self._worker_db_url())
        if pool == "thread":
            from shoal.node.hosted import HostedExecutor

            assert self.app_spec is not None
            hosted = HostedExecutor(self.app_spec, self.config.concurrency, self._worker_db_url())
            if not self._worker_loaded:
                self._await_worker(hosted)
            return hosted
        return ThreadExecutor(self.app, self.config.concurrency)

    def _await_worker(self, hosted: HostedExecutor) -> None:
        """Wait for the node's first worker process to load the app, up to START_WAIT_S (a slow
        import goes on in the background after that) or a stop request. Raises AppNotLoadable
        if it cannot: then nothing this node would claim could run."""
        give_up_at = time.monotonic() + START_WAIT_S
        try:
            while not hosted.wait_started(0.1):
                if self.stop_requested or time.monotonic() > give_up_at:
                    return
        except AppNotLoadable:
            hosted.shutdown()
            raise
        self._worker_loaded = True

    def _worker_db_url(self) -> str:
        """The URL of the node's datastore for its worker processes (see the class doc)."""
        if self.db_url is not None:
            return self.db_url
        shown = self.store.url_for_display
        if redact_url(self.app.db_url) == shown:
            return self.app.db_url  # the same datastore, with its password
        if "***" in shown:
            log.warning(
                "tasks that use the app's datastore cannot reach %s from a worker process: "
                "its password is not known; give the Node its db_url",
                shown,
            )
        return shown

    def _start_waker(self, executor: Executor) -> None:
        """Listen for datastore wake-ups in the background.

        The listener only turns notifications into Wake events; the loop's thread still makes
        every claim, and keeps polling (less often) in case a notification is lost.
        """
        wait_for_work, node_id = self.store.wait_for_work, self.node_id

        def listen() -> None:
            while self.node_id == node_id and self.exit_code is None and not self.stop_requested:
                if wait_for_work(node_id, 1.0):
                    executor.events.put(Wake())

        threading.Thread(target=listen, name="shoal-wakeups", daemon=True).start()

    def _heartbeat(self, loop: NodeLoop) -> bool:
        """Heartbeat and housekeeping; False if this node was declared dead (its loop is gone).
        A renewed lease is passed on to the workers: worker processes run nothing past it."""
        began = time.monotonic()
        try:
            beat = loop.housekeeping.run_once()
        except DatastoreUnavailable as exc:
            log.warning("heartbeat failed (%s); jobs keep running, retrying", exc)
            return True
        if beat is None:
            self._abandon(loop)
            return False
        loop.executor.renew_lease(began + self.config.lease_s)
        self._on_heartbeat(loop, beat)
        return True

    def _abandon(self, loop: NodeLoop) -> None:
        loop.executor.shutdown()
        self.loop = None
        log.error(
            "node %s (id %s) was declared dead by the cluster (its lease expired); "
            "its jobs were requeued elsewhere. Registering again as a new node.",
            self.config.name,
            self.node_id,
        )
        if self.stop_requested:
            self.exit_code = 0

    def _on_heartbeat(self, loop: NodeLoop, beat: Heartbeat) -> None:
        self.state = beat.state
        self.section = beat.section
        beat = self._pause_while_unavailable(loop, beat)
        if beat.pause_requested and not loop.draining and self.state is not NodeState.PAUSED:
            loop.draining = True
            loop.release_unstarted()
            log.info("pause requested: no more claims; draining %d in-flight jobs", len(loop.held))
        elif not beat.pause_requested and (loop.draining or self.state is NodeState.PAUSED):
            loop.draining = False
            if self.state is NodeState.PAUSED:
                self._move(NodeState.PAUSED, NodeState.WAITING)
            log.info("node %s resumed", self.config.name)

    def _pause_while_unavailable(self, loop: NodeLoop, beat: Heartbeat) -> Heartbeat:
        """A node whose workers cannot run any task (its worker process cannot load the app)
        pauses itself, so that its section goes to the nodes that can, and resumes once a worker
        process loads the app again; a pause it did not ask for itself is left to whoever asked.
        Returns the heartbeat as it stands after the request."""
        why = loop.executor.unavailable()
        if why is not None and not beat.pause_requested and not self._self_paused:
            self._request_pause(True, "its worker process cannot load the app")
            self._self_paused = True
            log.warning(
                "node %s pauses itself: %s. Its section goes to the other nodes until a worker "
                "process here loads the app again",
                self.config.name,
                why.rstrip("."),
            )
            return dataclasses.replace(beat, pause_requested=True)
        if why is None and self._self_paused:
            self._self_paused = False
            if beat.pause_requested:
                self._request_pause(False, "its worker process loaded the app")
                log.info("node %s resumes: its worker process loaded the app", self.config.name)
                return dataclasses.replace(beat, pause_requested=False)
        return beat

    def _request_pause(self, paused: bool, why: str) -> None:
        try:
            self.store.request_pause(str(self.node_id), paused, why)
        except (DatastoreUnavailable, NotFound) as exc:  # the next heartbeat asks again
            log.warning(
                "node %s could not %s itself: %s",
                self.config.name,
                "pause" if paused else "resume",
                exc,
            )
            self._self_paused = not paused

    def _move(self, old: NodeState, new: NodeState) -> None:
        try:
            if self.store.set_node_state(self.node_id, old, new):
                self.state = new
        except DatastoreUnavailable as exc:
            log.warning("cannot record state %s yet (%s)", new.value, exc)

    def _leave(self, loop: NodeLoop) -> None:
        """Stop cleanly: record what finished, release the rest, go dead, hand the section over.

        If the datastore is down right now, leaving is best effort: whatever is not written
        here is recovered by the other nodes when this node's lease expires.
        """
        loop.write_progress()
        loop.write_outcomes()
        loop.executor.shutdown()
        try:
            leftover = list(loop.held)
            if leftover:
                released = self.store.release_jobs(self.node_id, leftover)
                log.warning("released %d unfinished jobs back to the queue", released)
            node = self.store.read_node(self.node_id)
            if node is not None and node.state is not NodeState.DEAD:
                self.store.set_node_state(self.node_id, node.state, NodeState.DEAD, "stopped")
        except DatastoreUnavailable as exc:
            log.error("could not leave cleanly (%s); the lease will expire instead", exc)
            return
        self.state = NodeState.DEAD
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
                if self.stop_requested:
                    raise
                log.warning("datastore unavailable (%s); retrying in %.1fs", exc, delay)
                with contextlib.suppress(queue.Empty):  # woken early by a stop request
                    self._stop_signals.get(timeout=delay)
                delay = min(delay * 2, 10.0)
