"""Where attempts run: a pool of worker threads (the default) feeding one event queue.

The node's main thread submits work and reads events (progress, finished) from the queue; the
workers never touch the datastore. A worker stuck past its job's time limit gets a JobTimeout
raised inside it and is abandoned: a fresh thread takes its slot so the node keeps its capacity,
and whatever the stuck thread returns later is ignored.
"""

from __future__ import annotations

import ctypes
import logging
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Protocol

from shoal.app import App
from shoal.node.eventqueue import EventQueue
from shoal.node.runner import Finished, JobTimeout, ProgressEvent, Work, execute

log = logging.getLogger("shoal.node")


class Wake:
    """Put on the event queue when work may have arrived (a datastore notification)."""


Event = ProgressEvent | Finished | Wake


class Executor(Protocol):
    events: queue.SimpleQueue[Event]

    def submit(self, work: Work) -> None: ...
    def free_slots(self, prefetch: int = 0) -> int: ...
    def take_unstarted(self) -> list[int]: ...
    def running(self) -> list[int]: ...
    def expire(self, now_mono: float) -> list[Finished]: ...
    def shutdown(self) -> None: ...


@dataclass
class _Slot:
    work: Work
    deadline: float | None
    thread: int = 0
    abandoned: bool = field(default=False)


class ThreadExecutor:
    def __init__(self, app: App, concurrency: int) -> None:
        self.app = app
        self.concurrency = concurrency
        self.events: queue.SimpleQueue[Event] = EventQueue()
        self._todo: queue.SimpleQueue[Work | None] = queue.SimpleQueue()
        self._slots: dict[int, _Slot] = {}  # job id -> slot, for accepted work not yet finished
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
            self._slots[work.job_id] = _Slot(work, deadline=None)
        self._todo.put(work)

    def free_slots(self, prefetch: int = 0) -> int:
        """How many more attempts to accept: idle workers plus `prefetch` queued locally."""
        with self._lock:
            return self.concurrency + prefetch - len(self._slots)

    def take_unstarted(self) -> list[int]:
        """Withdraw accepted attempts that no worker has started; return their job ids."""
        with self._lock:
            waiting = [job_id for job_id, slot in self._slots.items() if not slot.thread]
            for job_id in waiting:
                del self._slots[job_id]
        return waiting

    def running(self) -> list[int]:
        with self._lock:
            return list(self._slots)

    def expire(self, now_mono: float) -> list[Finished]:
        """Stop attempts past their time limit; return their failure reports."""
        out = []
        with self._lock:
            late = [
                s
                for s in self._slots.values()
                if s.deadline is not None and now_mono > s.deadline and s.thread
            ]
            for slot in late:
                del self._slots[slot.work.job_id]
                slot.abandoned = True
                _raise_in_thread(slot.thread)
                out.append(
                    Finished(
                        slot.work.job_id,
                        slot.work.attempt,
                        False,
                        error=f"timed out after {slot.work.timeout_s}s (task stopped)",
                    )
                )
        for _ in late:
            log.warning("a task ran past its time limit; its worker thread was replaced")
            self._spawn()
        return out

    def shutdown(self) -> None:
        for _ in self._threads:
            self._todo.put(None)

    def _work(self) -> None:
        while True:
            work = self._todo.get()
            if work is None:
                return
            with self._lock:
                slot = self._slots.get(work.job_id)
                if slot is None:
                    continue
                slot.thread = threading.get_ident()
                # The time limit counts from the start of the attempt, not from the claim.
                if work.timeout_s is not None:
                    slot.deadline = time.monotonic() + work.timeout_s
            try:
                finished = execute(self.app, work, self.events.put)
                with self._lock:
                    if slot.abandoned:
                        return  # a replacement thread took this slot
                    self._slots.pop(work.job_id, None)
            except JobTimeout:
                return  # raised by expire() just as the attempt ended; it is already reported
            self.events.put(finished)


def _raise_in_thread(thread_id: int) -> None:
    """Raise JobTimeout inside a thread at its next Python instruction."""
    ctypes.pythonapi.PyThreadState_SetAsyncExc(
        ctypes.c_ulong(thread_id), ctypes.py_object(JobTimeout)
    )
