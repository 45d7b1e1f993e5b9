"""Connections to PostgreSQL for the Shoal store: the pool, surviving outages, error translation.

Every store operation runs through `Connector.run`, which borrows a pooled connection and runs the
operation. When the datastore goes away (a lost connection, `pg_terminate_backend`, an
administrator's shutdown, a restart, or a failover that left the connection on a read-only
standby) it reconnects with backoff and runs the operation again until `retry_for_s` has passed.
The operation is told that it is being retried, so that one whose commit outcome is unknown can
check what already committed before writing again. Driver errors leave as `ShoalError`s, with the
URL's password scrubbed from every message.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar
from urllib.parse import parse_qsl, unquote, urlsplit

import psycopg
import psycopg.errors as pgerr
from psycopg import Connection
from psycopg_pool import ConnectionPool, PoolTimeout

from shoal.errors import ConfigError, DatastoreUnavailable, SchemaError, ShoalError
from shoal.store import redact_url, texts
from shoal.store.deadline import give_up_at

log = logging.getLogger("shoal.store.postgres")
# The pool's own warnings ("discarding closed connection") say again what this module reports
# in its own words, and in an application that configured no logging they would reach stderr
# through logging's last-resort handler. A NullHandler keeps them off stderr there; an
# application that configured logging still gets them, as records of "psycopg.pool".
logging.getLogger("psycopg.pool").addHandler(logging.NullHandler())
T = TypeVar("T")

# Nothing may hold a transaction open: a statement that runs this long is cut off, and so is a
# session that sits idle inside a transaction (say, a node frozen with SIGSTOP mid-operation).
# No JIT compilation: every statement here reads a few rows through an index, in well under a
# millisecond, but the planner's estimates for the per-partition probes can pass jit_above_cost
# (a table never analyzed, a large one), and compiling then took 30 ms of a 1 ms read.
SESSION_SETTINGS = (
    "SET statement_timeout = '30s';"
    " SET lock_timeout = '10s';"
    " SET idle_in_transaction_session_timeout = '15s';"
    " SET jit = off"
)
# Detect a server that vanished without a TCP reset (power loss, a partition, a failover) in
# seconds rather than minutes. Keepalives cover an idle connection (10 s, then 3 probes 3 s
# apart); they never fire while sent data waits for an acknowledgement, where the kernel would
# otherwise retransmit for about 15 minutes: tcp_user_timeout cuts that off after 15 s (and
# bounds the keepalive probing to about the same). Defaults only: a URL setting wins.
CONNECT_DEFAULTS: dict[str, Any] = {
    "application_name": "shoal",
    "connect_timeout": 5,
    "keepalives": 1,
    "keepalives_idle": 10,
    "keepalives_interval": 3,
    "keepalives_count": 3,
    "tcp_user_timeout": 15000,  # milliseconds
}
NOTIFY_CHANNEL = "shoal_jobs"


class Scrubber:
    """Removes the URL's password from any text before it is logged or raised."""

    def __init__(self, url: str) -> None:
        secrets: set[str] = set()
        try:
            parts = urlsplit(url)
            for netloc_part in parts.netloc.split(","):
                userinfo = netloc_part.rpartition("@")[0]
                if ":" in userinfo:
                    secrets.add(userinfo.split(":", 1)[1])
            secrets.update(v for k, v in parse_qsl(parts.query) if k == "password")
        except ValueError:
            pass
        self._secrets = sorted(
            {s for s in secrets | {unquote(s) for s in secrets} if s}, key=len, reverse=True
        )
        display = redact_url(url)
        for secret in self._secrets:
            display = display.replace(secret, "***")
        self.display = display

    def __call__(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text


def _message(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0] if isinstance(exc, psycopg.Error) else text


def is_transient(exc: BaseException) -> bool:
    """Errors that mean "the datastore is (momentarily) not there or not writable": retry."""
    if isinstance(exc, pgerr.QueryCanceled):
        return False  # a statement timeout: retrying the same statement would time out again
    return isinstance(
        exc,
        PoolTimeout
        | pgerr.ReadOnlySqlTransaction
        | pgerr.IdleInTransactionSessionTimeout
        | psycopg.OperationalError  # lost connection, admin shutdown, restart, deadlock, lock
        | psycopg.InterfaceError,  # "the connection is closed"
    )


def translate(exc: BaseException, what: str, scrub: Scrubber) -> ShoalError:
    """The ShoalError for a driver error that will not be retried."""
    msg = scrub(_message(exc))
    fix = texts.init_command(scrub.display)
    if isinstance(exc, pgerr.UndefinedTable | pgerr.UndefinedColumn | pgerr.InvalidSchemaName):
        return SchemaError(f"{scrub.display} has no (or an old) Shoal schema ({msg}); {fix}")
    if isinstance(exc, pgerr.InsufficientPrivilege):
        return DatastoreUnavailable(
            f"{what} on {scrub.display} was refused: {msg}; the role needs the grants in "
            "docs/postgres.md"
        )
    if isinstance(exc, pgerr.QueryCanceled):
        return DatastoreUnavailable(f"{what} on {scrub.display} was cancelled: {msg}")
    if is_transient(exc):
        return DatastoreUnavailable(f"{what}: cannot reach {scrub.display}: {msg}")
    return ShoalError(f"{what} failed on {scrub.display}: {msg}")


# libpq's environment variables for the defaults above that have one.
ENVIRONMENT = {"application_name": "PGAPPNAME", "connect_timeout": "PGCONNECT_TIMEOUT"}


def connect_kwargs(url: str, scrub: Scrubber) -> dict[str, Any]:
    """The CONNECT_DEFAULTS that neither the URL nor libpq's environment sets. psycopg lets
    keyword arguments override both, so a default passed for a key the user set would silently
    replace the user's value. Raises ConfigError for a malformed URL."""
    try:
        given = psycopg.conninfo.conninfo_to_dict(url)
    except psycopg.Error as exc:
        raise ConfigError(
            f"malformed PostgreSQL URL {scrub.display}: {scrub(str(exc).strip())}"
        ) from exc
    return {
        key: value
        for key, value in CONNECT_DEFAULTS.items()
        if key not in given and not os.environ.get(ENVIRONMENT.get(key, ""))
    }


def _configure(conn: Connection[tuple[Any, ...]]) -> None:
    conn.execute(SESSION_SETTINGS)


POOL_WAIT_S = 2.0  # the longest one try waits for a pooled connection (see Connector.run)


class Connector:
    """A connection pool plus the retry loop every store operation runs in."""

    def __init__(
        self,
        url: str,
        *,
        retry_for_s: float = 60.0,
        min_size: int = 1,
        max_size: int = 8,
    ) -> None:
        self.url = url
        self.scrub = Scrubber(url)
        # Outages seen and got past (see Store.interruptions).
        self.interruptions = 0
        self.retry_for_s = retry_for_s
        self.connect_kwargs = connect_kwargs(url, self.scrub)
        # How often the pool was drained because its server had turned read-only: connections
        # made before then (the Listener's) may sit on a demoted primary that still answers.
        self.demotions = 0
        self._probe()
        self.pool: ConnectionPool[Connection[tuple[Any, ...]]] = ConnectionPool(
            url,
            kwargs={**self.connect_kwargs, "autocommit": True},
            min_size=min_size,
            max_size=max_size,
            open=False,
            configure=_configure,
            name="shoal",
            timeout=10.0,
            max_idle=60.0,
            reconnect_timeout=retry_for_s,
        )
        self.pool.open(wait=False)

    def _probe(self) -> None:
        """Connect once so that a wrong host, database or password is a clear error at open."""
        try:
            with psycopg.connect(self.url, **self.connect_kwargs) as conn:
                conn.execute("SELECT 1")
        except psycopg.Error as exc:
            raise DatastoreUnavailable(
                f"cannot connect to {self.scrub.display}: {self.scrub(_message(exc))}"
            ) from exc

    def connect(self) -> Connection[tuple[Any, ...]]:
        """A dedicated connection outside the pool (for LISTEN)."""
        conn = psycopg.connect(self.url, autocommit=True, **self.connect_kwargs)
        _configure(conn)
        return conn

    def close(self) -> None:
        self.pool.close()

    def run(self, what: str, operation: Callable[[Connection[tuple[Any, ...]], bool], T]) -> T:
        """Run `operation(conn, retried)` on a pooled connection, retrying through outages.

        `retried` is True from the second try on: the previous try may have committed before its
        connection was lost, and a non-idempotent operation must look before it writes again.
        Raises DatastoreUnavailable once `retry_for_s` has passed without success.
        """
        retry_until = time.monotonic() + self.retry_for_s
        delay = 0.05
        retried = False
        while True:
            deadline = min(retry_until, give_up_at())  # a caller's deadline may come sooner
            try:
                # A wait for a pooled connection of at most POOL_WAIT_S at a time: a deadline
                # brought forward meanwhile (a stop signal) is then seen at the next try.
                timeout = max(0.5, min(POOL_WAIT_S, deadline - time.monotonic()))
                with self.pool.connection(timeout=timeout) as conn:
                    try:
                        done = operation(conn, retried)
                        if retried:
                            self.interruptions += 1
                        return done
                    except pgerr.ReadOnlySqlTransaction:
                        conn.close()  # a demoted primary: never hand this connection out again
                        raise
            except ShoalError:
                raise
            except Exception as exc:
                if not is_transient(exc):
                    raise translate(exc, what, self.scrub) from exc
                if time.monotonic() + delay > deadline:
                    raise DatastoreUnavailable(
                        f"{what}: {self.scrub.display} unreachable for "
                        f"{time.monotonic() - retry_until + self.retry_for_s:.0f}s: "
                        f"{self.scrub(_message(exc))}"
                    ) from exc
                log.warning(
                    "%s: datastore %s unavailable (%s); retrying in %.2fs",
                    what,
                    self.scrub.display,
                    self.scrub(_message(exc)),
                    delay,
                )
                self._recover(exc)
                time.sleep(delay * (0.5 + random.random()))
                delay = min(delay * 2, 2.0)
                retried = True

    def _recover(self, exc: BaseException) -> None:
        """Throw away pooled connections that the failure has made useless."""
        try:
            if isinstance(exc, pgerr.ReadOnlySqlTransaction):
                # After a failover every idle connection may point at the old primary, now a
                # standby; new ones follow target_session_attrs to the new primary.
                self.demotions += 1
                self.pool.drain()
            elif not isinstance(exc, PoolTimeout):
                self.pool.check()  # drops idle connections that a restart or terminate killed
        except Exception as again:  # the pool is only being tidied; the retry decides
            log.debug("pool recovery failed: %s", self.scrub(_message(again)))


class Listener:
    """One dedicated LISTEN connection, for waking a node when work arrives in its section.

    Notifications that arrive between two waits stay buffered on the connection, so nothing is
    missed while the node is busy; after a reconnect the first wait reports work at once, since
    notifications sent while disconnected are lost. Polling remains the node's fallback.

    A demoted primary that keeps its sessions open (read-only) never fails a LISTEN connection,
    but it gets no more writes, so no more notifications: once the Connector has met a read-only
    server the Listener reconnects too, and so follows the pool to the new primary.
    """

    def __init__(self, connector: Connector) -> None:
        self._connector = connector
        self._conn: Connection[tuple[Any, ...]] | None = None
        self._demotions = 0  # the Connector's count when this connection was made
        self._own: str | None = None  # the extra channel this connection listens to
        self._lock = threading.Lock()

    def wait(
        self, is_relevant: Callable[[str, str], bool], timeout_s: float, own: str | None = None
    ) -> bool:
        """True as soon as a relevant notification arrives (`is_relevant(channel, payload)`),
        False after `timeout_s` without. Listens to NOTIFY_CHANNEL and to `own`, if given."""
        with self._lock:
            if self._conn is not None and self._demotions != self._connector.demotions:
                log.info("LISTEN connection dropped: the datastore it was on turned read-only")
                self._drop()
            if self._conn is None or self._conn.closed or self._own != own:
                # Notifications sent before a LISTEN took effect are missed: report work.
                try:
                    if self._conn is None or self._conn.closed:
                        self._demotions = self._connector.demotions
                        self._conn = self._connector.connect()
                        self._conn.execute(f"LISTEN {NOTIFY_CHANNEL}")
                        self._own = None
                    if self._own is not None:
                        self._conn.execute(f"UNLISTEN {self._own}")
                        self._own = None
                    if own is not None:
                        self._conn.execute(f"LISTEN {own}")
                        self._own = own
                except psycopg.Error as exc:
                    self._drop()
                    log.debug("LISTEN failed: %s", self._connector.scrub(_message(exc)))
                    time.sleep(min(timeout_s, 1.0))
                return True
            deadline = time.monotonic() + timeout_s
            try:
                while (left := deadline - time.monotonic()) > 0:
                    for note in self._conn.notifies(timeout=left, stop_after=1):
                        if is_relevant(note.channel, note.payload):
                            return True
                return False
            except psycopg.Error as exc:
                log.debug("LISTEN connection lost: %s", self._connector.scrub(_message(exc)))
                self._drop()
                return True

    def _drop(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(psycopg.Error):
                self._conn.close()
        self._conn = None
        self._own = None

    def close(self) -> None:
        with self._lock:
            self._drop()
