"""Where attempts run: a pool of worker threads (the default) feeding one event queue.

The node's main thread submits work and reads events (progress, finished) from the queue; the
workers never touch the datastore. A worker stuck past its job's time limit gets a JobTimeout
raised inside it and is abandoned: a fresh thread takes its slot so the node keeps its capacity,
and whatever the stuck thread returns later is ignored. An attempt whose job was asked to cancel
sees `shoal.cancelled()` turn True; one still running past its cancel grace is abandoned the same
way, with `Cancelled` raised inside it (a thread cannot be killed); one no worker has started is
withdrawn at once. A task blocked in C code never sees the exception raised in it, so abandoned
threads are counted: past a cap the executor offers no free slots (the node stops claiming, and
says why) until some of them return. Every attempt a worker takes
ends in a report, whatever fails on the way, and a worker thread that ends for any reason but
a shutdown or an abandonment is replaced: no slot is ever lost.
"""

from __future__ import annotations

import ctypes
import logging
import queue
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from shoal.app import App
from shoal.errors import Cancelled
from shoal.node.eventqueue import EventQueue
from shoal.node.runner import (
    NOT_STARTED,
    Finished,
    JobTimeout,
    ProgressEvent,
    Work,
    describe,
    execute,
    not_stopped,
    timed_out,
)

log = logging.getLogger("shoal.node")


class Wake:
    """Put on the event queue when work may have arrived (a datastore notification)."""


Event = ProgressEvent | Finished | Wake


class StartMarks(Protocol):
    """Told when a worker thread starts an attempt and when it ends (a worker process records
    them where its parent can read them after it died)."""

    def started(self, job_id: int) -> int: ...
    def ended(self, mark: int) -> None: ...


class Executor(Protocol):
    events: queue.SimpleQueue[Event]
    # Whether what runs the tasks outlives the node's process (a worker process), so that a
    # node killed while tiny jobs run unrecorded still has them recorded as begun (see
    # `give_back_unbegun`). Only then does a node hand jobs over before recording their start.
    outlives_node: bool

    def submit(self, work: Work) -> None: ...
    def submit_many(self, works: Sequence[Work]) -> None: ...
    def free_slots(self, prefetch: int = 0) -> int: ...
    def take_unstarted(self) -> list[int]: ...
    def unstarted_wait_s(self) -> float: ...
    def longest_running_s(self) -> float: ...
    def begun_for(self, at_least_s: float) -> list[int]: ...
    def running(self) -> list[int]: ...
    def expire(self, now_mono: float) -> list[Finished]: ...
    def cancel(self, job_id: int, grace_s: float) -> None: ...
    def renew_lease(self, until_mono: float) -> None: ...
    def serve_node(self, node_id: int) -> None: ...
    def unavailable(self) -> str | None: ...
    def shutdown(self) -> None: ...


# What a thread left running is told as it is abandoned.
_ABANDONED = "its worker thread was abandoned (a thread cannot be killed)"
# Exceptions raised inside a worker thread from outside it, as its attempt is abandoned.
_RAISED_IN = (JobTimeout, Cancelled)


@dataclass
class _Slot:
    work: Work
    deadline: float | None
    accepted_at: float  # monotonic: when the node handed it over
    started_at: float = 0.0  # monotonic: when a worker took it (0 while it waits)
    thread: int = 0
    abandoned: bool = field(default=False)
    # Asked to cancel. A flag, not a threading.Event: nothing waits on it (the task polls
    # `shoal.cancelled()`), and making an Event for every job cost a worker process a quarter
    # of its CPU on tiny jobs.
    cancel_requested: bool = False
    cancel_deadline: float | None = None  # past it, the attempt is abandoned
    cancel_grace_s: float = 0.0

    def is_cancelled(self) -> bool:
        return self.cancel_requested

    def overrun(self, now_mono: float) -> tuple[type[BaseException], str] | None:
        """What to raise in a started attempt past its cancel grace or time limit, and its
        error; None while it may run on."""
        if not self.thread:
            return None
        if self.cancel_deadline is not None and now_mono > self.cancel_deadline:
            return Cancelled, not_stopped(self.cancel_grace_s, _ABANDONED)
        if self.deadline is not None and now_mono > self.deadline:
            return JobTimeout, timed_out(self.work.timeout_s)
        return None


# Abandoned threads a node tolerates, per worker slot, before it stops claiming: each holds
# whatever its stuck task holds (memory, a socket), so their number must not grow without bound.
ABANDONED_PER_SLOT = 2
# Attempts begun unrecorded that a worker process keeps, for `Store.record_begun` if its node
# dies: far more than the node takes per turn (it records their outcomes or starts every turn).
BEGUN_KEPT = 4096


