"""PostgreSQL submits in a stream: one statement each, under ids the previous submit reserved,
and still never a job twice or a job lost when the connection breaks around the commit.

Every test works in a brand-new database cloned from the run's migrated template. FRESH_S is
raised so that a slow machine cannot let a reservation go stale between two submits of a test.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import psycopg
import pytest

from shoal.model import JobState, NewJob, Submitted
from shoal.store.postgres import PostgresStore, reserve
from shoal.store.postgres import queries as q

from pgutil import ADMIN_URL, migrated_pg_database, pg_available

pytestmark = pytest.mark.postgres

if not pg_available():  # with CI=true pg_available raises instead: CI never skips these
    pytest.skip(
        "!!! PostgreSQL is not reachable on 127.0.0.1:5432: PostgreSQL tests SKIPPED",
        allow_module_level=True,
    )


@pytest.fixture
def url() -> Iterator[str]:
    with migrated_pg_database() as db_url:
        yield db_url


@pytest.fixture
def store(url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[PostgresStore]:
    monkeypatch.setattr(reserve, "FRESH_S", 60.0)
    s = PostgresStore.open(url, retry_for_s=30.0)
    yield s
    s.close()


def new_jobs(n: int) -> list[NewJob]:
    return [NewJob("t", f"[{i}]", "{}") for i in range(n)]


class Recording:
    """A connection that notes each statement it runs (the rest passes through)."""

    def __init__(self, conn: Any, statements: list[str]) -> None:
        self._conn = conn
        self._statements = statements

    def execute(self, query: str, params: Any = None) -> Any:
        self._statements.append(query)
        return self._conn.execute(query, params)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)


def record_tries(store: PostgresStore) -> list[list[str]]:
    """The statements of every try of every operation of `store` from now on, a list per try."""
    tries: list[list[str]] = []
    real = store._db.run

    def run(what: str, operation: Callable[[Any, bool], Any]) -> Any:
        def recorded(conn: Any, retried: bool) -> Any:
            tries.append([])
            return operation(Recording(conn, tries[-1]), retried)

        return real(what, recorded)

    store._db.run = run  # type: ignore[method-assign]
    return tries


def start_stream(store: PostgresStore) -> list[int]:
    """Two submits in quick succession: the second reserves ids for the next."""
    return store.submit_jobs(new_jobs(1)) + store.submit_jobs(new_jobs(1))


def queued(store: PostgresStore) -> int:
    return store.read_cluster().job_counts.get(JobState.QUEUED, 0)


def test_submits_in_a_stream_take_one_statement_each(store: PostgresStore) -> None:
    tries = record_tries(store)
    ids = start_stream(store) + [i for _ in range(5) for i in store.submit_jobs(new_jobs(1))]
    assert tries[:2] == [[q.ALLOCATE_IDS, q.SUBMIT]] * 2
    assert tries[2:] == [[q.SUBMIT]] * 5
    assert ids == sorted(ids) and len(set(ids)) == 7 and queued(store) == 7


def test_a_lone_submit_asks_for_its_ids_first_and_reserves_none(store: PostgresStore) -> None:
    # Ids reserved by a lone submit would most likely go stale: it reserves none, so a process
    # that submits now and then uses ids one after another.
    first = store.submit_jobs(new_jobs(2))
    store._reserve = reserve.IdReserve()  # as if the first had been long ago
    tries = record_tries(store)
    second = store.submit_jobs(new_jobs(2))
    assert tries == [[q.ALLOCATE_IDS, q.SUBMIT]]
    assert second == [first[1] + 1, first[1] + 2]


def test_a_group_commit_larger_than_the_reservation_takes_the_rest_after_it(
    store: PostgresStore,
) -> None:
    before = start_stream(store)
    tries = record_tries(store)
    ids = store.submit_jobs(new_jobs(5))  # two reserved, three more allocated
    assert tries == [[q.ALLOCATE_IDS, q.SUBMIT]]
    assert before[-1] < ids[0] and ids == sorted(ids) and queued(store) == 7


def test_ids_keep_increasing_across_keyed_plain_and_async_submits(store: PostgresStore) -> None:
    async def submit_async() -> list[int]:
        try:
            return await store.async_jobs().submit_jobs(new_jobs(2))
        finally:
            await store.aclose_async()

    ids = start_stream(store)
    for _ in range(3):
        ids += [s.job_id for s in store.submit([NewJob("t", "[]", "{}", key=f"k{len(ids)}")])]
        ids += asyncio.run(submit_async())
        ids += store.submit_jobs(new_jobs(3))
    assert ids == sorted(ids) and len(set(ids)) == len(ids) == queued(store)


def run_twice(store: PostgresStore) -> list[list[str]]:
    """Make every operation commit once and then run again as a retry, as after a connection
    lost while committing; the statements of each try, as `record_tries`."""
    tries = record_tries(store)
    recording = store._db.run

    def twice(what: str, operation: Callable[[Any, bool], Any]) -> Any:
        recording(what, lambda conn, _: operation(conn, False))
        return recording(what, lambda conn, _: operation(conn, True))

    store._db.run = twice  # type: ignore[method-assign]
    return tries


def test_a_one_statement_submit_retried_after_its_commit_does_not_insert_twice(
    store: PostgresStore,
) -> None:
    start_stream(store)
    tries = run_twice(store)
    ids = store.submit_jobs(new_jobs(2))
    assert tries == [[q.SUBMIT], [q.JOBS_PRESENT]]
    assert queued(store) == 4 and all(store.read_job(i) is not None for i in ids)


def test_a_keyed_submit_under_reserved_ids_retried_reports_what_it_did(
    store: PostgresStore,
) -> None:
    [held] = store.submit([NewJob("t", "[]", "{}", key="held")])
    start_stream(store)
    tries = run_twice(store)
    done = store.submit([NewJob("t", "[1]", "{}", key="new"), NewJob("t", "[2]", "{}", key="held")])
    assert q.ALLOCATE_IDS not in tries[0] and tries[1][0] == q.JOBS_PRESENT
    assert [s.created for s in done] == [True, False] and done[1] == Submitted(held.job_id, False)
    assert queued(store) == 4


def test_a_one_statement_submit_whose_connection_is_killed_mid_insert_lands_once(
    store: PostgresStore, url: str
) -> None:
    # The INSERT waits on a lock; its backend is terminated there, so the first try never
    # commits. The retry, under the same reserved ids, must find nothing and insert once.
    before = start_stream(store)
    tries = record_tries(store)
    result: list[int] = []
    with psycopg.connect(url, autocommit=True) as locker:
        with locker.transaction():
            locker.execute("LOCK TABLE jobs IN ACCESS EXCLUSIVE MODE")
            submitter = threading.Thread(
                target=lambda: result.extend(store.submit_jobs(new_jobs(1)))
            )
            submitter.start()
            [pid] = wait_for_backend_waiting_on_a_lock(url, "WITH ins AS")
            with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
                admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
            wait_for_backend_waiting_on_a_lock(url, "SELECT id FROM jobs")  # the retry looks
        submitter.join(timeout=30)
    assert tries[0] == [q.SUBMIT] and tries[-1] == [q.JOBS_PRESENT, q.SUBMIT]
    assert all(t[0] == q.JOBS_PRESENT for t in tries[1:])  # every retry looked first
    [job_id] = result
    assert job_id > before[-1] and queued(store) == 3
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT count(*) FROM jobs WHERE id = %s", (job_id,)).fetchone() == (1,)


def wait_for_backend_waiting_on_a_lock(url: str, query_start: str) -> list[int]:
    """The pids of the database's backends whose query starts so and that wait on a lock."""
    deadline = time.monotonic() + 20.0
    with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
        while time.monotonic() < deadline:
            rows = admin.execute(
                "SELECT pid FROM pg_stat_activity WHERE datname = %s AND wait_event_type = 'Lock'"
                " AND ltrim(query, E' \n') LIKE %s",
                (url.rsplit("/", 1)[1], query_start + "%"),
            ).fetchall()
            if rows:
                return [int(r[0]) for r in rows]
            time.sleep(0.01)
    raise AssertionError(f"no backend waited on a lock running {query_start!r}")


def test_an_async_one_statement_submit_retried_after_its_commit_does_not_insert_twice(
    store: PostgresStore,
) -> None:
    async def submit() -> list[int]:
        side = store.async_jobs()
        try:
            await side.submit_jobs(new_jobs(1))
            await side.submit_jobs(new_jobs(1))  # reserves for the next
            real = side._run  # type: ignore[attr-defined]

            async def twice(what: str, operation: Callable[[Any, bool], Awaitable[Any]]) -> Any:
                await real(what, lambda conn, _: operation(conn, False))
                return await real(what, lambda conn, _: operation(conn, True))

            side._run = twice  # type: ignore[attr-defined]
            return await side.submit_jobs(new_jobs(2))  # under the ids reserved
        finally:
            await store.aclose_async()

    ids = asyncio.run(submit())
    assert queued(store) == 4 and all(store.read_job(i) is not None for i in ids)
