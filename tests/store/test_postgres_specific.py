"""PostgreSQL-only behaviour: schema checks, surviving the server, retries that must not double
writes, many connections claiming at once, wake-ups, and the claim plan on a large table.

Every test works in a brand-new database (tests/pgutil.py), cloned from the run's migrated template
when it takes `store`. Without a server they skip loudly,
except with CI=true, where they fail.
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import psycopg
import pytest

from shoal.errors import ConfigError, DatastoreUnavailable, SchemaError
from shoal.model import (
    JobFilter,
    JobState,
    NewJob,
    NodeRecord,
    NodeState,
    Outcome,
    Submitted,
    TaskLimit,
)
from shoal.store import open_store
from shoal.store.postgres import (
    PostgresStore,
    jobs,
    latest_version,
    list_jobs_query,
    migrations,
    nodes,
)
from shoal.store.postgres import queries as q
from shoal.store.postgres.conn import Connector

from pgutil import ADMIN_URL, fresh_pg_database, migrated_pg_database, pg_available

pytestmark = pytest.mark.postgres
SCHEMA_TABLE_V1 = """
CREATE TABLE shoal_schema (version integer PRIMARY KEY, name text NOT NULL,
                           applied_at double precision NOT NULL DEFAULT 0)
"""

if not pg_available():  # with CI=true pg_available raises instead: CI never skips these
    pytest.skip(
        "!!! PostgreSQL is not reachable on 127.0.0.1:5432: PostgreSQL tests SKIPPED",
        allow_module_level=True,
    )


@pytest.fixture
def url(request: pytest.FixtureRequest) -> Iterator[str]:
    """A new database: empty, or for a test that also takes `store`, that store's database,
    cloned from the run's migrated template."""
    new_database = migrated_pg_database if "store" in request.fixturenames else fresh_pg_database
    with new_database() as db_url:
        yield db_url


@pytest.fixture
def store(url: str) -> Iterator[PostgresStore]:
    s = PostgresStore.open(url, retry_for_s=30.0)
    yield s
    s.close()


def start_node(store: PostgresStore, name: str, tasks: Sequence[str] = ("t",)) -> NodeRecord:
    node = store.register_node(name, "host", os.getpid(), 4, tasks, 60.0)
    assert store.set_node_state(node.id, NodeState.INITIALIZING, NodeState.WAITING)
    found = store.read_node(node.id)
    assert found is not None
    return found


def new_jobs(n: int) -> list[NewJob]:
    return [NewJob("t", f"[{i}]", "{}") for i in range(n)]


def admin(sql: str, *params: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
        cur = conn.execute(sql, params or None)
        return cur.fetchall() if cur.description else []


def dbname(url: str) -> str:
    return url.rsplit("/", 1)[1]


def terminate_store_connections(url: str) -> int:
    rows = admin(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
        " WHERE datname = %s AND application_name = 'shoal'",
        dbname(url),
    )
    return len(rows)


# -- schema ------------------------------------------------------------------------------------


def test_open_does_not_create_the_schema_and_check_says_what_to_run(url: str) -> None:
    store = open_store(url)
    try:
        with pytest.raises(SchemaError, match="shoal init --db"):
            store.check_schema()
        store.initialize()
        store.check_schema()
        store.initialize()  # idempotent
    finally:
        store.close()
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT version, name FROM shoal_schema ORDER BY version").fetchall()
    assert rows and rows[-1][0] == latest_version()


def test_schema_newer_than_the_code_is_refused(store: PostgresStore, url: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("INSERT INTO shoal_schema (version, name) VALUES (9999, '9999_future.sql')")
    with pytest.raises(SchemaError, match="newer"):
        store.check_schema()


def test_migration_to_v2_backfills_the_counts(url: str) -> None:
    assert latest_version() >= 2  # later migrations apply on top; this test is about 0002
    [first] = [m.sql for m in migrations() if m.version == 1]
    with psycopg.connect(url, autocommit=True) as conn:  # a database as `shoal init` v1 left it
        conn.execute(SCHEMA_TABLE_V1)
        conn.execute(first.encode())
        conn.execute("INSERT INTO shoal_schema (version, name) VALUES (1, '0001_initial.sql')")
        conn.execute("INSERT INTO cluster (id, partitions, created_at) VALUES (1, 128, 0)")
        conn.execute("INSERT INTO partitions (partition) SELECT p FROM generate_series(0, 127) p")
        conn.execute(
            "INSERT INTO jobs (id, partition, task, args, kwargs, state, max_attempts, run_after,"
            " created_at) SELECT i, i % 128, CASE WHEN i % 3 = 0 THEN 'a' ELSE 'b' END, '[]',"
            " '{}', (ARRAY['queued', 'succeeded', 'failed', 'cancelled'])[1 + i % 4], 1, 0, 0"
            " FROM generate_series(1, 1200) i"
        )
        conn.execute("SELECT setval('jobs_id_seq', 1200)")
    store = PostgresStore.open(url, retry_for_s=30.0)
    try:
        with pytest.raises(SchemaError, match="shoal init"):
            store.check_schema()  # a node on a v1 database is told to migrate
        store.initialize()
        store.check_schema()
        counts = store.count_jobs_by_task()
        assert counts[("a", JobState.QUEUED)] == 100 and counts[("b", JobState.FAILED)] == 200
        assert sum(counts.values()) == 1200
        node = start_node(store, "n", tasks=["a", "b"])
        assert len(store.claim_jobs(node.id, 10)) == 10
        assert store.read_cluster().job_counts[JobState.QUEUED] == 300 - 10
    finally:
        store.close()
    with psycopg.connect(url) as conn:
        names = {r[0] for r in conn.execute("SELECT indexname FROM pg_indexes")}
    assert {"jobs_final", "jobs_task_id"} <= names and not {"jobs_state", "jobs_task"} & names


def test_partition_count_never_shrinks(store: PostgresStore) -> None:
    with pytest.raises(ConfigError, match="P can only grow"):
        store.initialize(partitions=7)
    store.initialize()  # the default means "whatever it already is"


# -- secrets -----------------------------------------------------------------------------------


def test_password_never_appears_in_errors_or_display(url: str) -> None:
    unreachable = "postgresql://shoal:s3cr%40t@127.0.0.1:1/nowhere"
    with pytest.raises(DatastoreUnavailable) as err:
        open_store(unreachable)
    assert "s3cr" not in str(err.value) and "***" in str(err.value)
    with_password = url.replace("postgres@", "postgres:hunter2@")  # trust auth ignores it
    store = open_store(with_password)
    try:
        assert "hunter2" not in store.url_for_display and "***" in store.url_for_display
        with pytest.raises(SchemaError) as schema_err:
            store.check_schema()
        assert "hunter2" not in str(schema_err.value)
    finally:
        store.close()


def test_malformed_url_is_a_config_error() -> None:
    with pytest.raises(ConfigError):
        open_store("postgresql://127.0.0.1:5432/db?nonsense_option=1")


# -- surviving the server ----------------------------------------------------------------------


def socket_settings(conn: psycopg.Connection[Any]) -> tuple[int, int]:
    """(TCP_KEEPIDLE s, TCP_USER_TIMEOUT ms) as the kernel holds them on the connection's socket."""
    with socket.socket(fileno=os.dup(conn.pgconn.socket)) as sock:
        return (
            sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE),
            sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT),
        )


