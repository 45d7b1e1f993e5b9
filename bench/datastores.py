"""Fresh datastores for each benchmark run, removed afterwards.

SQLite gets a file in a temporary directory. PostgreSQL gets a uniquely named database on the
local server, created and dropped as user postgres; a benchmark never touches another database.
Redis gets one database number of its own (15 unless BENCH_REDIS_URL says otherwise), flushed
before and after each run; the benchmark touches no other.
"""

from __future__ import annotations

import os
import socket
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress

import psycopg
from psycopg import sql

PG_ADMIN_URL = os.environ.get("BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/15")


def pg_url(database: str) -> str:
    """The admin URL with its database replaced by `database`."""
    base, _, _ = PG_ADMIN_URL.rpartition("/")
    return f"{base}/{database}"


@contextmanager
def fresh_sqlite() -> Iterator[str]:
    with tempfile.TemporaryDirectory(prefix="shoal-bench-") as folder:
        yield f"sqlite:///{os.path.join(folder, 'bench.db')}"


@contextmanager
def fresh_postgres(prefix: str) -> Iterator[str]:
    """Create database `<prefix>_<random>`, yield its URL, then drop it (even after errors)."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    _admin(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield pg_url(name)
    finally:
        _admin(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def _admin(statement: sql.Composed, patience_s: float = 60.0) -> None:
    """Run one statement as the admin; wait out a server that is restarting, up to `patience_s`."""
    deadline = time.monotonic() + patience_s
    while True:
        try:
            with psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=10) as connection:
                connection.execute(statement)
                return
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(1.0)


@contextmanager
def fresh_redis() -> Iterator[str]:
    """Yield the benchmark's Redis database, empty, and empty it again afterwards."""
    _flush_redis()
    try:
        yield REDIS_URL
    finally:
        _flush_redis()


def _flush_redis() -> None:
    """SELECT the database and FLUSHDB over one plain socket: the harness needs no Redis client
    (the peers have their own, in their own virtualenvs)."""
    address, _, database = REDIS_URL.removeprefix("redis://").partition("/")
    host, _, port = address.rpartition("@")[2].partition(":")
    db = database or "0"
    command = f"*2\r\n$6\r\nSELECT\r\n${len(db)}\r\n{db}\r\n*1\r\n$7\r\nFLUSHDB\r\n"
    with socket.create_connection((host, int(port or 6379)), timeout=10) as sock:
        sock.sendall(command.encode())
        reply = b""
        while reply.count(b"\r\n") < 2:
            chunk = sock.recv(1024)
            if not chunk:
                break
            reply += chunk
    if reply != b"+OK\r\n+OK\r\n":
        raise OSError(f"Redis at {address} did not flush database {db}: {reply!r}")


def preload_finished(url: str, count: int, task: str = "noop") -> None:
    """Fill a fresh, initialised datastore with `count` jobs of `task` that succeeded a day ago.

    Written with plain SQL in bulk (the point is a big table, not how it got there); ids come
    from the same counter the store uses, so later submits continue the sequence.
    """
    day_ago = time.time() - 86_400
    if url.startswith("sqlite"):
        import sqlite3

        conn = sqlite3.connect(url.removeprefix("sqlite:///"))
        with conn:
            partitions, first = conn.execute(
                "SELECT partitions, next_job_id FROM cluster WHERE id = 1"
            ).fetchone()
            conn.executemany(
                "INSERT INTO jobs (id, partition, task, args, kwargs, state, attempts,"
                " max_attempts, run_after, created_at, started_at, finished_at, result)"
                " VALUES (?, ?, ?, '[]', '{}', 'succeeded', 1, 4, ?, ?, ?, ?, 'null')",
                (
                    (i, i % partitions, task, day_ago, day_ago, day_ago, day_ago)
                    for i in range(first, first + count)
                ),
            )
            conn.execute("UPDATE cluster SET next_job_id = ? WHERE id = 1", (first + count,))
            conn.execute(
                "INSERT INTO job_counts (shard, task, state, n) VALUES (0, ?, 'succeeded', ?)"
                " ON CONFLICT (shard, task, state) DO UPDATE SET n = n + excluded.n",
                (task, count),
            )
        conn.close()
        return
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO jobs (id, partition, task, args, kwargs, state, attempts, max_attempts,"
            " run_after, created_at, started_at, finished_at, result)"
            " SELECT id, id %% (SELECT partitions FROM cluster WHERE id = 1), %(task)s, '[]', '{}',"
            " 'succeeded', 1, 4, %(t)s, %(t)s, %(t)s, %(t)s, 'null'"
            " FROM (SELECT nextval('jobs_id_seq') AS id FROM generate_series(1, %(n)s)) ids",
            {"t": day_ago, "n": count, "task": task},
        )
        conn.execute(
            "INSERT INTO job_counts (shard, task, state, n) VALUES (0, %s, 'succeeded', %s)"
            " ON CONFLICT (shard, task, state) DO UPDATE SET n = job_counts.n + excluded.n",
            (task, count),
        )
        conn.execute("VACUUM ANALYZE jobs")
        # Write the bulk load out now, as a datastore that has held these jobs for a while would
        # have, rather than in the middle of the measured drain (needs superuser or, from
        # PostgreSQL 15, pg_checkpoint; skipped without them).
        with suppress(psycopg.errors.InsufficientPrivilege):
            conn.execute("CHECKPOINT")
