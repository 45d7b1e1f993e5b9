"""Worker threads hosted by one worker process: the default pool (`--pool thread`).

The node's own process holds the lease, the section and every datastore write; task code runs
in one child process (spawned, so it inherits no datastore connection) that imports the app by
its 'module:attribute' reference and runs a `ThreadExecutor`: the same threads, time limits and
prefetching as in the node's process, but a task that kills its process (`os._exit`, a segfault,
an OOM kill) kills only the child. Work and events cross one pipe in batches, so a tiny job costs
about what it costs in threads of the node's own process.

The node sees the child die at once (its pipe closes) and starts another. Jobs that no thread
had started go to the new child as they were. Each thread marks the job it runs in shared
memory, which outlives the child: a job that was running alone caused the death, and its attempt
fails saying how the child ended; when several were running, each runs again, one at a time, in
a process of its own (the process pool with one worker), where the one that kills its process
fails with that cause and the others finish. No job is charged an attempt for another's crash.

The child opens the node's datastore, not the one its App was built with: a task that submits
jobs submits them where the node runs, as a task in the node's own process does (`db_url`).

A child that cannot load the app says why and exits. The node's first child must load it: a
node whose worker process cannot import its tasks exits before it registers (a supervisor shows
the error at once; a node that looked alive and ran nothing would not), see `wait_started`.
Later, a child that fails to start (a deploy replaced the code under a running node) is started
again after a pause that doubles up to RESPAWN_MAX_S; the cause is logged once, then a reminder
at the 2nd, 4th, 8th... failure. Until a child has loaded the app the node claims nothing (no
free slots), heartbeats as usual, and gives back what it had claimed for the dead child (as
work claimed ahead that waits too long: `unstarted_wait_s`).

Tiny jobs come to the child still claimed, their start not recorded (see
`NodeConfig.start_ahead_s`); the child keeps the latest attempts it began of those. When the node
dies, or its lease is about to run out, the child records their start (`Store.record_begun`,
fenced by the attempt): each whose outcome the node did not record goes back charged, as a
running job of a dead node does, not as if it had never run.

The child must not outlive the node's lease. The node writes in shared memory how long its
lease is sure to last (`renew_lease`, after each heartbeat); a child that finds that time past
(the node frozen by SIGSTOP, its thread stuck) exits at once with STALLED_EXIT, ending the tasks
it runs: another node may already be running them again, and two copies running at once is
worse than an attempt cut short, which at-least-once execution already allows for. Each attempt
it cut short fails (and is retried) as when a node is declared dead, which is what the node's
lease running out means; the node's write of it is refused if that happened meanwhile. What it
had not started is not charged. No new child starts until the lease is renewed: a node that
resumes and finds itself declared dead discards its workers and registers again; one that is
still alive gives back what waited, or hands it to a new child.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import math
import multiprocessing
import os
import pickle
import queue
import select
import threading
import time
from collections import Counter, deque
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from multiprocessing.connection import Connection
from operator import attrgetter
from typing import Any

from shoal.errors import AppNotLoadable
from shoal.node.eventqueue import EventQueue
from shoal.node.executor import ABANDONED_PER_SLOT, Event, ThreadExecutor
from shoal.node.procpool import (
    LEASE_RAN_OUT,
    STALLED_EXIT,
    ProcessExecutor,
    death_of,
    ended_how,
    give_back_unbegun,
    ignore_stop_signals,
    leave_the_node_group,
    load_worker_app,
    start_worker,
)
from shoal.node.runner import NOT_STARTED, Finished, ProgressEvent, Work

log = logging.getLogger("shoal.node")

BATCH = 1024  # events or work items per message across the pipe
# The largest message the node's loop sends to the child itself (see `_send_at_once`): far less
# than the room a writable socket has, and one write (Connection sends up to 16 KiB at once).
DIRECT_MAX = 16 * 1024
# A child's finishes that follow one another closely cross the pipe together: after a message,
# the next one waits this long for the rest of its burst (see `_send_events`).
COALESCE_S = 0.001
POLL_S = 0.05  # how often the child enforces time limits while no work arrives
TAKE_WAIT_S = 2.0  # how long a withdrawal of unstarted work waits for the child's answer
SHUTDOWN_WAIT_S = 2.0  # how long the child gets to exit when the pool shuts down
MIN_LIFE_S = 1.0  # a child that dies younger than this is replaced only after a pause
RESPAWN_PAUSE_S = 1.0  # the pause, doubled for each child in a row that fails to load the app
RESPAWN_MAX_S = 60.0  # the longest pause between children that cannot load the app
# A child stops this long before the node's lease is due to run out: its checks are POLL_S
# apart, and it must be gone before another node can have taken its jobs.
LEASE_MARGIN_S = 4 * POLL_S
RECORD_BEGUN_S = 0.75 * LEASE_MARGIN_S  # see `_record_begun`
# A child whose node's lease has less than this left, not renewed, records the start of what
# its threads began unrecorded ahead of its exit (see `_record_begun`): with the time that
# opening a connection to a loaded datastore takes, the last moment before the lease runs out
# is often too late. A node that is only slow loses nothing by it: each start it records was
# real, and the node's own write of the outcome still finds the job.
RECORD_EARLY_S = 0.75
RECEIVED_KEPT = (
    16_384  # the latest job ids a child remembers the node sent it (see give_back_unbegun)
)
UNSENT_KEPT = 4096  # the most job ids `UnsentIds` holds: work handed over, not yet sent
# A job in the child at this many of its deaths, though never marked started, is treated as
# started: whatever kills the child before the mark, the job cannot circle for ever.
UNMARKED_DEATHS = 2


# The fields of each event, in order, as they cross the pipe.
_FIELDS_OF: dict[type, attrgetter[tuple[Any, ...]]] = {
    kind: attrgetter(*(f.name for f in fields(kind))) for kind in (Finished, ProgressEvent)
}


class SharedMarks:
    """Start marks in shared memory: slot i holds the id of the job a thread of the child runs,
    0 when free. The child writes them; the node reads them once the child is dead."""

    def __init__(self, slots: Any) -> None:
        self.slots = slots  # a RawArray of c_longlong
        self._next = 0
        self._lock = threading.Lock()
        self._mine = threading.local()  # each thread keeps the slot it was given

    def started(self, job_id: int) -> int:
        mark: int | None = getattr(self._mine, "mark", None)
        if mark is None:
            with self._lock:
                mark, self._next = self._next, self._next + 1
            if mark >= len(self.slots):
                return -1  # more threads than slots: unmarked (see UNMARKED_DEATHS)
            self._mine.mark = mark
        self.slots[mark] = job_id
        return mark

    def ended(self, mark: int) -> None:
        if mark >= 0:
            self.slots[mark] = 0


class UnsentIds:
    """The ids of the work the node handed to the pool and has not yet written to the child's
    pipe, in shared memory, which outlives the node. A child whose node is gone gives back the
    ids of it that never reached it (see `give_back_unbegun`): their start was recorded, charging
    an attempt that never began. The datastore knows only the node's latest start; this also
    holds the older ones still waiting (the send thread busy with a large batch, say).

    The node writes, the child reads once the node is gone. A write empties the record first and
    sets its count last, so a node killed in the middle of one leaves none or all of it."""

    def __init__(self, ids: Any, count: Any) -> None:
        self.ids = ids  # a RawArray of c_longlong
        self.count = count  # a RawValue of c_int: how many of `ids` hold

    def write(self, job_ids: Sequence[int]) -> None:
        kept = list(job_ids[: len(self.ids)])
        self.count.value = 0
        self.ids[: len(kept)] = kept
        self.count.value = len(kept)

    def read(self) -> list[int]:
        return list(self.ids[: self.count.value])


def _host_main(
    app_spec: str,
    db_url: str | None,
    concurrency: int,
    conn: Connection,
    slots: Any,
    lease: Any,
    node: Any,
    unsent: UnsentIds,
) -> None:
    """The child: run the work the node sends in a ThreadExecutor; send events back in batches;
    exit at once (STALLED_EXIT) when the node's lease, `lease.value` in monotonic time, is due
    to run out; give back what no thread started when the node is gone (its id: `node.value`),
    and what the node had for it that never came (`unsent`)."""
    leave_the_node_group()
    ignore_stop_signals()
    executor = ThreadExecutor(
        load_worker_app(app_spec, db_url, conn), concurrency, SharedMarks(slots)
    )
    send_lock = threading.Lock()
    received: deque[int] = deque(maxlen=RECEIVED_KEPT)  # the latest job ids the node sent

    def send(message: Any) -> None:
        with send_lock:
            conn.send(message)

    try:
        send(("ready",))
        threading.Thread(target=_send_events, args=(executor, send), daemon=True).start()
        threading.Thread(target=_connect, args=(executor,), daemon=True).start()
        recorded_for = math.nan  # the lease under which starts were recorded ahead of time
        while True:
            left_s = lease.value - time.monotonic()
            if left_s < LEASE_MARGIN_S:
                _record_begun(executor, node.value)
                os._exit(STALLED_EXIT)  # ends every task here: they may be running elsewhere
            if left_s < RECORD_EARLY_S and lease.value != recorded_for:
                recorded_for = lease.value
                _record_begun(executor, node.value, wait=False)
            if conn.poll(POLL_S):
                message = conn.recv()
                if message is None:
                    break
                if message[0] == "work":
                    for item in message[1]:
                        received.append(item[0])
                        executor.submit(Work(*item))
                elif message[0] == "cancel":  # ("cancel", job id, grace in seconds)
                    executor.cancel(message[1], message[2])
                else:  # ("take", serial): withdraw what no thread has started
                    send(("taken", message[1], executor.take_unstarted()))
            for finished in executor.expire(time.monotonic()):
                executor.events.put(finished)
    except (EOFError, OSError):  # the node is gone: so is the reason to run
        # What no thread began, and what the node had for this process that never came (its
        # latest start, and what it had not sent); and the start of what began unrecorded, so
        # it counts as this death's as any running job does.
        unbegun = executor.take_unstarted()
        begun = executor.begun_unrecorded()
        reached = set(received)
        never_came = [job_id for job_id in unsent.read() if job_id not in reached]
        give_back_unbegun(executor.app, node.value, unbegun + never_came, reached, begun)
    executor.shutdown()


def _connect(executor: ThreadExecutor) -> None:
    """Open the child's SQLite file before it is needed: a write made as the lease runs out has
    no time to spare (see `_record_begun`). Not a PostgreSQL connection: one that stayed idle
    would hold on to a server later demoted, which no write would tell it of, and opening one
    takes a few milliseconds only. A failure shows when the store is used."""
    if not (executor.app.db_url or "").lower().startswith("sqlite:"):
        return
    with contextlib.suppress(Exception):
        executor.app.store.now()


def _record_begun(executor: ThreadExecutor, node_id: int, wait: bool = True) -> None:
    """As the node's lease runs short, and again before the child exits as it runs out: record
    the start of the tiny jobs its threads began unrecorded whose outcome the node has not
    recorded (`Store.record_begun`), so that they go back charged, as any job running under a
    node declared dead does, rather than as if they had never run (and then run again under
    the same attempt number). The first time in the background (RECORD_EARLY_S before the
    lease ends), the last within RECORD_BEGUN_S (`wait`), which ends before the lease does: a
    datastore that does not answer by then (down, or its SQLite file locked by the frozen
    node) is not waited for, and those jobs go back uncharged."""
    begun = executor.begun_unrecorded()
    if not begun or not node_id:
        return

    def record() -> None:
        with contextlib.suppress(Exception):  # nothing to report to: the child is ending
            executor.app.store.record_begun(node_id, begun)

    recorder = threading.Thread(target=record, daemon=True)
    recorder.start()
    if wait:
        recorder.join(RECORD_BEGUN_S)


def _send_events(executor: ThreadExecutor, send: Any, coalesce_s: float = COALESCE_S) -> None:
    """Send the child's events to the node in batches. A finish after a quiet spell goes at
    once; one that comes within `coalesce_s` of the last message waits that long for the rest
    of its burst. Sending each as it comes would wake this thread, and the node's reader, for
    every tiny job: on a loaded machine those wake-ups cost more than the jobs (a drain of
    no-op jobs lost a quarter of its rate against threads in the node's own process). A burst's
    finishes reach the node at most `coalesce_s` later; a lone job's, no later."""
    events = executor.events
    sent_at = -math.inf
    while True:
        batch: list[Event] = [events.get()]
        if time.monotonic() - sent_at < coalesce_s:
            time.sleep(coalesce_s)
        while len(batch) < BATCH:
            try:
                batch.append(events.get_nowait())
            except queue.Empty:
                break
        send(("events", [_event_tuple(e) for e in batch], executor.abandoned))
        sent_at = time.monotonic()


def _work_item(work: Work) -> tuple[Any, ...]:
    """Work as plain values, as it crosses the pipe (the child makes it `Work(*item)` again)."""
    return (
        work.job_id,
        work.attempt,
        work.task,
        work.args_json,
        work.kwargs_json,
        work.timeout_s,
        work.unrecorded,
    )


def _pickled(message: Any) -> bytes:
    """`message` pickled as `Connection.send` does it, for `Connection.recv` to read."""
    return pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)


