"""What a node's loop carries from one turn to the next, and the turn's work on jobs.

A `NodeLoop` lives for one registration: jobs held, outcomes and progress not yet written,
timers, whether a pause is draining. Its methods do the job side of a turn (take worker
events, write outcomes in batches, flush progress, claim for free slots, pass cancel requests
on to the attempts, reconcile with the datastore); `Node.step` decides when each runs. A node
declared dead drops its loop whole and starts a new one when it registers again, so nothing of
the old registration leaks into the new.
"""

from __future__ import annotations

import logging
import queue
import time
from collections import deque
from dataclasses import dataclass, field

from shoal.app import DEFAULT_CANCEL_GRACE_S, App
from shoal.errors import DatastoreUnavailable
from shoal.model import Job, JobState, NodeState, Outcome, ProgressUpdate
from shoal.node.config import NodeConfig
from shoal.node.executor import Executor
from shoal.node.reconcile import RecentOutcomes, reconcile
from shoal.node.runner import (
    Finished,
    ProgressEvent,
    RetryPolicy,
    Work,
    cancelled_outcome,
    outcome_for,
    progress_text,
)
from shoal.node.services import Housekeeping
from shoal.store import Store

log = logging.getLogger("shoal.node")


RETRY_MIN_S = 0.05  # the first pause after a refused write
RETRY_MAX_S = 2.0  # the longest: the lease (5 s by default) outlasts it by far


@dataclass
class Backoff:
    """Pauses between tries of one kind of write the datastore refuses (down, a full disk).

    Each kind (outcomes, progress, claims) has its own, so a claim that succeeds does not cut
    short the pause of outcomes that still cannot be written.
    """

    retry_after: float = 0.0  # monotonic: no try before this
    delay_s: float = 0.0

    def active(self) -> bool:
        """Whether the last try was refused a moment ago and the pause has not run out."""
        return time.monotonic() < self.retry_after

    def remaining_s(self) -> float:
        return max(self.retry_after - time.monotonic(), 0.0)

    def refused(self) -> float:
        """Note a refused try; returns the pause before the next one."""
        self.delay_s = min(max(self.delay_s * 2, RETRY_MIN_S), RETRY_MAX_S)
        self.retry_after = time.monotonic() + self.delay_s
        return self.delay_s

    def succeeded(self) -> None:
        self.delay_s = 0.0
        self.retry_after = 0.0


@dataclass
class Held:
    job: Job
    retry: RetryPolicy
    cancel_grace_s: float = DEFAULT_CANCEL_GRACE_S
    cancel_requested: bool = False  # its attempt was told; it ends cancelled, never retried
    timeout_s: float | None = None  # the task's own time limit, for a job without one
    claimed_at: float = 0.0  # monotonic: when the claim took it


@dataclass(frozen=True)
class Sizing:
    """How the node sizes its next claim or hand-over, from the expected run time."""

    prefetch: int  # jobs to hold beyond the running ones
    tiny: bool  # handed to the workers beyond the free ones, so that none idles for a claim
    unrecorded: bool  # tiny, and handed over before their start is recorded

    @property
    def beyond(self) -> int:
        """How many jobs may be handed over beyond the free workers: all those held when jobs
        are tiny; none for others, which are handed over exactly when a worker is free."""
        return self.prefetch if self.tiny else 0


