"""PostgreSQL test support: a brand-new database per use, and whether a server is there at all.

Tests that need PostgreSQL call `fresh_pg_database()`, which creates a uniquely named database on
the local server and drops it (FORCE) afterwards, so runs and tests never see each other's rows.
Locally, when no server answers, callers skip with a loud reason; with CI=true `pg_available`
raises instead, because CI must exercise PostgreSQL.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
from psycopg import sql

ADMIN_URL = os.environ.get("SHOAL_TEST_PG_ADMIN", "postgresql://postgres@127.0.0.1:5432/postgres")
IN_CI = os.environ.get("CI", "").lower() == "true"


def admin_connection(wait_s: float = 30.0) -> psycopg.Connection[tuple[object, ...]]:
    """Connect as the admin, waiting out a server that is restarting (a test may restart it)."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            return psycopg.connect(ADMIN_URL, connect_timeout=3, autocommit=True)
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.25)


def pg_available() -> bool:
    """True if the test server answers. With CI=true an unreachable server raises instead."""
    try:
        with admin_connection(wait_s=10.0 if IN_CI else 2.0) as conn:
            conn.execute("SELECT 1")
        return True
    except psycopg.Error as exc:
        if IN_CI:
            raise RuntimeError(
                f"PostgreSQL is not reachable at {ADMIN_URL} and CI=true: {exc}"
            ) from exc
        return False


def url_for(dbname: str) -> str:
    """The URL of database `dbname` on the test server."""
    head, _, _ = ADMIN_URL.rpartition("/")
    return f"{head}/{dbname}"


@contextmanager
def fresh_pg_database() -> Iterator[str]:
    """Yield the URL of a new, empty database; drop it (with FORCE) on exit."""
    name = f"shoal_test_{uuid.uuid4().hex[:16]}"
    with admin_connection() as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield url_for(name)
    finally:
        with admin_connection() as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )
