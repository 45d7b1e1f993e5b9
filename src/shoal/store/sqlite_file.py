"""The SQLite file under the embedded datastore: where it may live, its connection, its schema.

Writers serialise with `BEGIN IMMEDIATE` and wait on a busy timeout; a lock that outlasts it is
retried here, so "database is locked" never reaches a job. Datastore time is SQLite's own clock
(`julianday('now')`), which on one host is the same clock every node sees. SQLite over a network
filesystem corrupts under concurrent writers, so obviously remote paths are refused. A new file
gets the schema from the scripts in `sql/`, and an older one is migrated by them.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from importlib import resources
from pathlib import Path
from typing import TypeVar

from shoal.errors import ConfigError, DatastoreUnavailable, SchemaError
from shoal.store.port import DEFAULT_PARTITIONS, SCHEMA_VERSION

# The script that brings a file of version v (the key) to v + 1; a new file starts from v1.
CREATE_SCRIPT = "sqlite_v1.sql"
MIGRATIONS = {1: "sqlite_v2.sql"}

log = logging.getLogger("shoal.store.sqlite")
T = TypeVar("T")

NOW_SQL = "SELECT (julianday('now') - 2440587.5) * 86400.0"
REMOTE_FILESYSTEMS = frozenset(
    {
        "nfs",
        "nfs4",
        "cifs",
        "smb3",
        "smbfs",
        "fuse.sshfs",
        "sshfs",
        "9p",
        "afs",
        "ceph",
        "glusterfs",
        "fuse.glusterfs",
        "lustre",
        "gpfs",
        "davfs",
        "fuse.s3fs",
    }
)
LOCK_RETRY_S = 120.0  # give up on a lock only after this long; then it is a real outage


def path_from_url(url: str) -> str:
    """The file path of a `sqlite:///...` URL; ConfigError for anything else."""
    prefix = "sqlite:///"
    if not url.startswith(prefix):
        raise ConfigError(
            f"malformed SQLite URL {url!r}: SQLite is embedded and takes no host; use "
            "sqlite:///relative/path.db or sqlite:////absolute/path.db"
        )
    path = url[len(prefix) :]
    if not path or "?" in path or "#" in path:
        raise ConfigError(f"malformed SQLite URL {url!r}: expected a file path after sqlite:///")
    return path


def check_local_path(path: str) -> None:
    """Refuse paths on network filesystems, where SQLite's locking is not reliable."""
    if path.startswith(("//", "\\\\")):
        raise ConfigError(
            f"{path!r} looks like a network share; SQLite needs a local disk. "
            "For nodes on several hosts use PostgreSQL (postgresql://...)."
        )
    directory = os.path.realpath(os.path.dirname(os.path.abspath(path)))
    fstype = _filesystem_of(directory)
    if fstype in REMOTE_FILESYSTEMS:
        raise ConfigError(
            f"{directory} is on a network filesystem ({fstype}); SQLite needs a local disk. "
            "For nodes on several hosts use PostgreSQL (postgresql://...)."
        )


def _filesystem_of(directory: str) -> str | None:
    try:
        lines = Path("/proc/mounts").read_text().splitlines()
    except OSError:
        return None
    best, best_type = "", None
    for line in lines:
        fields = line.split()
        if len(fields) < 3:
            continue
        mount = fields[1].replace("\\040", " ")
        inside = directory == mount or directory.startswith(mount.rstrip("/") + "/")
        if inside and len(mount) > len(best):
            best, best_type = mount, fields[2]
    return best_type


def script_statements(name: str) -> list[str]:
    """The statements of a schema script, one by one, to run inside a transaction of ours."""
    text = resources.files("shoal.store").joinpath(f"sql/{name}").read_text()
    statements, pending = [], ""
    for line in text.splitlines(keepends=True):
        if line.lstrip().startswith("--"):
            continue
        pending += line
        if sqlite3.complete_statement(pending):
            statements.append(pending.strip())
            pending = ""
    return statements


def _is_lock_error(exc: sqlite3.OperationalError) -> bool:
    text = str(exc).lower()
    return "locked" in text or "busy" in text