def test_url_settings_win_over_the_connection_defaults(url: str) -> None:
    connector = Connector(f"{url}?keepalives_idle=20&tcp_user_timeout=7000", retry_for_s=5.0)
    try:
        pooled = connector.run("read the socket", lambda conn, _: socket_settings(conn))
        with connector.connect() as dedicated:  # the LISTEN connection's kind
            assert socket_settings(dedicated) == pooled
            parameters = dedicated.info.get_parameters()
    finally:
        connector.close()
    assert pooled == (20, 7000)
    assert parameters["keepalives_interval"] == "3" and parameters["application_name"] == "shoal"


def test_libpq_environment_wins_over_the_connection_defaults(
    url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PGAPPNAME", "billing-workers")
    connector = Connector(url, retry_for_s=5.0)
    try:
        name = connector.run("read", lambda conn, _: conn.info.get_parameters()["application_name"])
    finally:
        connector.close()
    assert name == "billing-workers"


def test_connections_give_up_on_unacknowledged_data_by_default(store: PostgresStore) -> None:
    # Keepalives never fire while sent data waits for an acknowledgement: only this bound does.
    keepidle, user_timeout_ms = store._db.run("read the socket", lambda c, _: socket_settings(c))
    assert keepidle == 10 and 0 < user_timeout_ms <= 20000


def test_sessions_have_statement_and_idle_transaction_timeouts(store: PostgresStore) -> None:
    def show(conn: psycopg.Connection[Any], _: bool) -> tuple[str, str]:
        a = conn.execute("SHOW statement_timeout").fetchone()
        b = conn.execute("SHOW idle_in_transaction_session_timeout").fetchone()
        assert a is not None and b is not None
        return str(a[0]), str(b[0])

    statement, idle = store._db.run("show settings", show)
    assert statement != "0" and idle != "0"


def test_operations_survive_terminated_connections(
    store: PostgresStore, url: str, caplog: pytest.LogCaptureFixture
) -> None:
    node = start_node(store, "a")
    store.submit_jobs(new_jobs(10))
    for _ in range(3):
        assert terminate_store_connections(url) >= 1
        with caplog.at_level(logging.WARNING, logger="shoal.store.postgres"):
            [job] = store.claim_jobs(node.id, 1)
        assert store.finish_jobs(node.id, [Outcome(job.id, job.attempts, True, "1")]) == [True]
    assert terminate_store_connections(url) >= 1
    ids = store.submit_jobs(new_jobs(5))
    assert [j.state for j in map(store.read_job, ids)] == [JobState.QUEUED] * 5  # type: ignore[union-attr]
    assert store.heartbeat(node.id, 60.0) is not None
    assert store.read_cluster().job_counts[JobState.SUCCEEDED] == 3
    assert any("retrying" in r.getMessage() for r in caplog.records)


def test_read_only_connections_are_dropped_and_writes_go_through(
    store: PostgresStore, url: str, caplog: pytest.LogCaptureFixture
) -> None:
    # A failover leaves pooled connections on a server that is now a read-only standby. Make
    # the store's connections read-only, then writable for new sessions only: the store must
    # drop the old ones and reconnect rather than fail.
    name = dbname(url)
    admin(f'ALTER DATABASE "{name}" SET default_transaction_read_only = on')
    try:
        terminate_store_connections(url)
        assert store.read_job(1) is None  # reads work, on read-only sessions
    finally:
        admin(f'ALTER DATABASE "{name}" RESET default_transaction_read_only')
    with caplog.at_level(logging.WARNING, logger="shoal.store.postgres"):
        [job_id] = store.submit_jobs(new_jobs(1))
    assert store.read_job(job_id) is not None
    assert any("read-only" in r.getMessage() for r in caplog.records)


def test_lost_database_raises_datastore_unavailable_after_the_retry_window(
    store: PostgresStore, url: str
) -> None:
    store._db.retry_for_s = 1.0
    admin(f'DROP DATABASE "{dbname(url)}" WITH (FORCE)')
    with pytest.raises(DatastoreUnavailable, match="unreachable"):
        store.now()


def test_a_submit_that_gives_up_names_the_ids_to_check(store: PostgresStore, url: str) -> None:
    # The insert waits on a lock past lock_timeout (10 s), a transient error, until the retry
    # window is over: the ids were reserved, so the error names them.
    store._db.retry_for_s = 1.0
    with psycopg.connect(url, autocommit=True) as locker, locker.transaction():
        locker.execute("LOCK TABLE jobs IN ACCESS EXCLUSIVE MODE")
        with pytest.raises(DatastoreUnavailable, match=r"may or may not .*`shoal job \d+`"):
            store.submit_jobs(new_jobs(3))
    assert store.read_cluster().job_counts.get(JobState.QUEUED, 0) == 0


# -- retries after an unknown commit outcome -----------------------------------------------------


def run_twice(store: PostgresStore) -> None:
    """Make every operation commit once and then run again as a retry, as after a connection
    lost while committing: the retry must neither write twice nor report the wrong outcome."""
    real = store._db.run

    def twice(what: str, operation: Callable[[Any, bool], Any]) -> Any:
        real(what, lambda conn, _: operation(conn, False))
        return real(what, lambda conn, _: operation(conn, True))

    store._db.run = twice  # type: ignore[method-assign]


def test_retried_submit_does_not_insert_twice(store: PostgresStore) -> None:
    run_twice(store)
    ids = store.submit_jobs(new_jobs(50))
    assert store.read_cluster().job_counts[JobState.QUEUED] == 50
    assert ids == list(range(ids[0], ids[0] + 50))


def test_retried_keyed_submit_reports_what_the_first_try_did(store: PostgresStore) -> None:
    [held] = store.submit([NewJob("t", "[]", "{}", key="held")])
    run_twice(store)
    done = store.submit(
        [NewJob("t", "[1]", "{}", key="new"), NewJob("t", "[2]", "{}", key="held"), *new_jobs(2)]
    )
    assert [s.created for s in done] == [True, False, True, True]
    assert done[1] == Submitted(held.job_id, False)
    assert store.read_cluster().job_counts[JobState.QUEUED] == 4
    all_held = store.submit([NewJob("t", "[]", "{}", key="new")])  # writes nothing: done again
    assert all_held == [Submitted(done[0].job_id, False)]


def test_retried_claim_returns_the_jobs_it_took_and_takes_no_more(store: PostgresStore) -> None:
    node = start_node(store, "a")
    ids = store.submit_jobs(new_jobs(10))
    run_twice(store)
    claimed = store.claim_jobs(node.id, 3)
    assert [j.id for j in claimed] == ids[:3]
    assert store.read_cluster().job_counts[JobState.RUNNING] == 3


def test_retried_finish_reports_applied_once(store: PostgresStore) -> None:
    node = start_node(store, "a")
    store.submit_jobs(new_jobs(3))
    a, b, c = store.claim_jobs(node.id, 3)
    run_twice(store)
    outcomes = [
        Outcome(a.id, 1, True, "1"),
        Outcome(b.id, 1, False, error="boom", retry_in_s=60.0),
        Outcome(c.id, 1, False, error="final"),
        Outcome(c.id, 2, True, "stale"),
    ]
    assert store.finish_jobs(node.id, outcomes) == [True, True, True, False]
    record = store.read_node(node.id)
    assert record is not None and (record.processed, record.failed) == (3, 2)


# -- many connections at once ------------------------------------------------------------------


def test_many_stores_claiming_at_once_claim_each_job_once_by_its_owner(
    store: PostgresStore, url: str
) -> None:
    nodes = [start_node(store, f"n{i}") for i in range(5)]
    ids = store.submit_jobs(new_jobs(3000))
    owners = store.read_cluster().owners
    claims: list[tuple[int, int, int]] = []
    lock = threading.Lock()

    def worker(node: NodeRecord) -> None:
        own = PostgresStore.open(url, max_connections=2)
        try:
            while batch := own.claim_jobs(node.id, 11):
                own.finish_jobs(node.id, [Outcome(j.id, j.attempts, True, "0") for j in batch])
                with lock:
                    claims.extend((j.id, j.partition, node.id) for j in batch)
        finally:
            own.close()

    threads = [threading.Thread(target=worker, args=(n,)) for n in nodes * 3]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(c[0] for c in claims) == ids
    assert all(owners[part] == node for _, part, node in claims)
    assert store.read_cluster().job_counts[JobState.SUCCEEDED] == 3000


def test_claim_uses_the_queued_index_on_a_large_table(store: PostgresStore, url: str) -> None:
    node = start_node(store, "a")
    start_node(store, "b")
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO jobs (id, partition, task, args, kwargs, state, attempts, max_attempts,"
            " run_after, created_at, finished_at)"
            " SELECT i, i % 128, 't', '[]', '{}', 'succeeded', 1, 4, 0, 0, 0"
            " FROM generate_series(1000000, 1059999) i"
        )
        conn.execute(
            "INSERT INTO jobs (id, partition, task, args, kwargs, state, max_attempts,"
            " run_after, created_at)"
            " SELECT i, i % 128, 't', '[]', '{}', 'queued', 4, 0, 0"
            " FROM generate_series(2000000, 2059999) i"
        )
        conn.execute("ANALYZE jobs")
        params = {"node": node.id, "shard": 1, "limit": 200, "start": 200, "token": 1, "why": "x"}
        plan = "\n".join(str(r[0]) for r in conn.execute("EXPLAIN " + q.CLAIM, params))
    assert "jobs_queued_partition" in plan
    assert "Seq Scan on jobs" not in plan
    # A probe in id order per partition, not a read of every queued job of it and a sort.
    assert "Bitmap Heap Scan on jobs q" not in plan
    assert len(store.claim_jobs(node.id, 200)) == 200


@pytest.mark.parametrize("name", ["FINISH", "FINISH_CANCELLED", "PROGRESS"])
def test_an_update_of_held_jobs_reads_only_their_rows_with_statistics_from_a_small_table(
    store: PostgresStore, url: str, name: str
) -> None:
    """Statistics taken while the table held a few jobs (a new database; a burst before autovacuum
    analyzed it) made every finish read the whole table, and hash it, to find its few rows."""
    node = start_node(store, "a")
    store.submit_jobs(new_jobs(10))
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("ANALYZE jobs")
        conn.execute(
            "INSERT INTO jobs (id, partition, task, args, kwargs, state, attempts, max_attempts,"
            " run_after, created_at, finished_at)"
            " SELECT i, i % 128, 't', '[]', '{}', 'succeeded', 1, 4, 0, 0, 0"
            " FROM generate_series(1000000, 1019999) i"
        )
    held = store.claim_jobs(node.id, 4)
    assert len(held) == 4
    outcomes = [Outcome(j.id, j.attempts, True, result_json="1") for j in held]
    params = {
        "node": node.id,
        "shard": 1,
        "batch": q.outcome_batch(outcomes),
        "head": "cancelled: ",
        "anyway": "finished anyway",
        "ids": [j.id for j in held],
        "attempts": [j.attempts for j in held],
        "fractions": [0.5] * 4,
        "messages": ["half"] * 4,
        "park_after": 5.0,
    }
    with psycopg.connect(url, autocommit=True) as conn, conn.transaction(force_rollback=True):
        # ANALYZE runs the statement: the rollback undoes it
        [[explained]] = conn.execute(
            "EXPLAIN (ANALYZE, FORMAT JSON) " + getattr(q, name), params
        ).fetchall()
    reads = [n for n in plan_nodes(explained[0]["Plan"]) if n.get("Relation Name") == "jobs"]
    assert reads and all(n["Node Type"] != "Seq Scan" for n in reads), explained
    assert max(n["Actual Rows"] * n["Actual Loops"] for n in reads) <= 4


@pytest.mark.parametrize("name", ["CLAIMED_BY_TOKEN", "CLAIMED_BY_TOKENS"])
def test_a_retried_claim_finds_what_it_took_without_reading_the_table(
    store: PostgresStore, url: str, name: str
) -> None:
    """`state IN ('running', 'claimed')` implies neither partial index of the node's jobs: the
    look after a claim lost with its connection read every row, on a table of any size."""
    node = start_node(store, "a")
    store.submit_jobs(new_jobs(8))
    taken = store.claim_jobs(node.id, 8, start=4)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO jobs (id, partition, task, args, kwargs, state, attempts, max_attempts,"
            " run_after, created_at, finished_at)"
            " SELECT i, i % 128, 't', '[]', '{}', 'succeeded', 1, 4, 0, 0, 0"
            " FROM generate_series(1000000, 1049999) i"
        )
        conn.execute("ANALYZE jobs")
        [token] = {
            r[0]
            for r in conn.execute("SELECT claim_token FROM jobs WHERE claimer = %s", (node.id,))
        }
        params = {"node": node.id, "token": token, "tokens": [token]}
        plan = "\n".join(str(r[0]) for r in conn.execute("EXPLAIN " + getattr(q, name), params))
        found = conn.execute(getattr(q, name), params).fetchall()
    assert "Seq Scan on jobs" not in plan, plan
    assert sorted(r[0] for r in found) == sorted(j.id for j in taken)
    assert {r[5] for r in found} == {"running", "claimed"}


def plan_nodes(plan: dict[str, Any]) -> list[dict[str, Any]]:
    """Every node of an EXPLAIN (FORMAT JSON) plan."""
    return [plan] + [node for child in plan.get("Plans", []) for node in plan_nodes(child)]


def index_scans(plan: dict[str, Any], index: str) -> list[dict[str, Any]]:
    """Every node of an EXPLAIN (FORMAT JSON) plan that scans `index`."""
    found = [plan] if plan.get("Index Name") == index else []
    for child in plan.get("Plans", []):
        found += index_scans(child, index)
    return found


def test_a_claim_by_priority_reads_a_few_rows_per_partition_of_a_large_backlog(
    store: PostgresStore, url: str
) -> None:
    node = start_node(store, "a")
    start_node(store, "b")
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO jobs (id, partition, task, args, kwargs, state, max_attempts,"
            " run_after, created_at, priority)"
            " SELECT i, i % 128, 't', '[]', '{}', 'queued', 4, 0, 0, i % 7 - 3"
            " FROM generate_series(1, 60000) i"
        )
        conn.execute("ANALYZE jobs")
        section = store.read_node(node.id).section  # type: ignore[union-attr]
        params = {"node": node.id, "shard": 1, "limit": 200, "start": 200, "token": 1, "why": "x"}
        with conn.transaction(force_rollback=True):  # ANALYZE runs the claim: undo it
            [[explained]] = conn.execute(
                "EXPLAIN (ANALYZE, FORMAT JSON) " + q.CLAIM, params
            ).fetchall()
    scans = index_scans(explained[0]["Plan"], "jobs_queued_partition")
    cap = max(4, -(-2 * 200 // len(section)))
    assert len(scans) == 1 and scans[0]["Actual Loops"] == len(section)
    assert scans[0]["Actual Rows"] <= cap  # per loop: the first few of each partition
    batch = store.claim_jobs(node.id, 200)
    assert len(batch) == 200 and {j.priority for j in batch} == {3}
    assert [j.id for j in batch] == sorted(j.id for j in batch)


@pytest.mark.parametrize(
    "where",
    [
        JobFilter(state=JobState.QUEUED),
        JobFilter(state=JobState.RUNNING),
        JobFilter(state=JobState.FAILED),
        JobFilter(state=JobState.CANCELLED),
        JobFilter(task="rare"),
        JobFilter(task="t", state=JobState.FAILED),
    ],
)
def test_job_lists_stay_indexed_on_a_large_table(
    store: PostgresStore, url: str, where: JobFilter
) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO jobs (id, partition, task, args, kwargs, state, attempts, max_attempts,"
            " run_after, created_at, finished_at, claimer)"
            " SELECT i, i % 128, CASE WHEN i % 5000 = 0 THEN 'rare' ELSE 't' END, '[]', '{}',"
            " (ARRAY['succeeded', 'succeeded', 'succeeded', 'queued', 'running'])[1 + i % 5],"
            " 1, 4, 0, 0, 0, 1"
            " FROM generate_series(1, 100000) i"
        )
        conn.execute(
            "UPDATE jobs SET state = CASE WHEN id % 2 = 0 THEN 'failed' ELSE 'cancelled' END"
            " WHERE id % 1000 IN (7, 8)"
        )
        conn.execute("ANALYZE jobs")
        sql, params = list_jobs_query(where, 50, None)
        plan = "\n".join(str(r[0]) for r in conn.execute("EXPLAIN " + sql, params))
    assert "Seq Scan on jobs" not in plan, plan
    assert "Index" in plan, plan
    assert len(store.list_jobs(where)) > 0


# -- wake-ups ----------------------------------------------------------------------------------


def test_wait_for_work_wakes_only_for_the_nodes_own_section(store: PostgresStore) -> None:
    a, b = start_node(store, "a"), start_node(store, "b")
    assert store.wait_for_work(a.id, 0.05)  # first call: just connected, may have missed some
    owners = store.read_cluster().owners
    [last] = store.submit_jobs(new_jobs(1))
    store.wait_for_work(a.id, 0.2)  # drain whatever that one caused
    seen: set[int | None] = set()
    while seen != {a.id, b.id}:
        owner = owners[(last + 1) % len(owners)]
        [last] = store.submit_jobs(new_jobs(1))
        assert store.wait_for_work(a.id, 5.0 if owner == a.id else 0.3) is (owner == a.id)
        seen.add(owner)


def test_a_submit_wakes_only_the_owner_of_its_partition(store: PostgresStore, url: str) -> None:
    """Every submit woke every node's listener (each then read the payload and, if the
    partition was not its own, went back to waiting): with N nodes, N wake-ups per submit.
    Each owner now has a channel of its own."""
    a, b = start_node(store, "a"), start_node(store, "b")
    owners = store.read_cluster().owners
    channels = ("shoal_jobs", q.node_channel(a.id), q.node_channel(b.id))
    with psycopg.connect(url, autocommit=True) as listening:
        for channel in channels:
            listening.execute(f"LISTEN {channel}")
        for _ in range(4):
            [job_id] = store.submit_jobs(new_jobs(1))
            partition = job_id % len(owners)
            heard = [(n.channel, n.payload) for n in listening.notifies(timeout=0.5)]
            assert heard == [(q.node_channel(owners[partition]), str(partition))]
        ids = store.submit_jobs(new_jobs(8))  # one transaction: one notification per owner
        heard = {n.channel: set(n.payload.split(",")) for n in listening.notifies(timeout=0.5)}
        expected: dict[str, set[str]] = {}
        for job_id in ids:
            partition = job_id % len(owners)
            expected.setdefault(q.node_channel(owners[partition]), set()).add(str(partition))
        assert heard == expected


def test_wait_for_work_returns_promptly_when_a_job_arrives(store: PostgresStore) -> None:
    node = start_node(store, "a")
    store.wait_for_work(node.id, 0.01)
    woke: list[bool] = []
    waiter = threading.Thread(target=lambda: woke.append(store.wait_for_work(node.id, 30.0)))
    started = time.monotonic()
    waiter.start()
    store.submit_jobs(new_jobs(1))
    waiter.join(timeout=30.0)
    assert woke == [True]
    assert time.monotonic() - started < 10.0


# -- the documented roles ----------------------------------------------------------------------


def documented_roles_sql(suffix: str) -> str:
    text = (Path(__file__).parents[2] / "docs" / "postgres.md").read_text()
    block = text.split("<!-- roles-sql", 1)[1].split("```sql", 1)[1].split("```", 1)[0]
    for role in ("shoal_migrator", "shoal_node", "shoal_observer"):
        block = block.replace(role, f"{role}_{suffix}")
    return block


def test_documented_roles_can_do_their_jobs_and_no_more(url: str) -> None:
    suffix = uuid.uuid4().hex[:8]
    roles = [f"shoal_{r}_{suffix}" for r in ("migrator", "node", "observer")]
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(documented_roles_sql(suffix).encode())
    as_role = {r.split("_")[1]: url.replace("postgres@", f"{r}@") for r in roles}
    try:
        migrator = open_store(as_role["migrator"])
        migrator.initialize()
        migrator.close()

        node_store = open_store(as_role["node"])
        node_store.check_schema()
        node = start_node(node_store, "a")
        node_store.submit_jobs(new_jobs(3))
        jobs = node_store.claim_jobs(node.id, 3)
        assert node_store.finish_jobs(node.id, [Outcome(j.id, 1, True, "1") for j in jobs])
        node_store.request_pause("a", True)
        # A first limit locks the jobs table to count; a later registration lifts it.
        node_store.register_node("b", "host", 1, 4, ["t"], 30.0, [TaskLimit("t", 2)])
        node_store.register_node("c", "host", 1, 4, ["t"], 30.0)
        assert node_store.read_task_limits() == []
        node_store.record_sample(60.0)
        node_store.mark_dead_nodes()
        assert node_store.wait_for_work(node.id, 0.01)
        with pytest.raises(DatastoreUnavailable, match="refused"):
            node_store._db.run("ddl", lambda conn, _: conn.execute("DROP TABLE samples"))
        node_store.close()

        observer = open_store(as_role["observer"])
        observer.check_schema()
        assert observer.read_cluster().job_counts[JobState.SUCCEEDED] == 3
        assert observer.read_history(0) and observer.list_jobs(JobFilter())
        with pytest.raises(DatastoreUnavailable, match="refused"):
            observer.submit_jobs(new_jobs(1))
        observer.close()
    finally:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("DROP SCHEMA shoal CASCADE")
            for role in roles:
                conn.execute(f"DROP OWNED BY {role}")
                conn.execute(f"DROP ROLE {role}")


def test_claim_lost_after_its_commit_is_handed_over_by_the_next_claim(
    store: PostgresStore,
) -> None:
    node = start_node(store, "a")
    ids = store.submit_jobs(new_jobs(10))
    real = store._db.run

    def commit_then_fail(what: str, operation: Callable[[Any, bool], Any]) -> Any:
        real(what, operation)
        raise DatastoreUnavailable("connection lost while committing")

    store._db.run = commit_then_fail  # type: ignore[method-assign]
    with pytest.raises(DatastoreUnavailable):
        store.claim_jobs(node.id, 4)
    store._db.run = real  # type: ignore[method-assign]
    assert [j.id for j in store.claim_jobs(node.id, 3)] == ids[:3]  # the lost ones, oldest first
    again = store.claim_jobs(node.id, 10)  # the fourth went back to the queue, uncounted
    assert [j.id for j in again] == ids[3:] and again[0].attempts == 1
    assert store.read_cluster().job_counts[JobState.RUNNING] == 10


def test_the_pools_own_warnings_stay_off_an_unconfigured_applications_stderr(url: str) -> None:
    # An application that configured no logging: the pool's "discarding closed connection"
    # used to reach its stderr through logging's last-resort handler.
    script = f"""
import psycopg
from shoal.store.postgres import PostgresStore
store = PostgresStore.open({url!r})
store.now()
with psycopg.connect({ADMIN_URL!r}, autocommit=True) as admin:
    admin.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
        " WHERE datname = %s AND application_name = 'shoal'", ({dbname(url)!r},))
store.now()
store.close()
print("ok")
"""
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
    )
    assert done.stdout.strip() == "ok", done.stderr
    assert "discarding" not in done.stderr and "psycopg" not in done.stderr


def test_an_outcome_is_recorded_when_its_start_is_recorded_while_the_finish_runs(
    store: PostgresStore, url: str
) -> None:
    """A worker process records the start of a tiny job (`record_begun`) as its node's lease
    runs short, just as the node writes the job's outcome: the finish waits for that row, and
    must still record the outcome rather than refuse it as no longer held (the node would then
    give the job back, and it would run again under the same attempt number)."""
    node = start_node(store, "a")
    store.submit_jobs(new_jobs(1))
    [job] = store.claim_jobs(node.id, 1, start=0)
    assert job.state is JobState.CLAIMED
    with psycopg.connect(url) as other:  # the worker process, its transaction held open
        other.execute(
            q.RECORD_BEGUN,
            {"node": node.id, "shard": q.counter_shard(node.id), "ids": [job.id], "attempts": [1]},
        )
        applied: list[list[bool]] = []
        finishing = threading.Thread(
            target=lambda: applied.append(
                store.finish_jobs(node.id, [Outcome(job.id, 1, True, "null", ran_s=0.004)])
            )
        )
        finishing.start()
        time.sleep(0.5)  # the finish now waits for the row
        assert finishing.is_alive()
        other.commit()
    finishing.join(timeout=30)
    assert applied == [[True]]
    done = store.read_job(job.id)
    assert done is not None and (done.state, done.attempts) == (JobState.SUCCEEDED, 1)


def rows_read(plan: dict[str, Any], index: str) -> int:
    """How many rows the scans of `index` in an EXPLAIN (ANALYZE, FORMAT JSON) plan read:
    those they returned and those their filter removed, over all their loops."""
    return sum(
        (scan.get("Actual Rows", 0) + scan.get("Rows Removed by Filter", 0))
        * scan.get("Actual Loops", 1)
        for scan in index_scans(plan, index)
    )


def explain_analyzed(url: str, sql: str, params: Any) -> dict[str, Any]:
    with psycopg.connect(url) as conn, conn.transaction(force_rollback=True):
        [[explained]] = conn.execute("EXPLAIN (ANALYZE, FORMAT JSON) " + sql, params).fetchall()
    plan: dict[str, Any] = explained[0]["Plan"]
    return plan


def test_a_claim_reads_no_queued_job_of_a_task_its_node_cannot_take(
    store: PostgresStore, url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """20,000 queued jobs of a task no node registers sat at the head of every partition, and
    every claim and idle look read through all of them (80,000 made a lone job start 250 ms
    after its submit instead of 5 ms). While such a backlog waits, claims go task by task."""
    node = start_node(store, "a")
    store.submit_jobs([NewJob("gone", "[]", "{}") for _ in range(20_000)])
    store.submit_jobs(new_jobs(10))
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("ANALYZE jobs")
        assert jobs.untaken_backlog_is_large(conn, node.id)
    params = {"node": node.id, "shard": 1, "limit": 4, "start": 4, "token": 1, "why": "x"}
    # The walk in claim order reads the whole backlog; the walk task by task, only jobs of "t".
    assert rows_read(explain_analyzed(url, q.CLAIM, params), "jobs_queued_partition") > 19_000
    plan = explain_analyzed(url, q.CLAIM_BY_TASK, params)
    assert rows_read(plan, "jobs_queued_partition") == 0
    assert rows_read(plan, "jobs_queued_task") <= 10
    looks = explain_analyzed(url, q.ANY_CLAIMABLE_BY_TASK, (node.id,))
    assert rows_read(looks, "jobs_queued_partition") == 0
    assert rows_read(looks, "jobs_queued_task") <= 1

    chosen: list[bool] = []
    claim = jobs.claim

    def spy(conn: Any, retried: bool, params: Any, busy: bool, by_task: bool) -> Any:
        chosen.append(by_task)
        return claim(conn, retried, params, busy, by_task)

    monkeypatch.setattr(jobs, "claim", spy)
    first = store.claim_jobs(node.id, 4)
    rest = store.claim_jobs(node.id, 100)
    assert chosen == [True, True]
    assert [j.task for j in first + rest] == ["t"] * 10
    assert [j.id for j in first] == sorted(j.id for j in first)
    assert max(j.id for j in first) < min(j.id for j in rest)
    assert store.claim_jobs(node.id, 100) == []


def test_claims_go_task_by_task_past_4_untaken_jobs_per_partition(
    store: PostgresStore, url: str
) -> None:
    node = start_node(store, "a")
    store.submit_jobs([NewJob("gone", "[]", "{}") for _ in range(4 * 128)] + new_jobs(10))
    with psycopg.connect(url, autocommit=True) as conn:
        assert not jobs.untaken_backlog_is_large(conn, node.id)  # 4 per partition: not more
        store.submit_jobs([NewJob("gone", "[]", "{}")])
        assert jobs.untaken_backlog_is_large(conn, node.id)
        assert nodes.untaken_is_large(conn)  # for the load: some eligible node lacks "gone"
        start_node(store, "b", tasks=("t", "gone"))
        assert nodes.untaken_is_large(conn)  # a still does


def test_the_load_counts_the_backlog_task_by_task_alike(store: PostgresStore, url: str) -> None:
    """Both ways of counting a partition's backlog give the same figures: only jobs of the tasks
    its owner registers."""
    a = start_node(store, "a", tasks=("t",))
    start_node(store, "b", tasks=("t", "u"))
    store.submit_jobs(
        [NewJob("gone", "[]", "{}") for _ in range(300)]
        + [NewJob("u", "[]", "{}") for _ in range(300)]
        + new_jobs(1_000)
    )
    owners = store.read_load().owners
    expected: Counter[int] = Counter()
    for job in store.list_jobs(JobFilter(state=JobState.QUEUED), limit=20_000):
        if job.task == "t" or (job.task == "u" and owners[job.id % 128] != a.id):
            expected[job.id % 128] += 1
    with psycopg.connect(url, autocommit=True) as conn:
        walked = {int(r[0]): int(r[1]) for r in conn.execute(q.LOAD_BACKLOG)}
        by_task = {int(r[0]): int(r[1]) for r in conn.execute(q.LOAD_BACKLOG_BY_TASK)}
    assert walked == by_task == {p: min(n, 64) for p, n in expected.items()}


@pytest.mark.parametrize("limit", [1, 4, 50, 300])
def test_a_claim_task_by_task_takes_the_jobs_a_walk_in_claim_order_takes(
    store: PostgresStore, url: str, limit: int
) -> None:
    node = start_node(store, "a", tasks=("t", "u"))
    start_node(store, "b", tasks=("t", "u"))
    store.submit_jobs(
        [NewJob(("t", "u", "gone")[i % 3], "[]", "{}", priority=i * 7 % 5) for i in range(6_000)]
    )
    params = {"node": node.id, "shard": 1, "limit": limit, "start": 1, "token": 1, "why": "x"}
    taken = []
    with psycopg.connect(url) as conn:
        for claim in (q.CLAIM, q.CLAIM_BY_TASK):
            with conn.transaction(force_rollback=True):
                taken.append([(r[0], r[2], r[5], r[21]) for r in conn.execute(claim, params)])
    walked, by_task = taken
    assert len(walked) == limit and walked == by_task


def test_a_claim_reads_no_job_due_later(store: PostgresStore, url: str) -> None:
    """20,000 jobs due in an hour sat at the head of every partition, and every claim and idle
    look read through all of them (80,000 made a lone job start 200 ms after its submit instead
    of 5 ms). They are parked, out of the claim indexes, until shortly before they are due."""
    node = start_node(store, "a")
    store.submit_jobs([NewJob("t", "[]", "{}", delay_s=3600) for _ in range(20_000)])
    store.submit_jobs(new_jobs(10))
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("ANALYZE jobs")
    params = {"node": node.id, "shard": 1, "limit": 4, "start": 4, "token": 1, "why": "x"}
    assert rows_read(explain_analyzed(url, q.CLAIM, params), "jobs_queued_partition") <= 10
    assert (
        rows_read(explain_analyzed(url, q.ANY_CLAIMABLE, (node.id,)), "jobs_queued_partition") <= 1
    )
    with psycopg.connect(url, autocommit=True) as conn:
        [[backlog]] = conn.execute("EXPLAIN (ANALYZE, FORMAT JSON) " + q.LOAD_BACKLOG).fetchall()
    assert rows_read(backlog[0]["Plan"], "jobs_queued_partition") <= 10
    assert len(store.claim_jobs(node.id, 100)) == 10
    assert store.unpark_due(3600.0) == 20_000
    assert store.claim_jobs(node.id, 100) == []  # unparked, but not yet due
