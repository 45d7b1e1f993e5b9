"""The asyncio side of the PostgreSQL store: submits on an async pool, results heard by LISTEN.

Submits run the same statements as the threaded store (SUBMIT under ids an earlier SUBMIT
reserved, or under ids reserved first when there are too few: see `reserve`) on a psycopg
`AsyncConnectionPool`, retried through outages as `conn.Connector` retries, with the same check
for a batch whose commit was lost with its connection. Waiting for a result costs no polling:
FINISH notifies `shoal_done` with the ids of the jobs that ended, and one LISTEN connection per
event loop wakes the waiters of those ids. A slow fallback poll covers what no notification
announces (a cancel, a job failed by a dead node's requeue, a lost LISTEN connection).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import psycopg
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from shoal.errors import DatastoreUnavailable, SchemaError, ShoalError, SubmitError
from shoal.model import Job, NewJob
from shoal.store import rules, texts
from shoal.store.batcher import AsyncSubmitBatcher
from shoal.store.loops import forget_waiter
from shoal.store.port import AsyncJobs
from shoal.store.postgres import queries as q
from shoal.store.postgres.conn import (
    SESSION_SETTINGS,
    Connector,
    _message,
    is_transient,
    translate,
)
from shoal.store.postgres.reads import job_from_row
from shoal.store.postgres.reserve import IdReserve

log = logging.getLogger("shoal.store.postgres")
T = TypeVar("T")
AConn = AsyncConnection[tuple[Any, ...]]
FALLBACK_POLL_S = 1.0  # how often a waiter reads its job when no notification came
LISTEN_WAIT_S = 1.0  # how long a waiter waits for the LISTEN connection before reading anyway


async def _configure(conn: AConn) -> None:
    await conn.execute(SESSION_SETTINGS)


class PostgresAsyncJobs(AsyncJobs):
    """Submits and result waits for one event loop."""

    def __init__(self, connector: Connector, reserve: IdReserve) -> None:
        self._connector = connector
        self._reserve = reserve  # the blocking store's: one order of ids for all its submits
        self._pool: AsyncConnectionPool[AConn] = AsyncConnectionPool(
            connector.url,
            kwargs={**connector.connect_kwargs, "autocommit": True},
            min_size=1,
            max_size=4,
            open=False,
            configure=_configure,
            name="shoal-async",
            timeout=10.0,
            max_idle=60.0,
            reconnect_timeout=connector.retry_for_s,
        )
        self._opened = False
        self._batcher = AsyncSubmitBatcher(self._write_jobs)
        self._waiters: dict[int, set[asyncio.Event]] = {}
        self._listening = asyncio.Event()
        self._listener: asyncio.Task[None] | None = None

    async def _run(self, what: str, operation: Callable[[AConn, bool], Awaitable[T]]) -> T:
        """`operation(conn, retried)` on a pooled connection, retried through outages until the
        connector's `retry_for_s` has passed (as `Connector.run`)."""
        if not self._opened:
            await self._pool.open(wait=False)
            self._opened = True
        scrub = self._connector.scrub
        retry_until = time.monotonic() + self._connector.retry_for_s
        delay, retried = 0.05, False
        while True:
            try:
                timeout = max(0.5, min(10.0, retry_until - time.monotonic()))
                async with self._pool.connection(timeout=timeout) as conn:
                    return await operation(conn, retried)
            except ShoalError:
                raise
            except Exception as exc:
                if not is_transient(exc):
                    raise translate(exc, what, scrub) from exc
                if time.monotonic() + delay > retry_until:
                    raise DatastoreUnavailable(
                        f"{what}: {scrub.display} unreachable: {scrub(_message(exc))}"
                    ) from exc
                log.warning("%s: datastore %s unavailable; retrying", what, scrub.display)
                with contextlib.suppress(Exception):
                    await self._pool.check()
                await asyncio.sleep(delay * (0.5 + random.random()))
                delay, retried = min(delay * 2, 2.0), True

    async def submit_jobs(self, jobs: Sequence[NewJob]) -> list[int]:
        """Submits awaited together share a transaction (`batcher.AsyncSubmitBatcher`). Jobs
        with unique keys are for the blocking `Store.submit`: SubmitError here."""
        if not jobs:
            return []
        if any(job.key is not None for job in jobs):
            raise SubmitError("jobs with a unique key go through submit_with or submit_many")
        return await self._batcher.submit(jobs)

    async def _write_jobs(self, jobs: Sequence[NewJob]) -> list[int]:
        plan = self._reserve.plan(len(jobs), time.monotonic())
        ids = plan.ids
        url = self._connector.scrub.display

        async def submit(conn: AConn, retried: bool) -> list[int]:
            if retried and len(ids) == len(jobs):
                cur = await conn.execute(q.JOB_EXISTS, (ids[0],))
                if await cur.fetchone() is not None:
                    return ids  # the try whose connection broke had committed
            if len(ids) < len(jobs):
                cur = await conn.execute(q.ALLOCATE_IDS, (len(jobs) - len(ids),))
                ids.extend(sorted(int(r[0]) for r in await cur.fetchall()))
            params = {
                "batch": q.submit_batch(ids, jobs),
                "shard": q.submitter_shard(),
                "ahead": plan.ahead,
                "park_after": rules.PARK_AFTER_S,
            }
            row = await (await conn.execute(q.SUBMIT, params)).fetchone()
            if row is None or row[0] != len(jobs):
                raise SchemaError(texts.no_cluster_row(url))
            plan.reserved = sorted(int(i) for i in row[2])
            return ids

        try:
            return await self._run("submit jobs", submit)
        except DatastoreUnavailable as exc:
            if len(ids) < len(jobs):
                raise  # some ids were never reserved, so no INSERT was sent
            raise DatastoreUnavailable(
                f"{exc}. The batch of {len(ids)} jobs (ids {ids[0]}..{ids[-1]}) may or may not "
                f"have been recorded: once the datastore is back, `shoal job {ids[0]}` tells"
            ) from exc
        finally:
            self._reserve.settle(plan, time.monotonic())

    async def read_job(self, job_id: int) -> Job | None:
        async def read(conn: AConn, _: bool) -> Job | None:
            row = await (await conn.execute(q.READ_JOB, (job_id,))).fetchone()
            return None if row is None else job_from_row(row)

        return await self._run("read job", read)

    async def wait_for_end(self, job_id: int, timeout_s: float) -> None:
        event = asyncio.Event()
        self._waiters.setdefault(job_id, set()).add(event)
        try:
            await self._start_listening(min(timeout_s, LISTEN_WAIT_S))
            # Read once more now that this waiter hears notifications: the end may have been
            # announced between the caller's read and the waiter's registration. What woke it
            # before this read is answered by the read.
            event.clear()
            job = await self.read_job(job_id)
            if job is None or job.state.is_final:
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(event.wait(), min(timeout_s, FALLBACK_POLL_S))
        finally:
            forget_waiter(self._waiters, job_id, event)

    def is_listening(self) -> bool:
        """Whether finish notifications reach this loop now (a waiter may rely on them)."""
        return self._listening.is_set()

    async def _start_listening(self, patience_s: float) -> None:
        if self._listener is None or self._listener.done():
            self._listener = asyncio.get_running_loop().create_task(self._listen())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._listening.wait(), patience_s)

    async def _listen(self) -> None:
        """Keep one LISTEN connection and wake the waiters of every job announced on it."""
        connector = self._connector
        delay = 0.1
        while True:
            try:
                async with await AsyncConnection.connect(
                    connector.url, autocommit=True, **connector.connect_kwargs
                ) as conn:
                    await conn.execute(f"LISTEN {q.DONE_CHANNEL}")
                    self._listening.set()
                    self._wake_all()  # anything may have ended before LISTEN took effect
                    delay = 0.1
                    async for note in conn.notifies():
                        self._wake(note.payload)
            except (psycopg.Error, OSError) as exc:
                log.debug("LISTEN %s lost: %s", q.DONE_CHANNEL, connector.scrub(_message(exc)))
            finally:
                self._listening.clear()
                self._wake_all()  # notifications may be lost while disconnected: read again
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)

    def _wake(self, payload: str) -> None:
        if payload == "*":
            self._wake_all()
            return
        for part in payload.split(","):
            if part.isdigit():
                for event in self._waiters.get(int(part), ()):
                    event.set()

    def _wake_all(self) -> None:
        for events in self._waiters.values():
            for event in events:
                event.set()

    async def aclose(self) -> None:
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._listener
            self._listener = None
        if self._opened:
            await self._pool.close()
            self._opened = False
