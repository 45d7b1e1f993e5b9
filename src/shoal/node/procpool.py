"""Attempts in worker processes, for CPU-bound tasks (`shoal node --pool process`).

Each worker is a separate Python process (spawned, not forked, so it never inherits the node's
datastore connection) that imports the app by its 'module:attribute' reference and runs one
attempt at a time. Only plain values cross the pipe: the job's JSON text in, JSON text out. A
worker past its job's time limit is killed and replaced; one that dies on its own is reported as a
failed attempt and replaced. A cancel request reaches the running task through a shared integer
(the id of the job asked to cancel), which `shoal.cancelled()` in the worker compares with its
own job; a worker still running that job past its cancel grace is killed and replaced.

Workers ignore SIGTERM and SIGINT: a service manager signals the node's whole process group, and
the node, not the signal, decides when they stop (they drain with it). They are started with both
signals blocked, so one that arrives while a worker starts up waits until the worker ignores it.
A node that is pausing or stopping spawns no replacements; the next submit fills the pool again.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import math
import multiprocessing
import os
import queue
import signal
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from multiprocessing.connection import Connection
from typing import Any

from shoal.app import App, load_app
from shoal.errors import ConfigError
from shoal.node.eventqueue import EventQueue
from shoal.node.executor import Event
from shoal.node.runner import Finished, ProgressEvent, Work, execute, not_stopped
from shoal.store.deadline import Deadline, retrying_until

log = logging.getLogger("shoal.node")


STOP_SIGNALS = {signal.SIGINT, signal.SIGTERM}
GIVE_BACK_S = 5.0  # the longest a worker whose node died tries to give back (see give_back_unbegun)
UNLOADABLE_EXIT = 3  # a worker's exit code when it cannot load the app (it sent the cause)
STALLED_EXIT = 4  # a worker's exit code when the node's lease ran out under it
LEASE_RAN_OUT = "the node's lease ran out while it ran (the node was stopped or stuck)"
# A worker stops this long before the node's lease is due to run out: it looks every
# LEASE_POLL_S, and must be gone before another node can have taken its job.
LEASE_POLL_S = 0.05
LEASE_MARGIN_S = 4 * LEASE_POLL_S
SHUTDOWN_WAIT_S = 2.0  # how long idle workers get to exit when the pool shuts down


KILLED = "its worker process was killed"


def _asked_to_cancel(cancel: Any, job_id: int) -> bool:
    return bool(cancel.value == job_id)


def leave_the_node_group() -> None:
    """In a worker process: lead a session (and so a process group) of its own. A task that
    signals its process group (`os.killpg(0, SIGKILL)`, a library "stopping everything") then
    reaches its own process and what it started, not the node, which would die with it and give
    back the tiny jobs it had handed over unrecorded as if they had never run. The worker needs
    nothing of the group: it ignores the stop signals a terminal or a service manager sends
    there, and leaves when its node does (its pipe closes), or as the node's lease runs out.
    A session, not only a group: a background group of the node's terminal would be stopped for
    writing its logs there under `stty tostop`; a session has no terminal to be stopped by. (Where
    the kernel gives each session a scheduling group of its own, autogroup, the worker process
    then shares the CPU with its node as a group rather than thread by thread.)"""
    with contextlib.suppress(OSError):  # already a group leader: nothing to leave
        os.setsid()


def ignore_stop_signals() -> None:
    """In a worker process: the node handles SIGINT/SIGTERM and decides when workers stop."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)  # blocked by start_worker


def start_worker(process: Any) -> None:
    """Start a worker process (multiprocessing, spawn) with the stop signals blocked: the child
    inherits the mask across exec, and so cannot die of a stop signal sent before it has set its
    own dispositions (`ignore_stop_signals`)."""
    blocked = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        process.start()
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)


def load_worker_app(app_spec: str, db_url: str | None, conn: Connection) -> App:
    """The app of a worker process, bound to the node's datastore (`db_url`; None: its own). One
    that cannot be loaded sends the reason to the node and exits with UNLOADABLE_EXIT."""
    try:
        app = load_app(app_spec)
    except ConfigError as exc:
        with contextlib.suppress(OSError):  # the node is gone: nobody to tell
            conn.send(("unloadable", str(exc)))
        sys.exit(UNLOADABLE_EXIT)
    if db_url is not None:
        app.close()  # a store its module opened at import is the App's own datastore
        app.db_url = db_url
    return app


