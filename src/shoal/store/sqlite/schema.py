"""The SQLite schema: its version, creating and migrating a file, and checking it.

The schema is the numbered scripts in `sqlite/migrations/`, read by the shared loader; the
version is the highest number shipped and is kept in the table `shoal_meta`. A new file gets
every script, an older one the scripts above its version, each recorded as it applies.
"""

from __future__ import annotations

import logging
import sqlite3

from shoal.errors import ConfigError, SchemaError
from shoal.store import rules, texts
from shoal.store.migrations import Migration, load_migrations
from shoal.store.port import DEFAULT_PARTITIONS
from shoal.store.sqlite import nodes
from shoal.store.sqlite import queries as q
from shoal.store.sqlite.file import now

log = logging.getLogger("shoal.store.sqlite")
MIGRATIONS = load_migrations("shoal.store.sqlite")
SCHEMA_VERSION = MIGRATIONS[-1].version


def statements(migration: Migration) -> list[str]:
    """The statements of a script, one by one, to run inside a transaction of ours."""
    out, pending = [], ""
    for line in migration.sql.splitlines(keepends=True):
        if line.lstrip().startswith("--"):
            continue
        pending += line
        if sqlite3.complete_statement(pending):
            out.append(pending.strip())
            pending = ""
    return out


def version_of(cur: sqlite3.Cursor) -> int | None:
    """The file's schema version; None for a file without a Shoal schema."""
    if cur.execute(q.HAS_META).fetchone() is None:
        return None
    row = cur.execute(q.SCHEMA_VERSION).fetchone()
    return None if row is None else int(row[0])


def migrate(cur: sqlite3.Cursor, path: str) -> None:
    """Create or migrate the schema to SCHEMA_VERSION inside the caller's write transaction.

    The version is read under the write lock, so of several processes opening one file at once
    exactly one applies each step and the others find it done.
    """
    version = version_of(cur) or 0
    if version > SCHEMA_VERSION:
        raise SchemaError(texts.newer_schema(path, version, SCHEMA_VERSION))
    for migration in MIGRATIONS[version:]:
        if version:
            log.info("migrating %s to schema version %d", path, migration.version)
        for statement in statements(migration):
            cur.execute(statement)
        cur.execute(q.SET_SCHEMA_VERSION, (str(migration.version),))
        version = migration.version


def initialize(
    cur: sqlite3.Cursor, path: str, partitions: int | None, quarantine_after: int | None = None
) -> None:
    """Migrate, then create the cluster row and P partitions, or grow P; set the quarantine
    threshold when given (see the port)."""
    if partitions is not None and partitions < 1:
        raise ConfigError(texts.PARTITIONS_AT_LEAST_ONE)
    rules.check_quarantine_after(quarantine_after)
    migrate(cur, path)
    row = cur.execute(q.CLUSTER_PARTITIONS).fetchone()
    if quarantine_after is not None and row is not None:
        cur.execute(q.SET_QUARANTINE_AFTER, (quarantine_after,))
    if row is None:
        count = partitions or DEFAULT_PARTITIONS
        cur.execute(q.INSERT_CLUSTER, (count, now(cur)))
        cur.executemany(q.INSERT_PARTITION, [(p,) for p in range(count)])
        if quarantine_after is not None:
            cur.execute(q.SET_QUARANTINE_AFTER, (quarantine_after,))
        return
    grown = rules.partitions_to_grow(int(row[0]), partitions)
    if grown is not None:
        cur.executemany(q.INSERT_PARTITION, [(p,) for p in range(int(row[0]), grown)])
        cur.execute(q.SET_PARTITIONS, (grown,))
        nodes.rebalance(cur, now(cur), texts.partitions_grew(int(row[0]), grown))


def check(version: int | None, path: str, url: str) -> None:
    """Raise SchemaError, saying what to run, unless `version` is SCHEMA_VERSION."""
    if version is None:
        raise SchemaError(texts.no_schema(path, url))
    if version != SCHEMA_VERSION:
        raise SchemaError(texts.old_schema(path, version, SCHEMA_VERSION, url))