class SqliteFile:
    """One connection to one SQLite file, guarded by a lock: transactions, clock and schema."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.url_for_display = f"sqlite:///{path}"
        self._lock = threading.RLock()
        try:
            self._conn = sqlite3.connect(
                path, timeout=30.0, isolation_level=None, check_same_thread=False
            )
            self._conn.row_factory = sqlite3.Row
            self._conn.execute("PRAGMA busy_timeout = 30000")
            self._conn.execute("PRAGMA journal_mode = WAL")
            # FULL: a commit survives power loss too; a queue must not trade durability away.
            self._conn.execute("PRAGMA synchronous = FULL")
        except sqlite3.Error as exc:
            raise DatastoreUnavailable(f"cannot open SQLite database {path!r}: {exc}") from exc

    # -- transactions ---------------------------------------------------------------------------

    def _run(self, body: Callable[[sqlite3.Cursor], T], *, write: bool = True) -> T:
        """Run `body` in one transaction, retrying the whole of it while the file is locked."""
        deadline = time.monotonic() + LOCK_RETRY_S
        delay = 0.005
        while True:
            try:
                with self._lock:
                    cur = self._conn.cursor()
                    cur.execute("BEGIN IMMEDIATE" if write else "BEGIN")
                    try:
                        out = body(cur)
                        cur.execute("COMMIT")
                        return out
                    except BaseException:
                        if self._conn.in_transaction:
                            self._conn.execute("ROLLBACK")
                        raise
            except sqlite3.OperationalError as exc:
                if not _is_lock_error(exc) or time.monotonic() > deadline:
                    raise DatastoreUnavailable(f"SQLite error on {self.path}: {exc}") from exc
                log.debug("datastore busy, retrying: %s", exc)
                time.sleep(delay)
                delay = min(delay * 2, 0.25)
            except sqlite3.DatabaseError as exc:
                raise DatastoreUnavailable(f"SQLite error on {self.path}: {exc}") from exc

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Cursor]:
        with self._lock:
            cur = self._conn.cursor()
            try:
                yield cur
            except sqlite3.DatabaseError as exc:
                raise DatastoreUnavailable(f"SQLite error on {self.path}: {exc}") from exc

    @staticmethod
    def _now(cur: sqlite3.Cursor) -> float:
        return float(cur.execute(NOW_SQL).fetchone()[0])

    # -- setting up -----------------------------------------------------------------------------

    def _schema_version(self) -> int | None:
        with self._read() as cur:
            row = cur.execute(
                "SELECT name FROM sqlite_master WHERE type='table' AND name='shoal_meta'"
            ).fetchone()
            if row is None:
                return None
            row = cur.execute("SELECT value FROM shoal_meta WHERE key='schema_version'").fetchone()
            return None if row is None else int(row[0])

    def initialize(self, partitions: int = DEFAULT_PARTITIONS) -> None:
        if partitions < 1:
            raise ConfigError("partitions must be at least 1")

        def setup(cur: sqlite3.Cursor) -> None:
            self._migrate_in_tx(cur)
            row = cur.execute("SELECT partitions FROM cluster WHERE id = 1").fetchone()
            if row is None:
                cur.execute(
                    "INSERT INTO cluster (id, partitions, created_at) VALUES (1, ?, ?)",
                    (partitions, self._now(cur)),
                )
                cur.executemany(
                    "INSERT INTO partitions (partition, owner) VALUES (?, NULL)",
                    [(p,) for p in range(partitions)],
                )
            elif row[0] != partitions and partitions != DEFAULT_PARTITIONS:
                raise ConfigError(
                    f"this datastore already has {row[0]} partitions; P is fixed at init"
                )

        self._run(setup)

    def _migrate_in_tx(self, cur: sqlite3.Cursor) -> None:
        """Create or migrate the schema to SCHEMA_VERSION inside the caller's write transaction.

        The version is read under the write lock, so of several processes opening one file at
        once exactly one applies each step and the others find it done.
        """
        has_meta = cur.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'shoal_meta'"
        ).fetchone()
        row = None
        if has_meta:
            row = cur.execute(
                "SELECT value FROM shoal_meta WHERE key = 'schema_version'"
            ).fetchone()
        if row is None:
            for statement in script_statements(CREATE_SCRIPT):
                cur.execute(statement)
            cur.execute("INSERT INTO shoal_meta (key, value) VALUES ('schema_version', '1')")
        version = 1 if row is None else int(row[0])
        if version > SCHEMA_VERSION:
            raise SchemaError(
                f"{self.path} has schema version {version}, newer than this Shoal understands "
                f"({SCHEMA_VERSION}); upgrade Shoal on this host"
            )
        while version < SCHEMA_VERSION:
            log.info("migrating %s to schema version %d", self.path, version + 1)
            for statement in script_statements(MIGRATIONS[version]):
                cur.execute(statement)
            version += 1

    def check_schema(self) -> None:
        version = self._schema_version()
        if version is None:
            raise SchemaError(
                f"{self.path} has no Shoal schema; run `shoal init --db {self.url_for_display}`"
            )
        if version != SCHEMA_VERSION:
            raise SchemaError(
                f"{self.path} has schema version {version}, this Shoal needs {SCHEMA_VERSION}; "
                f"run `shoal init --db {self.url_for_display}` to migrate"
            )

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def now(self) -> float:
        with self._read() as cur:
            return self._now(cur)