def _has_room(conn: Connection) -> bool:
    """The connection's socket can take a DIRECT_MAX message without waiting."""
    try:
        return bool(select.select([], [conn.fileno()], [], 0)[1])
    except (OSError, ValueError):  # closed meanwhile
        return False


def _event_tuple(event: Event) -> tuple[Any, ...]:
    """A worker's event as plain values (a flag for its kind, then its fields), which cross a
    pipe several times faster than dataclasses."""
    return (isinstance(event, Finished), *_FIELDS_OF[type(event)](event))


def _event_of(values: tuple[Any, ...]) -> Event:
    return Finished(*values[1:]) if values[0] else ProgressEvent(*values[1:])


@dataclass
class _Child:
    process: Any  # multiprocessing.Process (spawn context)
    conn: Connection
    slots: Any
    born: float
    send_lock: threading.Lock = field(default_factory=threading.Lock)
    ready: bool = False  # it has loaded the app
    ended: bool = False  # it has died
    cause: str | None = None  # why it could not load the app, as it said

    def send(self, message: Any) -> None:
        with self.send_lock:
            self.conn.send(message)


class HostedExecutor:
    outlives_node = True  # the child gives back, or records as begun, what it held

    def __init__(self, app_spec: str, concurrency: int, db_url: str | None = None) -> None:
        self.app_spec = app_spec
        self.concurrency = concurrency
        self.db_url = db_url
        self.max_abandoned = ABANDONED_PER_SLOT * concurrency
        self.events: queue.SimpleQueue[Event] = EventQueue()
        self._ctx = multiprocessing.get_context("spawn")
        self._lock = threading.Lock()
        self._closing = False
        self._inflight: dict[int, Work] = {}  # handed to the child, not finished
        self._accepted: dict[int, float] = {}  # of those, when each was handed over (monotonic)
        self._seen_running: dict[int, float] = {}  # when each was first seen started
        self._unsent: list[Work] = []  # of those, not yet sent
        # Of those, the ids not yet written to the child's pipe (the send thread's batch too),
        # mirrored in shared memory for the child to give back if the node dies (`UnsentIds`).
        self._not_sent: dict[int, None] = {}
        self._unsent_ids = UnsentIds(
            self._ctx.RawArray(ctypes.c_longlong, UNSENT_KEPT), self._ctx.RawValue(ctypes.c_int, 0)
        )
        self._bell: EventQueue[bool] = EventQueue()  # rung when `_unsent` fills
        self._abandoned = 0  # the child's threads stuck past a time limit, as it last said
        self._deaths: Counter[int] = Counter()  # child deaths each job in flight has seen
        self._taken: queue.SimpleQueue[tuple[int, list[int]]] = queue.SimpleQueue()
        self._serial = 0
        self._suspects: dict[int, Work] = {}  # to run alone, or running alone
        self._queue: deque[Work] = deque()  # suspects not yet given to the solo process
        self._solo: ProcessExecutor | None = None
        # Until when the node's lease is sure to last (monotonic); no end until it first says.
        self._lease = self._ctx.RawValue(ctypes.c_double, math.inf)
        # The node's id in the cluster, for the child to give back what it holds unstarted if
        # the node dies (see `give_back_unbegun`); 0 until the node has registered.
        self._node = self._ctx.RawValue(ctypes.c_longlong, 0)
        self._failed_starts = 0  # children in a row that could not load the app
        self._cannot_load: str | None = None  # why the latest child could not, until one can
        self._first_answer: str | None = None  # "" once a child loaded the app, else the cause
        self._answered = threading.Event()  # the first child loaded the app or failed to
        self._closed = threading.Event()  # cuts short the pauses between children
        self._child = self._spawn()
        threading.Thread(target=self._send_work, name="shoal-hosted-send", daemon=True).start()

    # -- the Executor protocol ---------------------------------------------------------------------

    def submit(self, work: Work) -> None:
        self.submit_many((work,))

    def submit_many(self, works: Sequence[Work]) -> None:
        """Hand `works` to the child: at once from the caller's thread when nothing else is
        being sent (see `_send_at_once`), else by the send thread, in batches."""
        if not works:
            return
        now = time.monotonic()
        with self._lock:
            for work in works:
                self._inflight[work.job_id] = work
                self._accepted.pop(work.job_id, None)  # kept in the order handed over
                self._accepted[work.job_id] = now
            ring = not self._unsent
            self._unsent.extend(works)
            self._not_sent.update(dict.fromkeys(w.job_id for w in works))
        if ring and self._send_at_once():
            return
        with self._lock:
            self._mirror_unsent()  # before the send thread's turn, so no window is left open
        if ring:
            self._bell.put(True)

    def _send_at_once(self) -> bool:
        """Send what waits to be sent from the caller's thread (the node's loop, just after
        the start was recorded), when that cannot block: the child has loaded the app, nothing
        else is being sent to it, the message is small and its socket has room (writable means
        most of its buffer is free). Between a start's commit and the child's receipt of the
        work there is then no thread to wake: a node killed just after the commit leaves the
        work with a child that gives it back (see `give_back_unbegun`). True if it was sent."""
        with self._lock:
            child = self._child
            if child.ended or not child.ready or not self._unsent:
                return False
            data = _pickled(("work", [_work_item(w) for w in self._unsent]))
            if len(data) > DIRECT_MAX or not child.send_lock.acquire(blocking=False):
                return False
            try:
                if not _has_room(child.conn):
                    return False
                sent, self._unsent = self._unsent, []
                # A child that died meanwhile gets nothing: its death resends what it held.
                with contextlib.suppress(OSError):
                    child.conn.send_bytes(data)
                self._sent(sent)
                return True
            finally:
                child.send_lock.release()

    def free_slots(self, prefetch: int = 0) -> int:
        """Idle threads plus `prefetch`; none while no child has loaded the app, and none while
        the child has too many threads stuck."""
        with self._lock:
            child = self._child
            if not child.ready or child.ended or self._abandoned >= self.max_abandoned:
                return 0
            held = len(self._inflight) + len(self._suspects)
            return self.concurrency + prefetch - held

    def take_unstarted(self) -> list[int]:
        """Withdraw the work no thread of the child has started; return its job ids."""
        with self._lock:
            taken = [w.job_id for w in self._unsent]
            self._sent(self._unsent)  # withdrawn: nothing to give back for them any more
            self._unsent = []
            child = self._child
            self._serial += 1
            serial = self._serial
            asked = child.ready and not child.ended  # else it holds nothing
        if asked:
            taken += self._take_from(child, serial)
        with self._lock:
            for job_id in taken:
                self._forget(job_id)
        return taken

    def _take_from(self, child: _Child, serial: int) -> list[int]:
        """Ask the child for the work none of its threads has started; [] if it cannot answer
        within TAKE_WAIT_S (it died: its death keeps that work here)."""
        with contextlib.suppress(OSError, queue.Empty):
            child.send(("take", serial))
            deadline = time.monotonic() + TAKE_WAIT_S
            while True:
                answered, ids = self._taken.get(timeout=max(0.0, deadline - time.monotonic()))
                if answered == serial:
                    return ids
        return []

    def running(self) -> list[int]:
        with self._lock:
            return [*self._inflight, *self._suspects]

    def unstarted_wait_s(self) -> float:
        """How long the oldest job handed over that no thread of the child has started has
        waited (0 if none); started is what the child's start marks say. Those handed over
        are kept in that order, so the first one unmarked is the oldest."""
        now = time.monotonic()
        with self._lock:
            marked = self._marked()
            for job_id, at in self._accepted.items():
                if job_id not in marked:
                    return now - at
        return 0.0

    def longest_running_s(self) -> float:
        """How long the oldest attempt the child runs has run, from when this first saw its
        start mark (asked at every claim, so late by a turn at most); 0 if none."""
        now = time.monotonic()
        with self._lock:
            self._see_running(now)
            return max((now - at for at in self._seen_running.values()), default=0.0)

    def begun_for(self, at_least_s: float) -> list[int]:
        """The jobs the child has run for at least `at_least_s`, from when this first saw
        their start marks (late by a turn of the node at most)."""
        now = time.monotonic()
        with self._lock:
            self._see_running(now)
            return [j for j, at in self._seen_running.items() if now - at >= at_least_s]

    def _see_running(self, now: float) -> None:
        """Note when each start mark was first seen, forgetting those gone (under the lock)."""
        marked = self._marked() & self._accepted.keys()
        for job_id in list(self._seen_running):
            if job_id not in marked:
                del self._seen_running[job_id]
        for job_id in marked:
            self._seen_running.setdefault(job_id, now)

    def cancel(self, job_id: int, grace_s: float) -> None:
        """Pass a cancel request to the attempt where it runs (the child, or the process a
        suspect runs alone in); an attempt not yet sent to the child is withdrawn and reported
        at once, as the thread pool does."""
        with self._lock:
            solo = self._solo if job_id in self._suspects else None
            work = self._inflight.get(job_id)
            unsent = work is not None and work in self._unsent
            if work is not None and unsent:
                self._unsent.remove(work)
                self._sent([work])
                self._forget(job_id)
            waiting = [w for w in self._queue if w.job_id == job_id]  # a suspect not yet run
            if waiting:
                self._queue.remove(waiting[0])
                work, unsent, solo = self._suspects.pop(job_id), True, None
            child = self._child
        if solo is not None:
            solo.cancel(job_id, grace_s)
        elif work is not None and unsent:
            self.events.put(Finished(job_id, work.attempt, False, error=NOT_STARTED, final=True))
        elif work is not None:
            with contextlib.suppress(OSError):
                child.send(("cancel", job_id, grace_s))

    def renew_lease(self, until_mono: float) -> None:
        """The node's lease is sure to last until `until_mono` (monotonic): its child runs
        nothing past that time, nor does the process a suspect runs alone in."""
        self._lease.value = until_mono
        solo = self._solo
        if solo is not None:
            solo.renew_lease(until_mono)

    def unavailable(self) -> str | None:
        """Why no task can run here now: the latest worker process could not load the app (a
        deploy broke the code under the node), until one can; None otherwise."""
        with self._lock:
            return self._cannot_load

    def serve_node(self, node_id: int) -> None:
        """The node registered as `node_id`: its child may give back in its name."""
        self._node.value = node_id

    def wait_started(self, timeout_s: float) -> bool:
        """Wait until the first child has loaded the app (True) or `timeout_s` has passed
        (False). Raises AppNotLoadable, saying why, if the first child could not load it."""
        if not self._answered.wait(timeout_s):
            return False
        if self._first_answer:
            raise AppNotLoadable(
                f"the worker process cannot load the app {self.app_spec!r}: {self._first_answer}"
            )
        return True

    def _marked(self) -> set[int]:
        """The jobs the child's threads mark as running now (holds the lock)."""
        return {int(v) for v in self._child.slots if v}

    def _sent(self, works: Sequence[Work]) -> None:
        """Work written to the child's pipe, or withdrawn: no longer unsent (holds the lock)."""
        if works:
            for work in works:
                self._not_sent.pop(work.job_id, None)
            self._mirror_unsent()

    def _mirror_unsent(self) -> None:
        """Write the ids not yet sent where the child reads them (holds the lock)."""
        self._unsent_ids.write(list(self._not_sent))

    def _forget(self, job_id: int) -> None:
        """A job left the child's hands (holds the lock)."""
        self._inflight.pop(job_id, None)
        self._accepted.pop(job_id, None)
        self._seen_running.pop(job_id, None)

    def expire(self, now_mono: float) -> list[Finished]:
        """Time limits in the child are its own; those of a job running alone are the solo
        process's."""
        solo = self._solo
        if solo is None:
            return []
        out = solo.expire(now_mono)
        for finished in out:
            self._solo_done(finished.job_id)
        return out

    def shutdown(self) -> None:
        with self._lock:
            self._closing = True
            child, solo = self._child, self._solo
        self._closed.set()
        self._bell.put(False)
        with contextlib.suppress(OSError):
            child.send(None)
        child.process.join(timeout=SHUTDOWN_WAIT_S)
        if child.process.is_alive():
            child.process.kill()
            child.process.join(timeout=1)
        if solo is not None:
            solo.shutdown()

    # -- the child --------------------------------------------------------------------------------

    def _spawn(self) -> _Child:
        parent, child_end = self._ctx.Pipe()
        slots = self._ctx.RawArray(ctypes.c_longlong, self.concurrency + self.max_abandoned + 1)
        process = self._ctx.Process(
            target=_host_main,
            args=(
                self.app_spec,
                self.db_url,
                self.concurrency,
                child_end,
                slots,
                self._lease,
                self._node,
                self._unsent_ids,
            ),
            name="shoal-worker",
            daemon=True,
        )
        start_worker(process)
        child_end.close()
        child = _Child(process, parent, slots, time.monotonic())
        threading.Thread(target=self._read, args=(child,), daemon=True).start()
        return child

    def _send_work(self) -> None:
        """Send what was submitted, in batches, to the child of the moment."""
        while self._bell.get():
            with self._lock:
                child = self._child
                if child.ended or not child.ready:
                    continue  # kept here until a child has loaded the app, which rings again
                batch, self._unsent = self._unsent[:BATCH], self._unsent[BATCH:]
                more = bool(self._unsent)
            if more:
                self._bell.put(True)
            if batch:
                items = [_work_item(w) for w in batch]
                # A child that died meanwhile gets nothing: its death resends what it held.
                try:
                    child.send(("work", items))
                except OSError:
                    continue
                with self._lock:
                    if self._child is child:  # else its death made them unsent again
                        self._sent(batch)

    def _read(self, child: _Child) -> None:
        while True:
            try:
                message = child.conn.recv()
            except (EOFError, OSError):
                self._on_exit(child)
                return
            if message[0] == "taken":
                self._taken.put((message[1], message[2]))
                continue
            if message[0] == "ready":
                self._on_ready(child)
                continue
            if message[0] == "unloadable":
                child.cause = message[1]
                continue
            _, values, abandoned = message
            batch = [_event_of(v) for v in values]
            with self._lock:
                self._abandoned = abandoned
                kept = [e for e in batch if self._still_in_flight(e)]
            for event in kept:
                self.events.put(event)

    def _still_in_flight(self, event: Event) -> bool:
        """Whether to pass an event on (holds the lock): a finish ends the job's flight."""
        if not isinstance(event, Finished):
            return True
        work = self._inflight.get(event.job_id)
        if work is None or work.attempt != event.attempt:
            return False  # withdrawn, or already settled after a death
        self._forget(event.job_id)
        self._deaths.pop(event.job_id, None)
        return True

    def _on_ready(self, child: _Child) -> None:
        """A child loaded the app: the node may claim for it."""
        with self._lock:
            child.ready = True
            failed, self._failed_starts = self._failed_starts, 0
            self._cannot_load = None
            if self._first_answer is None:
                self._first_answer = ""
                self._answered.set()
        self._bell.put(True)  # what waited for it
        if failed:
            log.info("the worker process loaded the app after %d failed attempts", failed)

    def _on_exit(self, child: _Child) -> None:
        """The child died: keep for the next one what it had not started, settle what it was
        running, and start the next one (after a pause if it could not load the app or lived
        only briefly; once the lease is renewed if the lease ran out under it)."""
        child.process.join(timeout=1)
        code = child.process.exitcode
        with self._lock:
            if self._closing:
                return
            child.ended = True
            # A child that ran nothing yet, or that the lease ended, is no job's fault.
            count_deaths = child.ready and code != STALLED_EXIT
            lost, started = self._settle_death(child, count_deaths)
        if code == STALLED_EXIT:
            pause_s = 0.0
            log.error(
                "the worker process ended %d running jobs (%s): the node's lease ran out (the "
                "node was stopped or stuck); %d not yet started wait for it to be renewed",
                len(started),
                ", ".join(str(w.job_id) for w in started) or "none",
                len(lost) - len(started),
            )
            for work in started:
                self.events.put(Finished(work.job_id, work.attempt, False, error=LEASE_RAN_OUT))
            self._await_lease()
        elif not child.ready:
            pause_s = self._failed_to_start(child)
        else:
            young = time.monotonic() - child.born < MIN_LIFE_S
            pause_s = RESPAWN_PAUSE_S if young else 0.0  # no spawning in a tight loop
            log.error(
                "%s while running %d jobs (%s); %d not yet started go to a new worker process",
                ended_how(code),
                len(started),
                ", ".join(str(w.job_id) for w in started) or "none",
                len(lost) - len(started),
            )
            self._settle_started(started, code)
        self._closed.wait(pause_s)
        with self._lock:
            if self._closing:
                return
            self._child = self._spawn()
        self._bell.put(True)

    def _settle_death(self, child: _Child, count_deaths: bool) -> tuple[list[Work], list[Work]]:
        """What the dead child held, and of it what it had started: marked, or (`count_deaths`)
        seen at UNMARKED_DEATHS deaths; keeps the rest for the next child. Holds the lock."""
        marked = {int(v) for v in child.slots if v}
        child.slots[:] = [0] * len(child.slots)  # read: what it held waits now, unstarted
        lost = list(self._inflight.values())
        if count_deaths:
            self._deaths.update(w.job_id for w in lost)
        started = [
            w for w in lost if w.job_id in marked or self._deaths[w.job_id] >= UNMARKED_DEATHS
        ]
        for work in started:
            self._forget(work.job_id)
        self._unsent = [w for w in lost if w not in started]
        # Unsent again, for the next child (a dead child gives nothing back: its node lives).
        self._not_sent = dict.fromkeys(w.job_id for w in self._unsent)
        self._mirror_unsent()
        self._seen_running = {}
        self._abandoned = 0
        return lost, started

    def _settle_started(self, started: list[Work], exitcode: int | None) -> None:
        """A job running alone when the child died caused it; several run again one by one."""
        if len(started) == 1:
            [work] = started
            self._deaths.pop(work.job_id, None)
            error = death_of(exitcode, work.job_id)
            self.events.put(Finished(work.job_id, work.attempt, False, error=error))
        elif started:
            self._run_alone(started)

    def _failed_to_start(self, child: _Child) -> float:
        """Log a child that could not load the app (once, then at the 2nd, 4th, 8th... in a
        row); return the pause before the next."""
        cause = child.cause or ended_how(child.process.exitcode)
        with self._lock:
            self._failed_starts += 1
            failed = self._failed_starts
            self._cannot_load = cause
            if self._first_answer is None:
                self._first_answer = cause
                self._answered.set()
        pause_s = min(RESPAWN_PAUSE_S * 2.0 ** min(failed - 1, 32), RESPAWN_MAX_S)
        if failed == 1:
            log.error(
                "the worker process cannot load the app %r: %s. The node claims nothing until "
                "one can, keeps its lease, and starts another after pauses that grow to %gs: "
                "fix the app or its environment on this host (files, PYTHONPATH, installed "
                "packages), or stop the node",
                self.app_spec,
                cause.rstrip("."),
                RESPAWN_MAX_S,
            )
        elif failed & (failed - 1) == 0:
            log.warning(
                "the worker process still cannot load the app %r (%d attempts): %s; "
                "next attempt in %gs",
                self.app_spec,
                failed,
                cause,
                pause_s,
            )
        return pause_s

    def _await_lease(self) -> None:
        """Wait until the node's lease is renewed past the margin, or the pool shuts down."""
        while time.monotonic() > self._lease.value - LEASE_MARGIN_S:
            if self._closed.wait(POLL_S):
                return

    # -- suspects, one at a time ------------------------------------------------------------------

    def _run_alone(self, suspects: list[Work]) -> None:
        """Run each job that was running when the child died in a process of its own."""
        log.warning(
            "running jobs %s again one at a time, each in a process of its own, to find the one "
            "that ends its process",
            ", ".join(str(w.job_id) for w in suspects),
        )
        with self._lock:
            for work in suspects:
                self._deaths.pop(work.job_id, None)
                self._suspects[work.job_id] = work
                self._queue.append(work)
            if self._solo is None:
                # It gives nothing back when the node dies: the child does (see give_back_unbegun).
                self._solo = ProcessExecutor(self.app_spec, 1, self.db_url, give_back=False)
                self._solo.renew_lease(self._lease.value)
                threading.Thread(target=self._forward_solo, args=(self._solo,), daemon=True).start()
            self._feed_solo()

    def _forward_solo(self, solo: ProcessExecutor) -> None:
        while True:
            event = solo.events.get()
            if isinstance(event, Finished) and not self._solo_done(event.job_id):
                continue  # withdrawn or settled meanwhile
            self.events.put(event)

    def _solo_done(self, job_id: int) -> bool:
        """A job that ran alone finished; give the solo process the next. False if it was not
        one of the suspects (withdrawn, or already settled)."""
        with self._lock:
            found = self._suspects.pop(job_id, None) is not None
            self._feed_solo()
        return found

    def _feed_solo(self) -> None:
        """Holds the lock."""
        solo = self._solo
        if solo is not None and self._queue and solo.free_slots() > 0 and not self._closing:
            solo.submit(self._queue.popleft())