def _worker_main(
    app_spec: str,
    db_url: str | None,
    conn: Connection,
    cancel: Any,
    lease: Any,
    node: Any,
    handed: Any,
) -> None:
    """One worker process: run one attempt at a time as the node sends them; exit at once
    (STALLED_EXIT) if the node's lease (`lease.value`, monotonic) is due to run out while an
    attempt runs: the node is frozen or stuck, and the job may already run elsewhere. When the
    node dies, give back what it started and handed to no worker (`give_back_unbegun`)."""
    leave_the_node_group()
    ignore_stop_signals()
    app = load_worker_app(app_spec, db_url, conn)
    busy = threading.Event()

    def watch_lease() -> None:
        while True:
            time.sleep(LEASE_POLL_S)
            if busy.is_set() and time.monotonic() > lease.value - LEASE_MARGIN_S:
                os._exit(STALLED_EXIT)

    threading.Thread(target=watch_lease, name="shoal-lease-watch", daemon=True).start()

    def report(event: ProgressEvent) -> None:
        conn.send(("progress", event.job_id, event.attempt, event.fraction, event.message))

    try:
        while True:
            message = conn.recv()
            if message is None:
                return
            work = Work(*message)
            busy.set()
            f = execute(app, work, report, partial(_asked_to_cancel, cancel, work.job_id))
            busy.clear()
            conn.send(
                ("done", f.job_id, f.attempt, f.ok, f.result_json, f.error, f.traceback, f.final)
            )
    except (EOFError, OSError):  # the node is gone (killed: its end of the pipe closed)
        give_back_unbegun(app, node.value, [], set(handed))


def give_back_unbegun(
    app: App,
    node_id: int,
    unbegun: list[int],
    reached: set[int],
    begun_unrecorded: Sequence[tuple[int, int]] = (),
) -> None:
    """A worker process whose node died (killed, or crashed) gives back, uncharged and in the
    node's name, the jobs whose start the node recorded, charging their attempt, but that never
    began: `unbegun`, which it holds and no thread began (and, for the default pool, what the
    node had not yet sent it: `hosted.UnsentIds`), and those of the node's latest start that
    never reached a worker (not in `reached`, the latest ids the node handed over).
    Without this each would wait for the node's lease to run out, and lose its attempt. The
    datastore's release is fenced by the node and the job's state, so once the node's jobs
    were requeued or taken by another node it changes nothing. Tried for up to GIVE_BACK_S,
    past the lease's end too: on a loaded machine a new connection to the datastore can take
    longer than what was left of the lease, and until another node declares this one dead (it
    looks about once a second) a late give-back still spares those jobs an attempt.

    It also records the start of `begun_unrecorded` (job id, attempt): attempts of tiny jobs a
    thread began while they were still claimed, ended or not, whose outcome the node may not
    have recorded. Charged and running under the dead node, each still claimed is requeued with
    its attempt counted, and with this death counted against it (a job that kills its node is
    quarantined in the end): still claimed, it would go back as if it had never run, and run
    again under the same attempt number.
    """
    if not node_id:
        return  # not registered yet (it started nothing), or a pool that gives nothing back
    deadline = Deadline()
    deadline.bring_forward(time.monotonic() + GIVE_BACK_S)
    try:
        with retrying_until(deadline):
            never_sent = [i for i in app.store.last_started(node_id) if i not in reached]
            if unbegun or never_sent:
                app.store.release_jobs(node_id, list(dict.fromkeys(unbegun + never_sent)))
            if begun_unrecorded:
                app.store.record_begun(node_id, begun_unrecorded)
    except Exception as exc:  # nothing to report to: the node is gone
        log.warning(
            "node %d is gone; could not give back the jobs it started that never began "
            "(%s): they go back to the queue once its lease runs out",
            node_id,
            exc,
        )


