"""The SQLite file under the embedded datastore: where it may live, its connection, transactions.

Writers serialise with `BEGIN IMMEDIATE` and wait on a busy timeout; a lock that outlasts it is
retried here, so "database is locked" never reaches a job, and neither does one met while opening
(several processes switching one new file to WAL at once). A caller's deadline (see
`store/deadline.py`) cuts both the waiting and the retrying short. SQLite over a network
filesystem corrupts under concurrent writers, so obviously remote paths are refused.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

from shoal.errors import ConfigError, DatastoreUnavailable
from shoal.store.deadline import give_up_at
from shoal.store.sqlite import queries as q

log = logging.getLogger("shoal.store.sqlite")
T = TypeVar("T")

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
BUSY_TIMEOUT_MS = 30_000  # how long one statement waits for a lock inside SQLite


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
    fstype = filesystem_of(directory)
    if fstype in REMOTE_FILESYSTEMS:
        raise ConfigError(
            f"{directory} is on a network filesystem ({fstype}); SQLite needs a local disk. "
            "For nodes on several hosts use PostgreSQL (postgresql://...)."
        )


def filesystem_of(directory: str) -> str | None:
    """The type of the filesystem `directory` is on, from /proc/mounts (None if unknown)."""
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


def is_lock_error(exc: sqlite3.OperationalError) -> bool:
    text = str(exc).lower()
    return "locked" in text or "busy" in text


def now(cur: sqlite3.Cursor) -> float:
    """Datastore time: SQLite's own clock, which on one host is the one every node sees."""
    return float(cur.execute(q.NOW).fetchone()[0])


class SqliteFile:
    """One connection to one SQLite file, guarded by a lock, and the transactions run on it."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._lock = threading.RLock()
        self._busy_ms = BUSY_TIMEOUT_MS
        failure = f"cannot open SQLite database {path!r}"
        try:
            self._conn = sqlite3.connect(
                path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None, check_same_thread=False
            )
        except sqlite3.Error as exc:
            raise DatastoreUnavailable(f"{failure}: {exc}") from exc
        self._conn.row_factory = sqlite3.Row
        self._through_locks(self._set_up, failure)

    def _set_up(self) -> None:
        self._conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        self._conn.execute("PRAGMA journal_mode = WAL")
        # FULL: a commit survives power loss too; a queue must not trade durability away.
        self._conn.execute("PRAGMA synchronous = FULL")

    def run(
        self, body: Callable[[sqlite3.Cursor], T], *, write: bool = True, durable: bool = True
    ) -> T:
        """Run `body` in one transaction, retrying the whole of it while the file is locked.

        A transaction that is not `durable` commits without waiting for the disk (synchronous
        NORMAL, for it alone): it survives the process dying, and a power loss can take it back
        only with every later commit, since the next durable commit syncs the log it sits in.
        """

        def transaction() -> T:
            with self._lock:
                self._bound_busy_wait()
                cur = self._conn.cursor()
                if not durable:
                    cur.execute("PRAGMA synchronous = NORMAL")
                try:
                    cur.execute("BEGIN IMMEDIATE" if write else "BEGIN")
                    out = body(cur)
                    cur.execute("COMMIT")
                    return out
                except BaseException:
                    if self._conn.in_transaction:
                        self._conn.execute("ROLLBACK")
                    raise
                finally:
                    if not durable:
                        cur.execute("PRAGMA synchronous = FULL")

        return self._through_locks(transaction, f"SQLite error on {self.path}")

    def _through_locks(self, attempt: Callable[[], T], failure: str) -> T:
        """`attempt()`, tried again while the file is locked, until LOCK_RETRY_S has passed or
        the caller's deadline; any other SQLite error, or the last lock, as DatastoreUnavailable."""
        retry_until = time.monotonic() + LOCK_RETRY_S
        delay = 0.005
        while True:
            try:
                return attempt()
            except sqlite3.OperationalError as exc:
                now = time.monotonic()
                if not is_lock_error(exc) or now > min(retry_until, give_up_at()):
                    raise DatastoreUnavailable(f"{failure}: {exc}") from exc
                log.debug("datastore busy, retrying: %s", exc)
                time.sleep(delay)
                delay = min(delay * 2, 0.25)
            except sqlite3.DatabaseError as exc:
                raise DatastoreUnavailable(f"{failure}: {exc}") from exc

    def _bound_busy_wait(self) -> None:
        """Wait for a lock inside SQLite no longer than the caller's deadline allows. Holds the
        lock; a PRAGMA only when the bound changes (while a deadline runs out)."""
        left_ms = (give_up_at() - time.monotonic()) * 1000
        busy_ms = int(max(0.0, min(BUSY_TIMEOUT_MS, left_ms)))
        if busy_ms != self._busy_ms:
            self._conn.execute(f"PRAGMA busy_timeout = {busy_ms}")
            self._busy_ms = busy_ms

    @contextmanager
    def read(self) -> Iterator[sqlite3.Cursor]:
        """A cursor for reads outside any write transaction (autocommit)."""
        with self._lock:
            cur = self._conn.cursor()
            try:
                yield cur
            except sqlite3.DatabaseError as exc:
                raise DatastoreUnavailable(f"SQLite error on {self.path}: {exc}") from exc

    def close(self) -> None:
        with self._lock:
            self._conn.close()