class ThreadExecutor:
    # Threads of the node's own process: a task that kills it kills the node, and whatever began
    # unrecorded would go back as if it never ran, never counted against the job that did it.
    outlives_node = False

    def __init__(self, app: App, concurrency: int, marks: StartMarks | None = None) -> None:
        self.app = app
        self.concurrency = concurrency
        self.marks = marks
        self.max_abandoned = ABANDONED_PER_SLOT * concurrency
        self._abandoned = 0  # threads given up on at a time limit that have not returned yet
        self._stopping = False
        self.events: queue.SimpleQueue[Event] = EventQueue()
        self._todo: queue.SimpleQueue[Work | None] = queue.SimpleQueue()
        self._slots: dict[int, _Slot] = {}  # job id -> slot, for accepted work not yet finished
        # The latest attempts begun of work handed over unrecorded (job id -> attempt), ended
        # or not: whether the node recorded their outcome only the datastore knows. Ordered,
        # oldest first: a plain dict emptied from the front makes each next(iter()) walk the
        # holes left by earlier deletions.
        self._begun_unrecorded: OrderedDict[int, int] = OrderedDict()
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        for _ in range(concurrency):
            self._spawn()

    def _spawn(self) -> None:
        thread = threading.Thread(target=self._work, name="shoal-worker", daemon=True)
        self._threads.append(thread)
        thread.start()

    def submit(self, work: Work) -> None:
        with self._lock:
            # Kept in the order accepted (see `unstarted_wait_s`).
            self._slots.pop(work.job_id, None)
            self._slots[work.job_id] = _Slot(work, deadline=None, accepted_at=time.monotonic())
        self._todo.put(work)

    def submit_many(self, works: Sequence[Work]) -> None:
        for work in works:
            self.submit(work)

    def free_slots(self, prefetch: int = 0) -> int:
        """How many more attempts to accept: idle workers plus `prefetch` queued locally; none
        while too many abandoned threads are still stuck in their tasks."""
        with self._lock:
            if self._abandoned >= self.max_abandoned:
                return 0
            return self.concurrency + prefetch - len(self._slots)

    @property
    def abandoned(self) -> int:
        """Threads abandoned at a time limit whose task has not returned yet."""
        with self._lock:
            return self._abandoned

    def take_unstarted(self) -> list[int]:
        """Withdraw accepted attempts that no worker has started; return their job ids."""
        with self._lock:
            waiting = [job_id for job_id, slot in self._slots.items() if not slot.thread]
            for job_id in waiting:
                del self._slots[job_id]
        return waiting

    def unstarted_wait_s(self) -> float:
        """How long the oldest accepted attempt no worker has started has waited (0 if none).
        Slots are in the order accepted and workers take them in that order, so the first one
        not started is the oldest: the walk passes the running ones only (asked every turn, it
        must not walk a thousand jobs prefetched)."""
        now = time.monotonic()
        with self._lock:
            for slot in self._slots.values():
                if not slot.thread:
                    return now - slot.accepted_at
        return 0.0

    def longest_running_s(self) -> float:
        """How long the oldest attempt a worker is running has run so far (0 if none)."""
        now = time.monotonic()
        with self._lock:
            ages = [now - s.started_at for s in self._slots.values() if s.thread]
        return max(ages, default=0.0)

    def begun_unrecorded(self) -> list[tuple[int, int]]:
        """The latest attempts (job id, attempt) a worker began of work handed over unrecorded
        (`Work.unrecorded`), at most BEGUN_KEPT, whether or not they ended since."""
        with self._lock:
            return list(self._begun_unrecorded.items())

    def _note_begun(self, work: Work) -> None:
        """Keep an attempt begun unrecorded (under the lock), forgetting the oldest past
        BEGUN_KEPT: by then the node has long recorded it one way or another."""
        kept = self._begun_unrecorded
        kept.pop(work.job_id, None)
        kept[work.job_id] = work.attempt
        if len(kept) > BEGUN_KEPT:
            kept.popitem(last=False)

    def begun_for(self, at_least_s: float) -> list[int]:
        """The jobs whose attempt a worker began at least `at_least_s` ago and still runs."""
        now = time.monotonic()
        with self._lock:
            return [
                job_id
                for job_id, s in self._slots.items()
                if s.thread and now - s.started_at >= at_least_s
            ]

    def running(self) -> list[int]:
        with self._lock:
            return list(self._slots)

    def expire(self, now_mono: float) -> list[Finished]:
        """Abandon attempts past their time limit or cancel grace; return their reports."""
        out = []
        with self._lock:
            late = [(s, why) for s in self._slots.values() if (why := s.overrun(now_mono))]
            for slot, (raised, error) in late:
                del self._slots[slot.work.job_id]
                slot.abandoned = True
                self._abandoned += 1
                _raise_in_thread(slot.thread, raised)
                out.append(Finished(slot.work.job_id, slot.work.attempt, False, error=error))
            abandoned = self._abandoned
        for _, (raised, _) in late:
            limit = "cancel grace" if raised is Cancelled else "time limit"
            log.warning("a task ran past its %s; its worker thread was replaced", limit)
            self._spawn()
        if late and abandoned >= self.max_abandoned:
            log.error(
                "not claiming: %d worker threads are stuck in tasks past their time limit "
                "(at most %d); claims resume as they return",
                abandoned,
                self.max_abandoned,
            )
        return out

    def cancel(self, job_id: int, grace_s: float) -> None:
        """Tell the job's attempt it was asked to cancel; it is abandoned if still running
        `grace_s` later. An attempt no worker has started is withdrawn and reported at once."""
        with self._lock:
            slot = self._slots.get(job_id)
            if slot is None or slot.cancel_requested:
                return
            slot.cancel_requested = True
            if slot.thread:
                slot.cancel_grace_s = grace_s
                slot.cancel_deadline = time.monotonic() + grace_s
                return
            del self._slots[job_id]  # the worker that takes it finds no slot and skips it
        self.events.put(Finished(job_id, slot.work.attempt, False, error=NOT_STARTED, final=True))

    def renew_lease(self, until_mono: float) -> None:
        """Nothing to do: these threads stop with the node's process, lease and all."""

    def serve_node(self, node_id: int) -> None:
        """Nothing to do: what these threads hold dies with the node's process."""

    def unavailable(self) -> str | None:
        """None: these threads run in the node's process, which loaded the app."""
        return None

    def shutdown(self) -> None:
        self._stopping = True
        for _ in self._threads:
            self._todo.put(None)

    def _work(self) -> None:
        """A worker's life: take attempts until shutdown; replaced if it ends any other way."""
        replace = True
        try:
            replace = self._take_attempts()
        finally:
            if replace and not self._stopping:
                log.error("a worker thread ended unexpectedly; starting a replacement")
                self._spawn()

    def _take_attempts(self) -> bool:
        """Run attempts one by one. False when the thread should end without a replacement."""
        while True:
            work = self._todo.get()
            if work is None:
                return False
            with self._lock:
                slot = self._slots.get(work.job_id)
                # Withdrawn (take_unstarted), or withdrawn and handed over again: the queue
                # still holds this stale copy, and only the slot's own work may run.
                if slot is None or slot.work is not work:
                    continue
                slot.thread = threading.get_ident()
                slot.started_at = time.monotonic()
                if work.unrecorded:
                    self._note_begun(work)
                # The time limit counts from the start of the attempt, not from the claim.
                if work.timeout_s is not None:
                    slot.deadline = time.monotonic() + work.timeout_s
            try:
                finished = _attempt(self.app, work, self.events.put, slot.is_cancelled, self.marks)
                with self._lock:
                    if slot.abandoned:
                        self._abandoned -= 1
                        return False  # a replacement thread took this slot
                    self._slots.pop(work.job_id, None)
            except _RAISED_IN:
                # Raised by expire() just as the attempt ended; it is already reported.
                with self._lock:
                    self._abandoned -= 1
                return False
            self.events.put(finished)


def _attempt(
    app: App,
    work: Work,
    report: Callable[[ProgressEvent], None],
    is_cancelled: Callable[[], bool],
    marks: StartMarks | None = None,
) -> Finished:
    """`execute`, which never raises for what a task does; if the machinery around it fails
    anyway, the attempt still ends failed with the reason, and the worker goes on. `marks`, if
    any, hears of the start and the end."""
    mark = None
    try:
        mark = marks.started(work.job_id) if marks is not None else None
        return execute(app, work, report, is_cancelled)
    except _RAISED_IN:
        raise
    except BaseException as exc:
        log.exception("job %d: the worker failed outside the task", work.job_id)
        return Finished(
            work.job_id, work.attempt, False, error=f"the worker failed: {describe(exc)}"
        )
    finally:
        if marks is not None and mark is not None:
            marks.ended(mark)


def _raise_in_thread(thread_id: int, raised: type[BaseException]) -> None:
    """Raise `raised` inside a thread at its next Python instruction."""
    ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread_id), ctypes.py_object(raised))