@dataclass
class _Worker:
    process: Any  # multiprocessing.Process (spawn context)
    conn: Connection
    cancel: Any  # a shared integer: the id of the job asked to cancel, 0 for none
    work: Work | None = None
    deadline: float | None = None
    cancel_deadline: float | None = None  # past it, the worker is killed
    cancel_grace_s: float = 0.0
    cause: str | None = None  # why it could not load the app, as it said

    def overrun(self, now_mono: float) -> str | None:
        """The error of a running attempt past its cancel grace or time limit; None while it
        may run on."""
        if self.work is None:
            return None
        if self.cancel_deadline is not None and now_mono > self.cancel_deadline:
            return not_stopped(self.cancel_grace_s, KILLED)
        if self.deadline is not None and now_mono > self.deadline:
            return f"timed out after {self.work.timeout_s}s (worker process killed)"
        return None


class ProcessExecutor:
    outlives_node = False  # it never holds unrecorded work: a node prefetches nothing for it

    def __init__(
        self, app_spec: str, concurrency: int, db_url: str | None = None, give_back: bool = True
    ) -> None:
        self.app_spec = app_spec
        self.concurrency = concurrency
        self.db_url = db_url
        self.events: queue.SimpleQueue[Event] = EventQueue()
        self._ctx = multiprocessing.get_context("spawn")
        self._lock = threading.Lock()
        self._closing = False
        self._idle = False  # pausing or stopping: dead workers are not replaced until a submit
        self._workers: list[_Worker] = []
        # Until when the node's lease is sure to last (monotonic); no end until it first says.
        self._lease = self._ctx.RawValue(ctypes.c_double, math.inf)
        # For a node killed between a start's commit and handing its jobs over (see
        # `give_back_unbegun`): the node's id once registered (0: none, or no give-back wanted), and
        # the latest job ids handed to any worker, written before each is sent.
        self._give_back = give_back
        self._node = self._ctx.RawValue(ctypes.c_longlong, 0)
        self._handed = self._ctx.RawArray(ctypes.c_longlong, max(64, 4 * concurrency))
        self._next_handed = 0
        self._fill()

    def _fill(self) -> None:
        """Spawn workers up to `concurrency`, unless the pool is shutting down. Holds the lock."""
        while len(self._workers) < self.concurrency and not self._closing:
            self._workers.append(self._spawn())

    def _spawn(self) -> _Worker:
        parent, child = self._ctx.Pipe()
        cancel = self._ctx.Value("q", 0, lock=False)
        process = self._ctx.Process(
            target=_worker_main,
            args=(
                self.app_spec,
                self.db_url,
                child,
                cancel,
                self._lease,
                self._node,
                self._handed,
            ),
            name="shoal-worker",
            daemon=True,
        )
        start_worker(process)
        child.close()
        worker = _Worker(process, parent, cancel)
        threading.Thread(target=self._read, args=(worker,), daemon=True).start()
        return worker

    def submit(self, work: Work) -> None:
        with self._lock:
            self._idle = False
            self._fill()
            worker = next(w for w in self._workers if w.work is None)
            worker.work = work
            worker.deadline = None if work.timeout_s is None else time.monotonic() + work.timeout_s
            worker.cancel_deadline = None
            self._handed[self._next_handed % len(self._handed)] = work.job_id
            self._next_handed += 1
        worker.conn.send(
            (work.job_id, work.attempt, work.task, work.args_json, work.kwargs_json, work.timeout_s)
        )

    def submit_many(self, works: Sequence[Work]) -> None:
        for work in works:
            self.submit(work)

    def free_slots(self, prefetch: int = 0) -> int:
        """Idle workers. A process pool does not prefetch: its tasks are long by nature."""
        with self._lock:
            return self.concurrency - sum(1 for w in self._workers if w.work is not None)

    def take_unstarted(self) -> list[int]:
        """Nothing waits locally (work goes straight to an idle worker); the node is pausing or
        stopping, so from now on a worker that dies is not replaced until the next submit."""
        with self._lock:
            self._idle = True
        return []

    def unstarted_wait_s(self) -> float:
        """Nothing waits locally: work goes straight to an idle worker."""
        return 0.0

    def longest_running_s(self) -> float:
        """Not tracked: a process pool does not prefetch, which is what this would size."""
        return 0.0

    def begun_for(self, at_least_s: float) -> list[int]:
        """Not tracked: a node hands a process pool only work whose start it recorded."""
        return []

    def running(self) -> list[int]:
        with self._lock:
            return [w.work.job_id for w in self._workers if w.work is not None]

    def expire(self, now_mono: float) -> list[Finished]:
        """Kill and replace workers past their job's time limit or cancel grace; return the
        reports of their attempts."""
        out = []
        with self._lock:
            for w in list(self._workers):
                error = w.overrun(now_mono)
                if w.work is None or error is None:
                    continue
                out.append(Finished(w.work.job_id, w.work.attempt, False, error=error))
                w.work = None
                w.process.kill()
                self._replace(w)
        return out

    def cancel(self, job_id: int, grace_s: float) -> None:
        """Tell the worker running the job that it was asked to cancel; kill it if it still
        runs the job `grace_s` later. Nothing waits locally, so there is nothing to withdraw."""
        with self._lock:
            for w in self._workers:
                if w.work is not None and w.work.job_id == job_id and w.cancel_deadline is None:
                    w.cancel.value = job_id
                    w.cancel_grace_s = grace_s
                    w.cancel_deadline = time.monotonic() + grace_s

    def renew_lease(self, until_mono: float) -> None:
        """The node's lease is sure to last until `until_mono` (monotonic): no worker runs an
        attempt past that time."""
        self._lease.value = until_mono

    def unavailable(self) -> str | None:
        """None: this pool does not tell (only the default pool's worker process is watched for
        an app it cannot load)."""
        return None

    def serve_node(self, node_id: int) -> None:
        """The node registered as `node_id`: its workers may give back in its name."""
        if self._give_back:
            self._node.value = node_id

    def shutdown(self) -> None:
        """Stop every worker: idle ones are asked to exit, busy ones (their jobs are released or
        abandoned by now) are killed; returns within about SHUTDOWN_WAIT_S."""
        with self._lock:
            self._closing = True
            workers = list(self._workers)
        for w in workers:
            if w.work is not None:
                w.process.kill()
            with contextlib.suppress(OSError):
                w.conn.send(None)
        deadline = time.monotonic() + SHUTDOWN_WAIT_S
        for w in workers:
            w.process.join(timeout=max(0.0, deadline - time.monotonic()))
            if w.process.is_alive():
                w.process.kill()
                w.process.join(timeout=1)

    def _replace(self, worker: _Worker) -> None:
        """Drop a dead or killed worker; spawn its replacement unless pausing or stopping.
        Holds the lock."""
        self._workers.remove(worker)
        if not self._idle:
            self._fill()

    def _read(self, worker: _Worker) -> None:
        while True:
            try:
                message = worker.conn.recv()
            except (EOFError, OSError):
                self._on_exit(worker)
                return
            if message[0] == "progress":
                self.events.put(ProgressEvent(*message[1:]))
                continue
            if message[0] == "unloadable":
                worker.cause = message[1]
                continue
            with self._lock:
                worker.work = None
                worker.deadline = None
                worker.cancel_deadline = None
            self.events.put(Finished(*message[1:]))

    def _on_exit(self, worker: _Worker) -> None:
        with self._lock:
            if self._closing:
                return  # shutting down: `shutdown` reaps the workers
            killed = worker not in self._workers  # on purpose: a time limit, a cancel grace
            if not killed:
                work, worker.work = worker.work, None
                self._replace(worker)
                replaced = not self._idle
        worker.process.join(timeout=1)  # reap it: no zombie left behind
        if killed:
            return
        log.warning(
            "a worker process exited (code %s%s)%s",
            worker.process.exitcode,
            f": {worker.cause}" if worker.cause else "",
            "; replaced" if replaced else "",
        )
        if work is not None:
            code = worker.process.exitcode
            error = LEASE_RAN_OUT if code == STALLED_EXIT else death_of(code, work.job_id)
            self.events.put(Finished(work.job_id, work.attempt, False, error=error))


def death_of(exitcode: int | None, job_id: int) -> str:
    """What a worker process's end says about the attempt it was running."""
    return f"{ended_how(exitcode)} while running job {job_id}"


def ended_how(exitcode: int | None) -> str:
    """How a worker process ended, by signal name when one killed it (multiprocessing reports
    signal N as exit code -N)."""
    if exitcode is not None and exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = "an unknown signal"
        return f"the worker process was killed by signal {-exitcode} ({name})"
    return f"the worker process exited with code {exitcode}"
