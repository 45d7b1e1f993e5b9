"""Attempts in worker processes, for CPU-bound tasks (`shoal node --pool process`).

Each worker is a separate Python process (spawned, not forked, so it never inherits the node's
datastore connection) that imports the app by its 'module:attribute' reference and runs one
attempt at a time. Only plain values cross the pipe: the job's JSON text in, JSON text out. A
worker past its job's time limit is killed and replaced; one that dies on its own is reported as a
failed attempt and replaced.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import queue
import threading
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

from shoal.node.executor import Event
from shoal.node.runner import Finished, ProgressEvent, Work, execute

log = logging.getLogger("shoal.node")


def _worker_main(app_spec: str, conn: Connection) -> None:
    import signal

    from shoal.app import load_app

    # The node handles SIGINT/SIGTERM and decides when workers stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    app = load_app(app_spec)

    def report(event: ProgressEvent) -> None:
        conn.send(("progress", event.job_id, event.attempt, event.fraction, event.message))

    while True:
        message = conn.recv()
        if message is None:
            return
        work = Work(*message)
        f = execute(app, work, report)
        conn.send(("done", f.job_id, f.attempt, f.ok, f.result_json, f.error, f.traceback, f.final))


@dataclass
class _Worker:
    process: Any  # multiprocessing.Process (spawn context)
    conn: Connection
    work: Work | None = None
    deadline: float | None = None


class ProcessExecutor:
    def __init__(self, app_spec: str, concurrency: int, db_display: str = "") -> None:
        self.app_spec = app_spec
        self.concurrency = concurrency
        self.events: queue.SimpleQueue[Event] = queue.SimpleQueue()
        self._ctx = multiprocessing.get_context("spawn")
        self._lock = threading.Lock()
        self._workers: list[_Worker] = [self._spawn() for _ in range(concurrency)]
        self._closing = False

    def _spawn(self) -> _Worker:
        parent, child = self._ctx.Pipe()
        process = self._ctx.Process(
            target=_worker_main, args=(self.app_spec, child), name="shoal-worker", daemon=True
        )
        process.start()
        child.close()
        worker = _Worker(process, parent)
        threading.Thread(target=self._read, args=(worker,), daemon=True).start()
        return worker

    def submit(self, work: Work) -> None:
        with self._lock:
            worker = next(w for w in self._workers if w.work is None)
            worker.work = work
            worker.deadline = None if work.timeout_s is None else time.monotonic() + work.timeout_s
        worker.conn.send(
            (work.job_id, work.attempt, work.task, work.args_json, work.kwargs_json, work.timeout_s)
        )

    def free_slots(self, prefetch: int = 0) -> int:
        """Idle workers. A process pool does not prefetch: its tasks are long by nature."""
        with self._lock:
            return sum(1 for w in self._workers if w.work is None)

    def take_unstarted(self) -> list[int]:
        return []  # work goes straight to an idle worker, so nothing waits locally

    def running(self) -> list[int]:
        with self._lock:
            return [w.work.job_id for w in self._workers if w.work is not None]

    def expire(self, now_mono: float) -> list[Finished]:
        out = []
        with self._lock:
            for i, w in enumerate(self._workers):
                if w.work is not None and w.deadline is not None and now_mono > w.deadline:
                    out.append(
                        Finished(
                            w.work.job_id,
                            w.work.attempt,
                            False,
                            error=f"timed out after {w.work.timeout_s}s (worker process killed)",
                        )
                    )
                    w.work = None
                    w.process.kill()
                    self._workers[i] = self._spawn()
        return out

    def shutdown(self) -> None:
        self._closing = True
        with self._lock:
            workers = list(self._workers)
        for w in workers:
            with contextlib.suppress(OSError):
                w.conn.send(None)
        for w in workers:
            w.process.join(timeout=5)
            if w.process.is_alive():
                w.process.kill()

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
            with self._lock:
                worker.work = None
                worker.deadline = None
            self.events.put(Finished(*message[1:]))

    def _on_exit(self, worker: _Worker) -> None:
        with self._lock:
            if worker not in self._workers or self._closing:
                return  # killed on purpose (time limit) or shutting down
            work, worker.work = worker.work, None
            self._workers[self._workers.index(worker)] = self._spawn()
        worker.process.join(timeout=1)
        log.warning("a worker process exited (code %s); replaced", worker.process.exitcode)
        if work is not None:
            self.events.put(
                Finished(
                    work.job_id,
                    work.attempt,
                    False,
                    error=f"worker process died (exit code {worker.process.exitcode})",
                )
            )
