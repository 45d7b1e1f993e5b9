"""`PostgresStore`: the Store on one PostgreSQL database, shared by nodes on any number of hosts.

Each operation is one short transaction (the hot ones a single statement) on a pooled psycopg 3
connection, run and retried through outages by `conn.Connector`; datastore time is the database's
clock. What happens inside is delegated to the plain functions of `jobs`, `nodes` and `reads`.
The class keeps only what outlives one operation: ids reserved for the next submit, claims whose
outcome was lost, which nodes are busy, and the sections wake-ups are filtered by. Nodes wake on
LISTEN/NOTIFY (`wait_for_work`), with polling as the fallback. The schema is created and
migrated only by `initialize` (`shoal init`), never silently on open.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Sequence

from shoal import model, states
from shoal.errors import ConfigError, DatastoreUnavailable, ShoalError
from shoal.load import Move
from shoal.store import rules, texts
from shoal.store.batcher import SubmitBatcher
from shoal.store.loops import PerLoop
from shoal.store.port import AsyncJobs, NewNode, Store
from shoal.store.postgres import jobs, nodes, reads, retention, schedules, schema
from shoal.store.postgres import queries as q
from shoal.store.postgres.aio import PostgresAsyncJobs
from shoal.store.postgres.conn import Connector, Listener
from shoal.store.postgres.reads import Conn
from shoal.store.postgres.reserve import IdReserve

log = logging.getLogger("shoal.store.postgres")
SECTION_TTL_S = 2.0  # how stale a section may be when filtering wake-ups (polling covers it)
# How often a node's claims look again whether a backlog it cannot take makes them find their
# candidates task by task (`jobs.untaken_backlog_is_large`): one small read of the job counters.
UNTAKEN_TTL_S = 1.0


class PostgresStore(Store):
    """The Store on one PostgreSQL database. Thread-safe: operations borrow pooled connections."""

    def __init__(self, connector: Connector) -> None:
        self._db = connector
        self.url_for_display = connector.scrub.display
        self._listener = Listener(connector)
        # Claims whose outcome was lost with the connection and that gave up retrying: the next
        # claim of that node collects their jobs, if they committed, so none stays held forever.
        self._lost_claims: dict[int, list[int]] = {}
        self._sections: dict[int, tuple[frozenset[int], float]] = {}
        # Nodes whose last claim took all it asked for, or that a notification just woke: their
        # next claim skips the look-before-locking.
        self._busy: set[int] = set()
        # Per node, whether its claims find candidates task by task, and when that was read;
        # under None, the same for the backlog `read_load` counts.
        self._by_task: dict[int | None, tuple[bool, float]] = {}
        # Ids that this store's INSERTs reserved for its next submits (one round trip each).
        self._reserve = IdReserve()
        self.batcher = SubmitBatcher(self.write_jobs)
        self._async = PerLoop(lambda: PostgresAsyncJobs(connector, self._reserve))

    @classmethod
    def open(
        cls, url: str, *, retry_for_s: float = 60.0, max_connections: int = 8
    ) -> PostgresStore:
        """Connect (ConfigError for a malformed URL, DatastoreUnavailable if unreachable).

        Does not create or check the schema: the node calls `check_schema`, `shoal init` calls
        `initialize`.
        """
        return cls(Connector(url, retry_for_s=retry_for_s, max_size=max_connections))

    # -- setting up ---------------------------------------------------------------------------

    def initialize(
        self, partitions: int | None = None, quarantine_after: int | None = None
    ) -> None:
        if partitions is not None and partitions < 1:
            raise ConfigError(texts.PARTITIONS_AT_LEAST_ONE)
        rules.check_quarantine_after(quarantine_after)
        self._db.run("migrate schema", lambda conn, _: schema.migrate(conn, self.url_for_display))
        self._db.run(
            "initialize cluster",
            lambda conn, _: schema.create_cluster(conn, partitions, quarantine_after),
        )

    def check_schema(self) -> None:
        version, has_cluster = self._db.run("check schema", lambda c, _: schema.read_version(c))
        schema.check(version, has_cluster, self.url_for_display)

    def close(self) -> None:
        self._listener.close()
        self._db.close()

    def now(self) -> float:
        return self._db.run("read clock", lambda c, _: float(reads.scalar(c, f"SELECT {q.NOW}")))

    # -- jobs -----------------------------------------------------------------------------------

    def write_jobs(self, new: Sequence[model.NewJob]) -> list[model.Submitted]:
        plan = self._reserve.plan(len(new), time.monotonic())
        url = self.url_for_display
        try:
            return self._db.run("submit jobs", lambda c, r: jobs.submit(c, r, plan, new, url))
        except DatastoreUnavailable as exc:
            ids = plan.ids
            if len(ids) < len(new):
                raise  # some ids were never reserved, so no INSERT was sent
            raise DatastoreUnavailable(
                f"{exc}. The batch of {len(ids)} jobs (ids {ids[0]}..{ids[-1]}) may or may not "
                f"have been recorded: once the datastore is back, `shoal job {ids[0]}` tells "
                "(a batch is recorded whole or not at all)"
            ) from exc
        finally:
            self._reserve.settle(plan, time.monotonic())

    def read_job(self, job_id: int) -> model.Job | None:
        if not rules.could_be_job_id(job_id):
            return None
        return self._db.run("read job", lambda c, _: reads.read_job(c, job_id))

    def async_jobs(self) -> AsyncJobs:
        return self._async.get()

    async def aclose_async(self) -> None:
        await self._async.aclose_current()

    def list_jobs(
        self, where: model.JobFilter, limit: int = 50, before_id: int | None = None
    ) -> list[model.Job]:
        return self._db.run("list jobs", lambda c, _: reads.list_jobs(c, where, limit, before_id))

    def cancel_job(self, job_id: int, by: str | None = None) -> model.CancelResult:
        if not rules.could_be_job_id(job_id):
            return model.CancelResult.NOT_FOUND
        return self._db.run("cancel job", lambda c, r: jobs.cancel(c, r, job_id, by))

    def read_cancel_requests(self, node_id: int) -> list[model.CancelRequest]:
        return self._db.run("read cancel requests", lambda c, _: jobs.cancel_requests(c, node_id))

    def known_tasks(self) -> set[str]:
        return self._db.run("read known tasks", lambda c, _: reads.known_tasks(c))

    def claim_jobs(self, node_id: int, limit: int, start: int | None = None) -> list[model.Job]:
        if limit < 1:
            return []
        recovered = self._collect_lost_claims(node_id)
        if len(recovered) >= limit:
            self.release_jobs(node_id, [j.id for j in recovered[limit:]])
            return recovered[:limit]
        token = random.getrandbits(62)
        wanted = limit - len(recovered)
        begun = sum(1 for j in recovered if j.state is model.JobState.RUNNING)
        params = {
            "node": node_id,
            "shard": q.counter_shard(node_id),
            "limit": wanted,
            "start": wanted if start is None else max(start - begun, 0),
            "token": token,
            "why": states.TRANSITIONS[(model.NodeState.WAITING, model.NodeState.WORKING)],
        }
        busy = node_id in self._busy
        try:
            claimed = self._db.run(
                "claim jobs",
                lambda c, r: jobs.claim(c, r, params, busy, self._claims_by_task(c, node_id)),
            )
        except Exception:
            self._lost_claims.setdefault(node_id, []).append(token)
            raise
        if len(claimed) >= wanted:
            self._busy.add(node_id)  # there may be more: claim again without looking first
        else:
            self._busy.discard(node_id)  # it took all there was: look before the next claim
        return sorted(recovered + claimed, key=rules.claim_order)

    def _claims_by_task(self, conn: Conn, node_id: int) -> bool:
        """Whether the node's next claim finds its candidates task by task."""
        return self._by_task_now(node_id, lambda: jobs.untaken_backlog_is_large(conn, node_id))

    def _by_task_now(self, key: int | None, read: Callable[[], bool]) -> bool:
        """Whether reads for `key` (a node's claims; None: the load) go task by task: `read()`
        again once the last reading is UNTAKEN_TTL_S old."""
        now = time.monotonic()
        cached = self._by_task.get(key)
        if cached is not None and now - cached[1] < UNTAKEN_TTL_S:
            return cached[0]
        by_task = read()
        self._by_task[key] = (by_task, now)
        return by_task

    def claim_stranded(self, node_id: int, limit: int, start: int | None = None) -> list[model.Job]:
        if limit < 1:
            return []
        token = random.getrandbits(62)
        params = {
            "node": node_id,
            "shard": q.counter_shard(node_id),
            "limit": limit,
            "start": limit if start is None else start,
            "token": token,
            "why": states.TRANSITIONS[(model.NodeState.WAITING, model.NodeState.WORKING)],
        }
        try:
            return self._db.run(
                "claim stranded jobs", lambda c, r: jobs.claim_stranded(c, r, params)
            )
        except Exception:  # it may have committed: the next claim collects what it took
            self._lost_claims.setdefault(node_id, []).append(token)
            raise

    def _collect_lost_claims(self, node_id: int) -> list[model.Job]:
        tokens = self._lost_claims.pop(node_id, [])
        if not tokens:
            return []
        try:
            return self._db.run(
                "recover lost claims", lambda c, _: jobs.collect_lost_claims(c, node_id, tokens)
            )
        except Exception:
            self._lost_claims.setdefault(node_id, []).extend(tokens)
            raise

    def record_progress(self, node_id: int, updates: Sequence[model.ProgressUpdate]) -> int:
        if not updates:
            return 0
        return self._db.run(
            "record progress", lambda c, _: jobs.record_progress(c, node_id, updates)
        )

    def start_jobs(self, node_id: int, job_ids: Sequence[int]) -> list[model.Job]:
        if not job_ids:
            return []
        params = {"node": node_id, "shard": q.counter_shard(node_id), "ids": list(job_ids)}
        return self._db.run("start jobs", lambda c, _: jobs.start_claimed(c, params))

    def record_begun(self, node_id: int, begun: Sequence[tuple[int, int]]) -> int:
        if not begun:
            return 0
        params = {
            "node": node_id,
            "shard": q.counter_shard(node_id),
            "ids": [job_id for job_id, _ in begun],
            "attempts": [attempt for _, attempt in begun],
        }
        # Idempotent: a retry after a lost outcome finds the jobs already running.
        return self._db.run(
            "record begun", lambda c, _: int(reads.scalar(c, q.RECORD_BEGUN, params))
        )

    def finish_jobs(self, node_id: int, outcomes: Sequence[model.Outcome]) -> list[bool]:
        if not outcomes:
            return []
        return self._db.run("finish jobs", lambda c, r: jobs.finish(c, r, node_id, outcomes))

    def release_jobs(self, node_id: int, job_ids: Sequence[int]) -> int:
        if not job_ids:
            return 0
        return self._db.run("release jobs", lambda c, _: jobs.release(c, node_id, job_ids))

    def last_started(self, node_id: int) -> list[int]:
        return self._db.run("list last started jobs", lambda c, _: reads.last_started(c, node_id))

    def running_attempts(self, node_id: int) -> list[tuple[int, int]]:
        return self._db.run("list running jobs", lambda c, _: reads.running_attempts(c, node_id))

    # -- nodes ----------------------------------------------------------------------------------

    def insert_node(self, new: NewNode) -> int:
        return self._db.run("register node", lambda c, r: nodes.register(c, r, new))

    def apply_node_state(
        self, node_id: int, expected: model.NodeState, new: model.NodeState, reason: str
    ) -> bool:
        return self._db.run(
            "change node state",
            lambda c, r: nodes.apply_state(c, r, node_id, expected, new, reason),
        )

    def heartbeat(self, node_id: int, lease_s: float) -> model.Heartbeat | None:
        return self._db.run("heartbeat", lambda c, _: nodes.heartbeat(c, node_id, lease_s))

    def apply_pause(self, node_ref: str, paused: bool, why: str | None = None) -> int:
        return self._db.run(
            "request pause", lambda c, _: nodes.request_pause(c, node_ref, paused, why)
        )

    def mark_dead_nodes(self) -> list[int]:
        return self._db.run("mark dead nodes", lambda c, _: nodes.mark_dead_nodes(c))

    def rebalance(self) -> bool:
        return self._db.run("rebalance", lambda c, _: nodes.repair(c))

    def unpark_batch(self, lead_s: float, limit: int) -> int:
        # Safe to retry after a lost commit: what it unparked is unparked, and it looks again.
        return self._db.run(
            "unpark jobs",
            lambda c, _: int(c.execute(q.UNPARK, {"lead": lead_s, "limit": limit}).rowcount),
        )

    def read_load(self) -> rules.LoadSnapshot:
        def read(conn: Conn, _: bool) -> rules.LoadSnapshot:
            by_task = self._by_task_now(None, lambda: nodes.untaken_is_large(conn))
            return nodes.read_load(conn, by_task)

        return self._db.run("read load", read)

    def apply_load_moves(self, moves: Sequence[Move]) -> int:
        # Safe to retry after a lost commit: a move already applied no longer has its source
        # as owner, so the re-check drops it.
        return self._db.run("move partitions", lambda c, _: nodes.move_partitions(c, moves))

    # -- periodic schedules ---------------------------------------------------------------------

    def declare_schedules(self, specs: Sequence[model.ScheduleSpec]) -> None:
        if specs:
            self._db.run("declare schedules", lambda c, _: schedules.declare(c, specs))

    def read_schedules(self) -> list[model.ScheduleRecord]:
        return self._db.run("read schedules", lambda c, _: schedules.read_all(c))

    def fire_schedule(
        self,
        name: str,
        expected_through: float,
        fired: Sequence[model.ScheduledJob],
        through: float,
    ) -> list[int] | None:
        rules.check_firings(expected_through, fired, through)
        url = self.url_for_display
        return self._db.run(
            "fire schedule",
            lambda c, _: schedules.fire(c, name, expected_through, fired, through, url),
        )

    def forget_schedule(self, name: str) -> bool:
        # A retry after a lost commit finds nothing left and says False: the row is gone either way.
        return self._db.run("forget schedule", lambda c, _: schedules.forget(c, name))

    def list_schedule_ticks(self, name: str, limit: int = 100) -> list[model.ScheduleTick]:
        return self._db.run(
            "list schedule ticks", lambda c, _: schedules.list_ticks(c, name, limit)
        )

    # -- capabilities ---------------------------------------------------------------------------

    @property
    def interruptions(self) -> int:
        return self._db.interruptions

    @property
    def supports_wakeups(self) -> bool:
        return True

    def wait_for_work(self, node_id: int, timeout_s: float) -> bool:
        """Block until work may have arrived for the node's section, or `timeout_s` passes.

        True when a submit touched one of the node's partitions, jobs were requeued or released,
        or the assignment changed (then the node should claim); False on timeout. Also True right
        after (re)connecting the LISTEN connection, since notifications may have been missed.
        Never raises for datastore trouble: the node's claim will meet it instead. One LISTEN
        connection per store: give each node its own store.
        """
        section = self._section_for_wakeups(node_id)
        own = q.node_channel(node_id)

        def is_relevant(channel: str, payload: str) -> bool:
            if channel == own:
                return True  # work in partitions this node owned as the submit saw them
            if payload == "*" or not payload:
                self._sections.pop(node_id, None)  # the assignment may have changed: re-read
                return True
            return any(int(p) in section for p in payload.split(",") if p.isdigit())

        woken = self._listener.wait(is_relevant, timeout_s, own)
        if woken:
            # Work was just announced: the claim that follows goes straight to CLAIM, without
            # the look an idle node's poll takes first (one round trip less to the start).
            self._busy.add(node_id)
        return woken

    def _section_for_wakeups(self, node_id: int) -> frozenset[int]:
        """The node's section, re-read at most every SECTION_TTL_S (and after any rebalance)."""
        cached = self._sections.get(node_id)
        if cached is not None and time.monotonic() - cached[1] < SECTION_TTL_S:
            return cached[0]
        try:
            section = self._db.run("read section", lambda c, _: reads.section_of_node(c, node_id))
        except ShoalError:
            return frozenset()
        self._sections[node_id] = (section, time.monotonic())
        return section

    # -- history and views ----------------------------------------------------------------------

    def record_sample(self, interval_s: float) -> bool:
        return self._db.run("record sample", lambda c, _: jobs.record_sample(c, interval_s))

    def read_cluster(self, dead_window_s: float = rules.DEAD_WINDOW_S) -> model.ClusterView:
        return self._db.run("read cluster", lambda c, _: reads.read_cluster(c, dead_window_s))

    def read_node(self, node_id: int) -> model.NodeRecord | None:
        return self._db.run("read node", lambda c, _: reads.read_node(c, node_id))

    def read_history(
        self, since: float, until: float | None = None, limit: int = 10_000
    ) -> list[model.HistoryEvent]:
        return self._db.run("read history", lambda c, _: reads.read_history(c, since, until, limit))

    def read_last_rebalance(self, at: float) -> model.HistoryEvent | None:
        return self._db.run("read last rebalance", lambda c, _: reads.read_last_rebalance(c, at))

    def read_node_states_at(self, at: float) -> list[model.NodeRecord]:
        return self._db.run("read past node states", lambda c, _: reads.read_node_states_at(c, at))

    def read_samples(self, since: float, until: float | None = None) -> list[model.Sample]:
        return self._db.run("read samples", lambda c, _: reads.read_samples(c, since, until))

    def read_task_limits(self) -> list[model.TaskLimitUse]:
        return self._db.run("read task limits", lambda c, _: reads.read_task_limits(c))

    def count_jobs_by_task(self) -> dict[tuple[str, model.JobState], int]:
        return self._db.run("count jobs by task", lambda c, _: reads.count_jobs_by_task(c))

    def list_finished(self, since: float, limit: int = 1000) -> list[model.Job]:
        return self._db.run("list finished jobs", lambda c, _: reads.list_finished(c, since, limit))

    # -- retention ------------------------------------------------------------------------------

    def prune_jobs(
        self, rule: rules.PruneRule, limit: int = rules.PRUNE_BATCH, node_id: int | None = None
    ) -> dict[str, int]:
        return self._db.run(
            "prune jobs", lambda c, _: retention.prune_jobs(c, rule, limit, node_id)
        )

    def count_prunable(self, rule: rules.PruneRule) -> dict[str, int]:
        return self._db.run("count prunable jobs", lambda c, _: retention.count_prunable(c, rule))

    def prune_history(self, before: float, limit: int = rules.PRUNE_BATCH) -> tuple[int, int]:
        return self._db.run("prune history", lambda c, _: retention.prune_history(c, before, limit))

    def count_prunable_history(self, before: float) -> tuple[int, int]:
        return self._db.run(
            "count prunable history", lambda c, _: retention.count_prunable_history(c, before)
        )

    def read_history_start(self) -> float | None:
        return self._db.run("read history start", lambda c, _: retention.history_start(c))