@dataclass
class NodeLoop:
    app: App
    store: Store
    config: NodeConfig
    node_id: int
    executor: Executor
    housekeeping: Housekeeping
    idle_poll_s: float  # how long an idle turn waits for events
    interruptions_seen: int
    # Timers, in the monotonic time passed to `Node.step`.
    last_flush: float
    last_beat: float
    last_check: float
    idle_since: float
    held: dict[int, Held] = field(default_factory=dict)
    outcomes: list[Outcome] = field(default_factory=list)  # finished, not yet written
    progress: dict[int, ProgressUpdate] = field(default_factory=dict)  # latest, not yet written
    recent: RecentOutcomes = field(default_factory=RecentOutcomes)
    avg_run_s: float | None = None
    last_load_check: float = 0.0
    last_cancel_check: float = 0.0
    last_stranded_check: float = 0.0
    # While the datastore refuses writes (down, a full disk): a pause doubling up to
    # RETRY_MAX_S between tries, so a refused write is neither retried nor logged thousands
    # of times a second.
    outcome_backoff: Backoff = field(default_factory=Backoff)
    progress_backoff: Backoff = field(default_factory=Backoff)
    claim_backoff: Backoff = field(default_factory=Backoff)
    start_backoff: Backoff = field(default_factory=Backoff)
    # Jobs claimed ahead (state `claimed`), in claim order: held here, charged nothing, until a
    # worker is free and their start is recorded (`start_ahead`).
    ahead: deque[int] = field(default_factory=deque)
    # Tiny jobs handed to the workers while still `claimed`, their start not recorded (see
    # `NodeConfig.start_ahead_s`): it is recorded with the outcome, or by `record_starts` once
    # one has run longer than a tiny job would.
    unrecorded: set[int] = field(default_factory=set)
    draining: bool = False  # a pause was requested: no claims until the held jobs are done
    drain_deadline: float | None = None  # set when a stop begins
    # Per task name, what holding one of its jobs takes from the task's options (see `terms_of`).
    terms: dict[str, tuple[RetryPolicy, float, float | None]] = field(default_factory=dict)

    def take_events(self, block_s: float) -> None:
        """Take every event the workers reported; wait up to `block_s` for the first one."""
        events = self.executor.events
        try:
            event = events.get(timeout=block_s) if block_s > 0 else events.get_nowait()
        except queue.Empty:
            return
        while True:
            if isinstance(event, ProgressEvent):
                if event.job_id in self.held:
                    self.progress[event.job_id] = progress_update(event)
            elif isinstance(event, Finished) and event.job_id in self.held:
                self.outcomes.append(self.finish(event))
                run_s = event.duration_s
                self.avg_run_s = (
                    run_s if self.avg_run_s is None else 0.9 * self.avg_run_s + 0.1 * run_s
                )
            try:
                event = events.get_nowait()
            except queue.Empty:
                return

    def finish(self, finished: Finished) -> Outcome:
        ran_s = None
        if finished.job_id in self.unrecorded:  # its start is recorded with its end
            self.unrecorded.discard(finished.job_id)
            ran_s = max(finished.duration_s, 0.0)
        held = self.held[finished.job_id]
        if held.cancel_requested:
            log.info(
                "job %d (%s) attempt %d ended after a cancel request: %s",
                finished.job_id,
                held.job.task,
                finished.attempt,
                finished.error or "the task finished",
            )
            return cancelled_outcome(finished, ran_s)
        outcome = outcome_for(
            finished, held.job.max_attempts, held.retry, self.config.max_backoff_s, ran_s
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

    def wait_s(self) -> float:
        """How long an idle turn may wait: at once with outcomes to write, unless backing off;
        while jobs run here, no longer than the next look for cancel requests."""
        if not self.outcomes:
            if self.held:
                return min(self.idle_poll_s, self.config.cancel_check_s)
            return self.idle_poll_s
        if self.outcome_backoff.active():
            return min(self.idle_poll_s, self.outcome_backoff.remaining_s())
        return 0.0

    def write_outcomes(self) -> None:
        if not self.outcomes or self.outcome_backoff.active():
            return
        batch = self.outcomes
        try:
            applied = self.store.finish_jobs(self.node_id, batch)
        except DatastoreUnavailable as exc:
            pause = self.outcome_backoff.refused()
            log.warning(
                "cannot record %d outcomes yet (%s); retrying in %.2fs", len(batch), exc, pause
            )
            return
        self.outcome_backoff.succeeded()
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

    def write_progress(self) -> None:
        if not self.progress or self.progress_backoff.active():
            return
        updates = list(self.progress.values())
        try:
            self.store.record_progress(self.node_id, updates)
        except DatastoreUnavailable as exc:
            pause = self.progress_backoff.refused()
            log.warning("cannot record progress yet (%s); retrying in %.2fs", exc, pause)
            return
        self.progress_backoff.succeeded()
        self.progress.clear()

    def check_cancels(self, now: float) -> None:
        """While jobs run here, at most every `cancel_check_s`: read their cancel requests and
        tell each attempt once (its grace counts from then)."""
        if not self.held or now - self.last_cancel_check < self.config.cancel_check_s:
            return
        self.last_cancel_check = now
        try:
            requests = self.store.read_cancel_requests(self.node_id)
        except DatastoreUnavailable as exc:
            log.debug("cannot read cancel requests yet (%s)", exc)
            return
        for request in requests:
            held = self.held.get(request.job_id)
            if held is None or held.cancel_requested or held.job.attempts != request.attempt:
                continue
            held.cancel_requested = True
            log.info(
                "job %d (%s): cancel requested by %s; stopping it (grace %gs)",
                request.job_id,
                held.job.task,
                request.requested_by or "someone",
                held.cancel_grace_s,
            )
            self.executor.cancel(request.job_id, held.cancel_grace_s)

    def reconcile(self) -> bool:
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

    def expected_run_s(self) -> float | None:
        """How long the next job is expected to take: the recent average, or longer while a
        running attempt has already outlasted it (an average of tiny jobs says nothing of the
        slow one now running). None before any job ran here, and for the process pool, which
        holds nothing beyond its workers."""
        if self.config.pool == "process" or self.avg_run_s is None:
            return None
        return max(self.avg_run_s, self.executor.longest_running_s(), 1e-5)

    def prefetch(self) -> int:
        """How many jobs to hold beyond the running ones: many for tiny jobs, none for slow ones
        (claiming a thousand jobs behind a slow one would hold them from nodes with free slots).
        """
        return self.sizing().prefetch

    def sizing(self) -> Sizing:
        """What the expected run time (read once: it looks at every running attempt) makes of
        the next claim or hand-over: how many jobs to hold beyond the running ones, and whether
        jobs are tiny (see `NodeConfig.start_ahead_s`)."""
        expected_s = self.expected_run_s()
        if expected_s is None:
            return Sizing(0, False, False)
        room = self.config.concurrency * self.config.prefetch_budget_s / expected_s
        tiny = expected_s <= self.config.start_ahead_s
        # Tiny jobs go to the workers before their start is recorded, except when tasks run in
        # the node's own process (`--pool inline`): one that killed it would go back as if it had
        # never run, and kill node after node, never charged. There tiny jobs start as they are
        # claimed instead, charged while they wait for a thread.
        unrecorded = tiny and self.executor.outlives_node
        return Sizing(int(min(self.config.max_prefetch, room)), tiny, unrecorded)

    def return_stale(self) -> None:
        """Give back the jobs claimed ahead once the oldest has waited too long for a worker, and
        any handed to the workers that none has begun (a worker process restarting): queued
        again, they go to whichever node has a free slot first (this one included)."""
        waited_s = self.executor.unstarted_wait_s()  # handed over, no worker yet (one restarting)
        if self.ahead:
            waited_s = max(waited_s, time.monotonic() - self.held[self.ahead[0]].claimed_at)
        if waited_s <= self.config.max_unstarted_wait_s:
            return
        log.debug("giving back jobs claimed ahead: the oldest waited %.2fs for a worker", waited_s)
        self.release_unstarted()

    def start_ahead(self) -> None:
        """Start jobs claimed ahead on the workers that are free. The start is recorded first
        (the attempt charged, `started_at` stamped) and the job handed to a worker after, so no
        attempt is charged that did not begin. Tiny jobs are handed over at once, still
        claimed: their start is recorded once they begin (`record_starts`, `finish`)."""
        if not self.ahead:
            return
        sizing = self.sizing()
        beyond = sizing.beyond
        free = min(self.executor.free_slots(beyond), len(self.ahead))
        if free <= 0:
            return
        if beyond and sizing.unrecorded:
            self._hand_unrecorded([self.ahead.popleft() for _ in range(free)])
            return
        if self.start_backoff.active():
            return
        ids = [self.ahead.popleft() for _ in range(free)]
        try:
            started = self.store.start_jobs(self.node_id, ids)
        except DatastoreUnavailable as exc:
            self.ahead.extendleft(reversed(ids))
            pause = self.start_backoff.refused()
            log.warning("cannot start jobs claimed ahead (%s); retrying in %.2fs", exc, pause)
            return
        self.start_backoff.succeeded()
        begun = {job.id: job for job in started}
        works = []
        for job_id in ids:
            held = self.held.get(job_id)
            job = begun.get(job_id)
            if held is None:
                continue
            if job is None:  # cancelled meanwhile, or requeued: this node was presumed dead
                del self.held[job_id]
                log.info("job %d was cancelled or taken back before a worker started it", job_id)
                continue
            held.job = job
            works.append(Work.of(job, held.timeout_s))
        self.executor.submit_many(works)

    def _hand_unrecorded(self, job_ids: list[int]) -> None:
        """Hand claimed jobs to the workers before their start is recorded (tiny ones)."""
        works = []
        for job_id in job_ids:
            held = self.held.get(job_id)
            if held is not None:
                self.unrecorded.add(job_id)
                works.append(Work.of(held.job, held.timeout_s))
        self.executor.submit_many(works)

    def record_starts(self) -> None:
        """Record the start of tiny jobs handed over unrecorded that have run longer than a
        tiny job would: from then on they show `running`, their attempt charged, as every job
        a worker runs for long does. The others' starts are recorded with their outcomes."""
        if not self.unrecorded or self.start_backoff.active():
            return
        begun = self.executor.begun_for(self.config.start_ahead_s)
        ids = [job_id for job_id in begun if job_id in self.unrecorded]
        if not ids:
            return
        try:
            started = self.store.start_jobs(self.node_id, ids)
        except DatastoreUnavailable as exc:
            pause = self.start_backoff.refused()
            log.warning(
                "cannot record the start of running jobs (%s); retrying in %.2fs", exc, pause
            )
            return
        self.start_backoff.succeeded()
        begun_jobs = {job.id: job for job in started}
        for job_id in ids:
            self.unrecorded.discard(job_id)
            held = self.held.get(job_id)
            if held is None:
                continue
            job = begun_jobs.get(job_id)
            if job is None:  # cancelled meanwhile, or requeued: this node was presumed dead
                log.info("job %d was cancelled or taken back while it ran; stopping it", job_id)
                self.executor.cancel(job_id, held.cancel_grace_s)
                continue
            held.job = job

    def claim(self, state: NodeState) -> NodeState:
        """Claim jobs for the free slots, and a few ahead; returns the node's state after."""
        free = self.executor.free_slots(0)
        if free <= 0 and not self.executor.running():
            return state  # no worker at all (a worker process restarting): nothing to claim for
        sizing = self.sizing()
        prefetch, unrecorded = sizing.prefetch, sizing.unrecorded
        startable = self.executor.free_slots(sizing.beyond) - len(self.ahead)
        room = free + prefetch - len(self.ahead)
        if room <= 0:
            return state
        if (
            room < (self.config.concurrency + prefetch) // 2
            and len(self.held) > self.config.concurrency
        ):
            return state  # enough work is here; claim again in a bigger batch
        if self.claim_backoff.active():
            return state
        try:
            # Tiny jobs start nothing at claim: they go to the workers still claimed.
            start = 0 if unrecorded else max(startable, 0)
            jobs = self.store.claim_jobs(self.node_id, room, start=start)
        except DatastoreUnavailable as exc:
            log.warning(
                "cannot claim jobs (%s); retrying in %.2fs", exc, self.claim_backoff.refused()
            )
            return state
        self.claim_backoff.succeeded()
        return self._take(jobs, state, unrecorded=max(startable, 0) if unrecorded else 0)

    def _take(self, jobs: list[Job], state: NodeState, unrecorded: int = 0) -> NodeState:
        """Hold claimed jobs: those started go to the workers, and so do the first `unrecorded`
        of those claimed ahead (tiny jobs, still claimed); the others wait for a worker.
        Returns the node's state after the claim."""
        now = time.monotonic()
        works = []
        for job in jobs:
            retry, grace_s, timeout_s = self.terms_of(job.task)
            held = Held(job, retry, grace_s, timeout_s=timeout_s, claimed_at=now)
            self.held[job.id] = held
            if job.state is JobState.RUNNING:
                works.append(Work.of(job, timeout_s))
            elif unrecorded > 0:
                unrecorded -= 1
                self.unrecorded.add(job.id)
                works.append(Work.of(job, timeout_s))
            else:
                self.ahead.append(job.id)
        self.executor.submit_many(works)  # the started ones, in one hand-over
        # The datastore moves a waiting node to working with its first claim.
        return NodeState.WORKING if jobs and state is NodeState.WAITING else state

    def terms_of(self, task_name: str) -> tuple[RetryPolicy, float, float | None]:
        """A task's retry policy, cancel grace and time limit, read from its options once
        (an app's tasks are fixed for the node's life); the defaults for a task it lacks."""
        terms = self.terms.get(task_name)
        if terms is None:
            task = self.app.tasks.get(task_name)
            options = task.options if task else None
            grace_s = options.cancel_grace_s if options else DEFAULT_CANCEL_GRACE_S
            timeout_s = options.timeout_s if options else None
            terms = self.terms[task_name] = (RetryPolicy.of(options), grace_s, timeout_s)
        return terms

    def claim_stranded(self, now: float, state: NodeState) -> NodeState:
        """At most every `stranded_check_s`, with a worker idle: claim jobs that wait in other
        sections for a task their owner lacks and this node has (a rolling deploy; see
        `Store.claim_stranded`). Returns the node's state after the claim."""
        cfg = self.config
        if not cfg.stranded_check_s or now - self.last_stranded_check < cfg.stranded_check_s:
            return state
        free = self.executor.free_slots(0) - len(self.ahead)
        if free <= 0 or self.claim_backoff.active():
            return state
        self.last_stranded_check = now
        try:
            jobs = self.store.claim_stranded(self.node_id, free, start=free)
        except DatastoreUnavailable as exc:
            log.debug("cannot look for jobs waiting for this node's tasks yet (%s)", exc)
            return state
        if jobs:
            log.info(
                "took %d jobs waiting in other sections for tasks their owner lacks (%s)",
                len(jobs),
                ", ".join(sorted({j.task for j in jobs})),
            )
        return self._take(jobs, state)

    def follow_load(self, now: float) -> bool:
        """While a worker is idle, at most every `load_check_s`: lend this node the backlog that
        waits behind busy nodes, and give loans back as load evens out (`Store.follow_load`).
        True if partitions moved, so the node should claim again at once."""
        cfg = self.config
        if not cfg.load_check_s or now - self.last_load_check < cfg.load_check_s:
            return False
        if self.executor.free_slots(0) <= len(self.ahead):
            return False
        self.last_load_check = now
        try:
            moved = self.store.follow_load()
        except DatastoreUnavailable as exc:
            log.debug("cannot check the load yet (%s)", exc)
            return False
        if moved:
            log.debug("load: %d partitions moved", moved)
        return moved > 0

    def release_unstarted(self) -> None:
        """Give back jobs claimed ahead, and any a worker has not begun (pausing, stopping, or
        waiting too long here)."""
        waiting = [*self.ahead, *self.executor.take_unstarted()]
        self.ahead.clear()
        if not waiting:
            return
        for job_id in waiting:
            self.held.pop(job_id, None)
            self.unrecorded.discard(job_id)
        try:
            self.store.release_jobs(self.node_id, waiting)
        except DatastoreUnavailable as exc:
            log.warning("could not release %d unstarted jobs (%s)", len(waiting), exc)


def progress_update(event: ProgressEvent) -> ProgressUpdate:
    """The update to write for a progress report, its message made storable whatever a worker
    sent (a pool process reports through a pipe)."""
    message = None if event.message is None else progress_text(str(event.message))
    return ProgressUpdate(event.job_id, event.attempt, event.fraction, message)


def _some(ids: list[int], shown: int = 10) -> str:
    """A few ids for a log line: "1, 2, 3" or "1, 2, ... (40 in all)"."""
    head = ", ".join(str(i) for i in ids[:shown])
    return head if len(ids) <= shown else f"{head}, ... ({len(ids)} in all)"
