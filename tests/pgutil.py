"""PostgreSQL test support: a brand-new database per use, and whether a server is there at all.

Tests that need PostgreSQL call `fresh_pg_database()`, which creates a uniquely named, empty
database on the local server and drops it (FORCE) afterwards, so runs and tests never see each
other's rows; or `migrated_pg_database()`, the same but cloned from a template that is migrated
and initialised once per test run (`CREATE DATABASE x TEMPLATE tpl`), so a test does not pay for
the migrations. The template is named for the run's process and dropped at the session's end;
one a killed run left behind is dropped by the next run, once its process is gone. Locally, when
no server answers, callers skip with a loud reason; with CI=true `pg_available` raises instead,
because CI must exercise PostgreSQL.
"""

from __future__ import annotations

import os
import re
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


# The run's template: one per test process, so concurrent runs on one server never share one.
TEMPLATE_PREFIX = "shoal_tpl_"
TEMPLATE = f"{TEMPLATE_PREFIX}{os.getpid()}_{uuid.uuid4().hex[:8]}"
_template_ready = False


def _is_running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _drop_orphaned_templates(conn: psycopg.Connection[tuple[object, ...]]) -> None:
    """Drop templates whose run's process is gone (a run that was killed before its end)."""
    rows = conn.execute(
        "SELECT datname FROM pg_database WHERE datname LIKE %s", (TEMPLATE_PREFIX + "%",)
    ).fetchall()
    for (name,) in rows:
        match = re.fullmatch(rf"{TEMPLATE_PREFIX}(\d+)_\w+", str(name))
        if match and not _is_running(int(match.group(1))):
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


def migrated_template() -> str:
    """The name of this run's template database, migrated and initialised on first use."""
    global _template_ready
    if not _template_ready:
        from shoal.store.postgres import PostgresStore

        with admin_connection() as conn:
            _drop_orphaned_templates(conn)
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(TEMPLATE)))
        store = PostgresStore.open(url_for(TEMPLATE))
        try:
            store.initialize()
        finally:
            store.close()
        _template_ready = True
    return TEMPLATE


def drop_template() -> None:
    """Drop this run's template, if it made one (called at the end of the session)."""
    global _template_ready
    if not _template_ready:
        return
    with admin_connection() as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(TEMPLATE))
        )
    _template_ready = False


@contextmanager
def migrated_pg_database() -> Iterator[str]:
    """Yield the URL of a new database with the current schema and an initialised cluster
    (default P), cloned from the run's template; drop it (with FORCE) on exit."""
    name = f"shoal_test_{uuid.uuid4().hex[:16]}"
    template = migrated_template()
    with admin_connection() as conn:
        conn.execute(
            sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                sql.Identifier(name), sql.Identifier(template)
            )
        )
    try:
        yield url_for(name)
    finally:
        with admin_connection() as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )
