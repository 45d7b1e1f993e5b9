"""The PostgreSQL schema: its version, migrating a database, and checking it.

The schema is the numbered files in `postgres/migrations/`, read by the shared loader; the
version is the highest number shipped. Each applied file is recorded in the table `shoal_schema`.
Schemas are created and migrated only by `shoal init` (`PostgresStore.initialize`), never
silently on open: a node only checks.
"""

from __future__ import annotations

import logging
from typing import Any

from psycopg import Connection

from shoal.errors import SchemaError
from shoal.store import rules, texts
from shoal.store.migrations import Migration, load_migrations
from shoal.store.port import DEFAULT_PARTITIONS
from shoal.store.postgres import nodes
from shoal.store.postgres import queries as q

Conn = Connection[tuple[Any, ...]]
log = logging.getLogger("shoal.store.postgres")
MIGRATIONS_LOCK = 0x5E0A1  # advisory lock key: one migrator at a time
MIGRATIONS = load_migrations("shoal.store.postgres")
SCHEMA_VERSION = MIGRATIONS[-1].version


def migrations() -> tuple[Migration, ...]:
    """Every migration shipped, in order."""
    return MIGRATIONS


def latest_version() -> int:
    return SCHEMA_VERSION


def migrate(conn: Conn, url: str) -> None:
    """Apply, in one transaction, every shipped migration the database has not recorded."""
    with conn.transaction():
        # Several `shoal init`s at once: the first applies, the others wait, then find it done.
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATIONS_LOCK,))
        conn.execute("SET LOCAL statement_timeout = 0")
        conn.execute("SET LOCAL lock_timeout = 0")
        conn.execute(q.SCHEMA_TABLE)
        done = {r[0] for r in conn.execute(q.APPLIED_MIGRATIONS)}
        for migration in MIGRATIONS:
            if migration.version in done:
                continue
            log.info("applying schema migration %s to %s", migration.name, url)
            conn.execute(migration.sql.encode())
            conn.execute(q.RECORD_MIGRATION, (migration.version, migration.name))


def create_cluster(conn: Conn, partitions: int | None, quarantine_after: int | None = None) -> None:
    """The cluster row and P partitions unless they exist; or grow P; the quarantine threshold
    when given (see the port)."""
    with conn.transaction():
        row = conn.execute(q.LOCK_CLUSTER).fetchone()
        if row is None:
            count = partitions or DEFAULT_PARTITIONS
            conn.execute(q.INSERT_CLUSTER, (count,))
            conn.execute(q.INSERT_PARTITIONS, (0, count))
        if quarantine_after is not None:
            conn.execute(q.SET_QUARANTINE_AFTER, (quarantine_after,))
        if row is None:
            return
        grown = rules.partitions_to_grow(int(row[0]), partitions)
        if grown is not None:
            conn.execute(q.INSERT_PARTITIONS, (int(row[0]), grown))
            conn.execute(q.SET_PARTITIONS, (grown,))
            nodes.rebalance(conn, texts.partitions_grew(int(row[0]), grown))


def read_version(conn: Conn) -> tuple[int | None, bool]:
    """The recorded schema version (None without a schema) and whether the cluster row exists."""
    if conn.execute("SELECT to_regclass('shoal_schema')").fetchone() == (None,):
        return None, False
    version = conn.execute(q.SCHEMA_VERSION).fetchone()
    has_cluster = conn.execute(q.CLUSTER_PARTITIONS).fetchone()
    return (version[0] if version else None), has_cluster is not None


def check(version: int | None, has_cluster: bool, url: str) -> None:
    """Raise SchemaError, saying what to run, unless the schema is this code's and initialised."""
    if version is None:
        raise SchemaError(texts.no_schema(url, url))
    if version < SCHEMA_VERSION:
        raise SchemaError(texts.old_schema(url, version, SCHEMA_VERSION, url))
    if version > SCHEMA_VERSION:
        raise SchemaError(texts.newer_schema(url, version, SCHEMA_VERSION))
    if not has_cluster:
        raise SchemaError(texts.no_cluster_row(url))
