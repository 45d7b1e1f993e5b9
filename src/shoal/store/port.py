"""The storage interface: every operation Shoal needs from a datastore, as domain operations.

Each adapter (`sqlite/`, `postgres/`) implements `Store` and must pass the one conformance suite
in `tests/store`. The docstrings are the contract; a rule every adapter keeps alike is written
here once (the transition check in `set_node_state`) or in the pure core beside this module
(`rules`, `texts`, `migrations`). Capabilities are declared here, with defaults, for the node and
the conformance suite to ask instead of probing. Shared rules for every adapter:

- Every timestamp read or written is in datastore time (`now()` of the database).
- Each operation is one short transaction; none is left open between calls.
- Driver errors are turned into `ShoalError` subclasses before they escape; a momentary lock or a
  lost connection is retried inside the adapter, never surfaced as a job failure.
- Writes by a node about a job are fenced by (claimer, attempt): they apply only while the job is
  still `running` under that claim, and report whether they applied.
- Every change of membership (a node becomes eligible or stops being eligible for a section)
  rebalances the partitions in the same transaction, bumps the epoch and records history.
- Job counts by (task, state) are kept in counter rows that every statement changing a job's
  state adjusts in the same transaction, so reading them costs the same at any table size. They
  count the rows stored: deleting a job (retention) counts it out in the same transaction.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass

from shoal import load, states
from shoal.load import LoadPolicy, Move
from shoal.model import (
    CancelRequest,
    CancelResult,
    ClusterView,
    Heartbeat,
    HistoryEvent,
    Job,
    JobFilter,
    JobState,
    NewJob,
    NodeRecord,
    NodeState,
    Outcome,
    ProgressUpdate,
    Sample,
    ScheduledJob,
    ScheduleRecord,
    ScheduleSpec,
    ScheduleTick,
    Submitted,
    TaskLimit,
    TaskLimitUse,
)
from shoal.store import rules
from shoal.store.batcher import SubmitBatcher
from shoal.store.rules import DEAD_WINDOW_S, PRUNE_BATCH, LoadSnapshot, PruneRule

DEFAULT_PARTITIONS = 128
# Deaths of the nodes running a job before it is quarantined (failed instead of requeued): one
# node dying under a job may be bad luck (a host lost, an operator's SIGKILL); the second in a
# row points at the job, and the next node it reaches would most likely die too.
QUARANTINE_AFTER = 2


@dataclass(frozen=True)
class NewNode:
    """A node to register: what `register_node` was given, tasks sorted."""

    name: str
    host: str
    pid: int
    concurrency: int
    tasks: tuple[str, ...]
    lease_s: float
    limits: tuple[TaskLimit, ...] = ()  # the limits its tasks declare, by task
    # Whether its tasks run outside the process that holds its lease (a worker process): then a
    # task cannot take the node down, so its death counts against none of its jobs.
    isolated: bool = False


class AsyncJobs(ABC):
    """What asyncio submitters need from a datastore, without a thread per call.

    One instance serves one event loop (`Store.async_jobs` hands out one per running loop).
    The contracts are those of the `Store` methods of the same names.
    """

    @abstractmethod
    async def submit_jobs(self, jobs: Sequence[NewJob]) -> list[int]:
        """As `Store.submit_jobs`: all or none, returning once committed."""

    @abstractmethod
    async def read_job(self, job_id: int) -> Job | None: ...

    @abstractmethod
    async def wait_for_end(self, job_id: int, timeout_s: float) -> None:
        """Return as soon as the job may have reached a final state (at once if it has, or if
        there is no such job), or after `timeout_s`.

        The caller reads the job again to know; a spurious return is allowed, a late one only
        as late as the adapter's fallback poll.
        """

    @abstractmethod
    async def aclose(self) -> None: ...


class Store(ABC):
    """A connection to one Shoal datastore. Safe to share between threads of one process."""

    batcher: SubmitBatcher[Submitted]  # made by each dialect around its `write_jobs`
    url_for_display: str  # the URL with any password removed

    # -- setting up ---------------------------------------------------------------------------

    @abstractmethod
    def initialize(
        self, partitions: int | None = None, quarantine_after: int | None = None
    ) -> None:
        """Create the schema (or migrate it to the adapter's version) and the cluster row.

        Idempotent. A new cluster gets `partitions` (default DEFAULT_PARTITIONS). On an existing
        one, a larger `partitions` grows P online in one transaction: the new partitions are
        added, the sections rebalanced over them (epoch bump, history row), new jobs take
        `id % P` of the new P and queued jobs keep theirs. A smaller one raises ConfigError
        (`rules.partitions_to_grow`); None or the same leaves P alone.

        `quarantine_after` (when given; ConfigError below 1) sets how many times a job may be
        running on a node that dies before the requeue fails it as quarantined instead
        (default QUARANTINE_AFTER for a new cluster; see `mark_dead_nodes`).
        """

    @abstractmethod
    def check_schema(self) -> None:
        """Raise SchemaError, saying what to run, if the schema is missing or of another version."""

    @abstractmethod
    def close(self) -> None: ...

    @abstractmethod
    def now(self) -> float:
        """The datastore's clock, in seconds since the epoch."""

    # -- submitting and reading jobs ----------------------------------------------------------

    def submit_jobs(self, jobs: Sequence[NewJob]) -> list[int]:
        """`submit`, returning only the ids."""
        return [s.job_id for s in self.submit(jobs)]

    def submit(self, jobs: Sequence[NewJob]) -> list[Submitted]:
        """Insert all jobs in one transaction (all or none); say for each what it became.

        Ids are assigned in order; each job's partition is `id % P`. Jobs start `queued` with
        run_after = now + delay_s. A job with a `key` creates nothing while another job holds
        that key (queued or running, or finished less than its `key_window_s` ago): it gets that
        job's id with `created` False. Jobs of one batch with the same key collapse into the
        first. Two submitters of one key at once, from any processes, make one job. Only created
        jobs are counted.
        """
        if not jobs:
            return []
        unique, positions = rules.collapse_keys(jobs)
        return rules.spread_submitted(self.insert_jobs(unique), positions)

    def insert_jobs(self, jobs: Sequence[NewJob]) -> list[Submitted]:
        """`submit`'s write for a batch whose keys are distinct. Concurrent calls from this
        process's threads share a transaction (`batcher`); a batch with keys goes alone, since
        the keys of one transaction must be distinct."""
        if not jobs:
            return []
        if any(job.key is not None for job in jobs):
            return self.write_jobs(jobs)
        return self.batcher.submit(jobs)

    @abstractmethod
    def write_jobs(self, jobs: Sequence[NewJob]) -> list[Submitted]:
        """Insert one batch (keys distinct) in one transaction of its own."""

    @abstractmethod
    def read_job(self, job_id: int) -> Job | None:
        """The job, or None if there is none (also for an id no job can have, see
        `rules.could_be_job_id`)."""

    @abstractmethod
    def list_jobs(
        self, where: JobFilter, limit: int = 50, before_id: int | None = None
    ) -> list[Job]:
        """Jobs matching `where`, newest id first, at most `limit`, ids below `before_id`."""

    @abstractmethod
    def cancel_job(self, job_id: int, by: str | None = None) -> CancelResult:
        """Cancel a job, in one transaction; `by` says who asked (kept on the job).

        A queued job ends cancelled at once (CANCELLED). A running job gets a cancel request
        (REQUESTED; ALREADY_REQUESTED if it had one): its node reads it (`read_cancel_requests`)
        and stops the attempt, and from then on every way the attempt can end, a success
        included, ends the job cancelled, never retried. A job that has ended is left as it is
        (FINISHED); NOT_FOUND for an id no job has. A cancel and an outcome racing each other
        are ordered: either the outcome is recorded first and the cancel answers FINISHED, or
        the request is and the job ends cancelled.
        """

    @abstractmethod
    def read_cancel_requests(self, node_id: int) -> list[CancelRequest]:
        """The cancel requests of the jobs running under the node, by id. Cheap enough to ask
        a few times a second: an index holds only the running jobs asked to cancel."""

    @abstractmethod
    def known_tasks(self) -> set[str]:
        """The union of task names registered by nodes that are not dead."""

    # -- node lifecycle -----------------------------------------------------------------------

    def register_node(
        self,
        name: str,
        host: str,
        pid: int,
        concurrency: int,
        tasks: Sequence[str],
        lease_s: float,
        limits: Sequence[TaskLimit] = (),
        isolated: bool = False,
    ) -> NodeRecord:
        """Add a node in state `initializing` with a fresh id and a lease of `lease_s`.

        Raises NodeNameTaken if a node with this name is not dead. Records history. In the same
        transaction, the node's `limits` become the cluster's limits of those tasks, and its
        other `tasks` lose any stored limit: the latest registration wins (`limits.declared`).
        A task limited for the first time gets its running count from the jobs running now.
        `isolated`: its tasks run outside the process that holds its lease, so they cannot kill
        it; the death of such a node counts against none of its jobs (see `mark_dead_nodes`).
        """
        ordered = tuple(sorted(limits, key=lambda lim: lim.task))
        new = NewNode(
            name, host, pid, concurrency, tuple(sorted(tasks)), lease_s, ordered, isolated
        )
        return self.read_written_node(self.insert_node(new))

    @abstractmethod
    def insert_node(self, new: NewNode) -> int:
        """`register_node`'s write, in one transaction: returns the new node's id."""

    def set_node_state(
        self, node_id: int, expected: NodeState, new: NodeState, reason: str = ""
    ) -> bool:
        """Move a node from `expected` to `new` if it is still in `expected`.

        Raises IllegalTransition for a pair the state machine forbids. Returns False if the node
        was no longer in `expected`. Records history (with `reason`, or the state machine's own
        reason for the pair); rebalances if membership changed. Moving to `dead` also requeues
        the node's running jobs (see `mark_dead_nodes`).
        """
        why = states.check_transition(expected, new)
        return self.apply_node_state(node_id, expected, new, reason or why)

    @abstractmethod
    def apply_node_state(
        self, node_id: int, expected: NodeState, new: NodeState, reason: str
    ) -> bool:
        """`set_node_state` once the state machine allowed the pair: the conditional write,
        its history row with `reason`, the requeue on death and the rebalance."""

    @abstractmethod
    def heartbeat(self, node_id: int, lease_s: float) -> Heartbeat | None:
        """Renew the node's lease to now + lease_s. None if the node has been declared dead.

        A node that gets None must stop writing, abandon its in-flight work and register anew.
        """

    def request_pause(self, node_ref: str, paused: bool, why: str | None = None) -> NodeRecord:
        """Ask a live node (by id or name) to pause (True) or resume (False); `why`, if given,
        goes into the history row after "pause requested".

        A pause request takes the node out of the section assignment at once (rebalanced in the
        same transaction); the node drains and then moves itself to `paused`. Raises NotFound.
        """
        return self.read_written_node(self.apply_pause(node_ref, paused, why))

    @abstractmethod
    def apply_pause(self, node_ref: str, paused: bool, why: str | None = None) -> int:
        """`request_pause`'s write, in one transaction: returns the node's id."""

    def read_written_node(self, node_id: int) -> NodeRecord:
        """The node just written by a committed transaction of ours (so it exists)."""
        node = self.read_node(node_id)
        assert node is not None
        return node

    @abstractmethod
    def mark_dead_nodes(self) -> list[int]:
        """Declare dead every non-dead node whose lease expired in datastore time.

        In one transaction: state -> dead (history), each of their running jobs back to queued
        (the attempt counts: a job with no attempts left becomes failed with the reason; a job
        with a cancel request ends cancelled), and a rebalance. Each such job counts the death,
        unless the node was `isolated` (its tasks ran in a worker process and could not have
        killed it); one whose count reaches the cluster's `quarantine_after` is failed instead,
        its error starting "quarantined" and naming the deaths and the last node's. A node that
        stops cleanly counts no death. Returns the ids declared dead.
        """

    @abstractmethod
    def rebalance(self) -> bool:
        """Make the assignment match the eligible nodes if it does not. True if it changed."""

    @abstractmethod
    def unpark_batch(self, lead_s: float, limit: int) -> int:
        """One statement of `unpark_due`: at most `limit` parked jobs, the soonest due first;
        returns how many."""

    def unpark_due(self, lead_s: float) -> int:
        """Put the parked jobs due within `lead_s` seconds (or overdue) back where claims find
        them; returns how many. A job queued to run more than `rules.PARK_AFTER_S` ahead (a delay,
        a retry's backoff) is parked: out of the claim indexes, so jobs due later cost a claim
        nothing. Every node's housekeeping calls this each heartbeat with a lead of two heartbeats,
        so a parked job is back before it is due; any node may, and they never wait for each
        other. At most `rules.UNPARK_BATCHES` statements per call."""
        total = 0
        for _ in range(rules.UNPARK_BATCHES):
            done = self.unpark_batch(lead_s, rules.UNPARK_BATCH)
            total += done
            if done < rules.UNPARK_BATCH:
                break
        return total

    def follow_load(self, policy: LoadPolicy | None = None) -> int:
        """Lend partitions whose runnable jobs wait behind busy owners to nodes with free slots,
        and give lent ones back as load evens out (the rule is `load.plan_load_moves`); returns
        how many partitions moved.

        Any node may call it; it needs no leader. One short read, then, only when the rule
        finds a move, one write transaction that re-checks each move under the cluster lock (its
        source still owns the partition, its target may still own a section), bumps the epoch
        and records a `load_move` event with the reason and the rate. In-flight jobs stay where
        they run; claims on a partition that moved away find nothing.
        """
        snapshot = self.read_load()
        moves = load.plan_load_moves(
            snapshot.owners,
            snapshot.homes,
            snapshot.nodes,
            snapshot.backlog,
            snapshot.moved_ago_s,
            policy or LoadPolicy(),
        )
        return self.apply_load_moves(moves) if moves else 0

    @abstractmethod
    def read_load(self) -> LoadSnapshot:
        """What the load rule looks at now, in one short read (see `rules.LoadSnapshot`)."""

    @abstractmethod
    def apply_load_moves(self, moves: Sequence[Move]) -> int:
        """`follow_load`'s write: the moves that still apply (`rules.plan_load_moves`), in one
        transaction under the cluster lock; returns how many partitions moved."""

    # -- running jobs -------------------------------------------------------------------------

    @abstractmethod
    def claim_jobs(self, node_id: int, limit: int, start: int | None = None) -> list[Job]:
        """Claim up to `limit` runnable queued jobs of the node's own section: the highest
        priority first, then the oldest id (`rules.claim_order`, also the order returned).
        Approximate across partitions only among equal priorities: no job is claimed while one
        of a higher priority is runnable in the section.

        Succeeds only while the node is eligible (waiting/working, no pause requested) and for
        partitions it owns. The first `start` claimed jobs in claim order (all when None) start
        at once: running, with claimer = node_id, attempts + 1 and `started_at` stamped. The
        rest are claimed ahead for the node's next free workers: `claimed`, with claimer =
        node_id but no attempt charged and no start stamped, until `start_jobs` starts them;
        released, or requeued when the node dies, they are queued again as they were. Moves the
        node waiting -> working (with history) when it claims any.

        A job of a task with limits is claimed only while they leave room, counted over the
        whole cluster (every node's claims of that task are serialised): never more than
        `max_running` of its jobs running, never more starts than `max_per_s` allows in its
        window. A job skipped for a limit stays queued and does not hold up younger jobs of
        other tasks. A job claimed ahead holds its room as a running one does (the rate counts
        claims). Every way a job leaves `claimed` or `running` (finish, retry, release, cancel,
        the requeue of a dead node's jobs) gives its room back in the same transaction.
        """

    @abstractmethod
    def claim_stranded(self, node_id: int, limit: int, start: int | None = None) -> list[Job]:
        """Claim up to `limit` runnable queued jobs, oldest first, that wait in other nodes'
        sections for a task their owner does not register and this node does.

        A node claims only jobs of the tasks it registers (`claim_jobs`), so in a rolling deploy
        (old nodes beside new ones) a job of a new task whose partition an old node owns would
        wait there for ever; a node with the task takes it this way instead. Claimed as
        `claim_jobs` claims (`start` of them at once, counters, waiting -> working), only while this
        node may own a section. Cheap when no owner lacks a task this node has: the nodes'
        task lists are read, no job.
        """

    @abstractmethod
    def start_jobs(self, node_id: int, job_ids: Sequence[int]) -> list[Job]:
        """Start jobs the node claimed ahead, as its workers free up: each still claimed by the
        node becomes running with attempts + 1 and `started_at` stamped. Returns, in claim
        order, the jobs of `job_ids` running under the node now: those it started, and those an
        earlier call started (so a call repeated after its outcome was lost with the connection
        returns the same jobs). One cancelled or requeued meanwhile (the node was presumed
        dead) is not returned.

        A job a worker has not begun is never started here, so an attempt is charged only
        when it runs and a node killed between claim and start charges nothing. (A tiny job may
        begin first, its start recorded after, or with its outcome: see `finish_jobs`.)
        """

    @abstractmethod
    def record_begun(self, node_id: int, begun: Sequence[tuple[int, int]]) -> int:
        """Record the start of attempts a worker began while their jobs were still claimed
        (job id, attempt): each job claimed by the node under the attempt before becomes
        running, attempts + 1, `started_at` now. For a worker process whose node died (or ran
        out of lease) before recording them itself: charged, such a job goes back with this
        attempt counted, as any job running under a dead node does, rather than as if it had
        never run. A job whose outcome was recorded, or that was given back, or claimed again
        for a later attempt, is left as it is. Returns how many started."""

    @abstractmethod
    def record_progress(self, node_id: int, updates: Sequence[ProgressUpdate]) -> int:
        """Write progress for running jobs still held by (node_id, attempt). Returns how many."""

    @abstractmethod
    def finish_jobs(self, node_id: int, outcomes: Sequence[Outcome]) -> list[bool]:
        """Record outcomes in one transaction; each applies only if still fenced.

        Success -> succeeded with result. Failure with retry_in_s -> queued again after the delay
        (error kept, claimer cleared). Failure without -> failed. A job with a cancel request
        ends cancelled whatever the outcome says, its error `texts.CANCELLED_RUNNING` followed by
        the attempt's error (or, for a success, that its result was discarded). Updates the
        node's processed and failed counters (failed: every applied outcome but a success).
        Returns, per outcome, whether it applied.

        An outcome with `ran_s` set also applies to its job while still claimed by the node
        under the attempt before (its start never recorded): the start is recorded with the
        end, attempts + 1 and `started_at` `ran_s` before now, as if `start_jobs` had run then.
        """

    @abstractmethod
    def release_jobs(self, node_id: int, job_ids: Sequence[int]) -> int:
        """Put jobs still held by the node (running or claimed ahead) back to queued without
        counting the attempt.

        Used by a node that stops before its jobs finish. A job with a cancel request ends
        cancelled instead. Returns how many the node gave up either way.
        """

    @abstractmethod
    def last_started(self, node_id: int) -> list[int]:
        """The ids of the jobs running under the node that its latest start began: one claim
        or one start of jobs claimed ahead (they share that statement's `started_at`; on SQLite,
        whose clock counts milliseconds, so does a start in the same millisecond), by id.

        What a node that died just after that commit may never have handed to a worker (see
        the default pool's worker process, which gives back what it never got).
        """

    @abstractmethod
    def running_attempts(self, node_id: int) -> list[tuple[int, int]]:
        """(job id, attempt) of every job recorded as running under the node, by id, and
        (job id, 0) of each job claimed ahead by it (no attempt of it has started).

        A node compares this with what it holds to find outcomes the datastore lost (a failover
        to a standby that had not yet received them) and jobs it never knew it held.
        """

    # -- periodic schedules -------------------------------------------------------------------

    @abstractmethod
    def declare_schedules(self, specs: Sequence[ScheduleSpec]) -> None:
        """Record the schedules an app declares, in one transaction, stamped `declared_at` now.

        A schedule not yet stored starts settled up to now (`fired_through` = now): its first
        tick is the next one, nothing before is fired. One whose task, timing, zone, arguments or
        policy changed takes the new definition and starts afresh the same way; an unchanged one
        keeps where it is. Several nodes may declare at once; each stays one row.
        """

    @abstractmethod
    def read_schedules(self) -> list[ScheduleRecord]:
        """Every stored schedule by name, each with its latest firing and that job's state now."""

    @abstractmethod
    def fire_schedule(
        self, name: str, expected_through: float, fired: Sequence[ScheduledJob], through: float
    ) -> list[int] | None:
        """Submit the jobs of one planned round of a schedule, in one transaction.

        Applies only while the schedule is still settled up to `expected_through` exactly and
        `through` is not after the datastore's now; it then moves `fired_through` to `through`,
        and for each firing inserts a tick row keyed by (schedule, tick) together with its job
        (queued now). A tick already recorded gets no second job: the key makes a double firing
        impossible whatever the callers do. Returns the new job ids, or None when the round no
        longer applies (another node fired it first, or no such schedule is stored: nothing was
        written). Keeps the latest `rules.TICKS_KEPT` tick rows of the schedule and deletes older
        ones. ValueError for a firing outside (expected_through, through].
        """

    @abstractmethod
    def forget_schedule(self, name: str) -> bool:
        """Delete a stored schedule and its tick rows (its jobs stay). False if there is none.

        A node whose app still declares it declares it again, as new: it starts at its next tick.
        """

    @abstractmethod
    def list_schedule_ticks(self, name: str, limit: int = 100) -> list[ScheduleTick]:
        """The schedule's recorded firings, latest tick first, at most `limit`."""

    @abstractmethod
    def async_jobs(self) -> AsyncJobs:
        """The asyncio side of this store for the running event loop (made on first use,
        closed with the store or by `aclose_async`); RuntimeError outside a running loop."""

    @abstractmethod
    async def aclose_async(self) -> None:
        """Close the asyncio side made for the running loop, if any (before the loop ends)."""

    # -- capabilities -------------------------------------------------------------------------

    @property
    def supports_wakeups(self) -> bool:
        """Whether `wait_for_work` returns as soon as work may have arrived (declared, never
        probed). A store without wake-ups leaves the node to poll."""
        return False

    def wait_for_work(self, node_id: int, timeout_s: float) -> bool:
        """Block until work may have arrived for the node's section, or `timeout_s` passes.

        True when the node should claim now; False on timeout. Never raises for datastore
        trouble (the node's next claim meets it). Without wake-ups this only waits: the default
        sleeps `timeout_s` and returns False.
        """
        time.sleep(timeout_s)
        return False

    @property
    def interruptions(self) -> int:
        """How many times the datastore has been unreachable and then reached again.

        Goes up after a lost connection, a restart or a failover; a node that sees it change
        checks what the datastore says it is running. Stays 0 for an embedded datastore.
        """
        return 0

    # -- history and views --------------------------------------------------------------------

    @abstractmethod
    def record_sample(self, interval_s: float) -> bool:
        """Write a cluster sample unless one was written less than `interval_s` ago."""

    @abstractmethod
    def read_cluster(self, dead_window_s: float = DEAD_WINDOW_S) -> ClusterView:
        """Partitions, epoch, owners, job counts by state, and the nodes that are not dead
        or died within the last `dead_window_s` seconds (each with its running count)."""

    @abstractmethod
    def read_node(self, node_id: int) -> NodeRecord | None: ...

    @abstractmethod
    def read_history(
        self, since: float, until: float | None = None, limit: int = 10_000
    ) -> list[HistoryEvent]:
        """Events with since <= at <= until, oldest first, at most `limit`."""

    @abstractmethod
    def read_last_rebalance(self, at: float) -> HistoryEvent | None:
        """The latest rebalance event at or before `at` (the assignment in force then)."""

    @abstractmethod
    def read_node_states_at(self, at: float) -> list[NodeRecord]:
        """Every node registered at or before `at`, with the state and section it had then.

        Derived from history, so it works for any past moment the history still covers.
        """

    @abstractmethod
    def read_samples(self, since: float, until: float | None = None) -> list[Sample]: ...

    @abstractmethod
    def read_task_limits(self) -> list[TaskLimitUse]:
        """Every task with a limit, by name, with its running jobs and recent starts now."""

    @abstractmethod
    def count_jobs_by_task(self) -> dict[tuple[str, JobState], int]:
        """How many jobs there are per (task, state): the source of per-task metrics."""

    @abstractmethod
    def list_finished(self, since: float, limit: int = 1000) -> list[Job]:
        """Jobs that reached a final state at or after `since`, oldest finish first."""

    # -- retention ----------------------------------------------------------------------------

    @abstractmethod
    def prune_jobs(
        self, rule: PruneRule, limit: int = PRUNE_BATCH, node_id: int | None = None
    ) -> dict[str, int]:
        """Delete up to `limit` jobs that `rule` selects, oldest finish first, in one short
        transaction that also counts them out of their (task, state) counters.

        With `node_id`, only jobs in the partitions that node owns at that moment, so live nodes
        share the work without a leader; None (a one-off `shoal prune`) looks at every partition.
        A row another transaction holds is skipped, never waited on. Returns the number deleted
        per task; fewer than `limit` in all means nothing more is due right now.
        """

    @abstractmethod
    def count_prunable(self, rule: PruneRule) -> dict[str, int]:
        """How many jobs, per task, `prune_jobs(rule)` would delete over every partition and
        without a limit (a dry run); deletes nothing."""

    @abstractmethod
    def prune_history(self, before: float, limit: int = PRUNE_BATCH) -> tuple[int, int]:
        """Delete up to `limit` history events and up to `limit` samples from before `before`.

        The latest rebalance and each node's latest state change are kept whatever their age:
        the views of a past moment start from them. Returns (events, samples) deleted.
        """

    @abstractmethod
    def count_prunable_history(self, before: float) -> tuple[int, int]:
        """(events, samples) that `prune_history(before)` would delete without a limit."""

    @abstractmethod
    def read_history_start(self) -> float | None:
        """Where the stored history begins: the later of the first sample and the first event
        (None if there are neither). Views of moments before it are incomplete."""
