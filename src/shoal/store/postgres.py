"""The distributed datastore: PostgreSQL, shared by nodes on any number of hosts.

Each operation is one short transaction (the hot ones a single statement) on a pooled psycopg 3
connection, retried through outages by `postgres_conn.Connector`; datastore time is the database's
clock. Writes that could be applied twice when a commit's outcome is lost with the connection are
made safe to retry: a submit inserts ids it reserved beforehand and checks for them, a claim is
stamped with a token it can find again, a finish is fenced and then verified. Nodes wake on
LISTEN/NOTIFY (`wait_for_work`), with polling as the fallback. The schema is created and migrated
only by `initialize` (`shoal init`), never silently on open. This module holds setting up and the
job side; `PostgresStore` builds on `postgres_nodes` (node membership), which builds on
`postgres_read` (what `status`, the observer and metrics read).
"""

from __future__ import annotations

import logging
import random
import re
import time
from collections.abc import Sequence
from functools import cache
from importlib import resources
from typing import Any

from shoal import states
from shoal.errors import ConfigError, DatastoreUnavailable, SchemaError, ShoalError
from shoal.model import Job, JobState, NewJob, NodeState, Outcome, ProgressUpdate
from shoal.store import postgres_sql as q
from shoal.store.port import DEFAULT_PARTITIONS, Store
from shoal.store.postgres_conn import Connector, Listener
from shoal.store.postgres_nodes import PostgresNodes
from shoal.store.postgres_read import Conn, _scalar, job_from_row, list_jobs_query

log = logging.getLogger("shoal.store.postgres")
MIGRATIONS_LOCK = 0x5E0A1  # advisory lock key: one migrator at a time
SECTION_TTL_S = 2.0  # how stale a section may be when filtering wake-ups (polling covers it)
SCHEMA_TABLE = """
CREATE TABLE IF NOT EXISTS shoal_schema (
    version    integer PRIMARY KEY,
    name       text NOT NULL,
    applied_at double precision NOT NULL DEFAULT extract(epoch from clock_timestamp())
)
"""


@cache
def migrations() -> tuple[tuple[int, str, str], ...]:
    """(version, file name, SQL) of every migration shipped, in order."""
    folder = resources.files("shoal.store").joinpath("sql/postgres")
    found = []
    for entry in folder.iterdir():
        match = re.fullmatch(r"(\d{4})_\w+\.sql", entry.name)
        if match:
            found.append((int(match.group(1)), entry.name, entry.read_text()))
    return tuple(sorted(found))


def latest_version() -> int:
    return migrations()[-1][0]


class PostgresStore(PostgresNodes, Store):
    """The Store on one PostgreSQL database. Thread-safe: operations borrow pooled connections."""

    def __init__(self, connector: Connector) -> None:
        self._db = connector
        self.url_for_display = connector.scrub.display
        self._listener = Listener(connector)
        # Claims whose outcome was lost with the connection and that gave up retrying: the next
        # claim of that node collects their jobs, if they committed, so none stays held forever.
        self._lost_claims: dict[int, list[int]] = {}
        self._sections: dict[int, tuple[frozenset[int], float]] = {}
        # Nodes whose last claim found work: their next claim skips the look-before-locking.
        self._busy: set[int] = set()

    @classmethod
    def open(
        cls, url: str, *, retry_for_s: float = 60.0, max_connections: int = 8
    ) -> PostgresStore:
        """Connect (ConfigError for a malformed URL, DatastoreUnavailable if unreachable).

        Does not create or check the schema: the node calls `check_schema`, `shoal init` calls
        `initialize`.
        """
        return cls(Connector(url, retry_for_s=retry_for_s, max_size=max_connections))

    # -- setting up ---------------------------------------------------------------------------

    def initialize(self, partitions: int = DEFAULT_PARTITIONS) -> None:
        if partitions < 1:
            raise ConfigError("partitions must be at least 1")
        self._db.run("migrate schema", lambda conn, _: self._migrate(conn))

        def setup(conn: Conn, _: bool) -> None:
            with conn.transaction():
                row = conn.execute("SELECT partitions FROM cluster WHERE id = 1").fetchone()
                if row is None:
                    conn.execute(
                        f"INSERT INTO cluster (id, partitions, created_at)"
                        f" VALUES (1, %s, {q.NOW}) ON CONFLICT (id) DO NOTHING",
                        (partitions,),
                    )
                    conn.execute(
                        "INSERT INTO partitions (partition, owner)"
                        " SELECT p, NULL FROM generate_series(0, %s - 1) p"
                        " ON CONFLICT (partition) DO NOTHING",
                        (partitions,),
                    )
                elif row[0] != partitions and partitions != DEFAULT_PARTITIONS:
                    raise ConfigError(
                        f"this datastore already has {row[0]} partitions; P is fixed at init"
                    )

        self._db.run("initialize cluster", setup)

    def _migrate(self, conn: Conn) -> None:
        with conn.transaction():
            # Several `shoal init`s at once: the first applies, the others wait, then find it done.
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATIONS_LOCK,))
            conn.execute("SET LOCAL statement_timeout = 0")
            conn.execute("SET LOCAL lock_timeout = 0")
            conn.execute(SCHEMA_TABLE)
            done = {r[0] for r in conn.execute("SELECT version FROM shoal_schema")}
            for version, name, sql in migrations():
                if version in done:
                    continue
                log.info("applying schema migration %s to %s", name, self.url_for_display)
                conn.execute(sql.encode())
                conn.execute(
                    "INSERT INTO shoal_schema (version, name) VALUES (%s, %s)", (version, name)
                )

    def check_schema(self) -> None:
        fix = f"run `shoal init --db {self.url_for_display}`"

        def read(conn: Conn, _: bool) -> tuple[int | None, bool]:
            if conn.execute("SELECT to_regclass('shoal_schema')").fetchone() == (None,):
                return None, False
            version = conn.execute("SELECT max(version) FROM shoal_schema").fetchone()
            has_cluster = conn.execute("SELECT 1 FROM cluster WHERE id = 1").fetchone()
            return (version[0] if version else None), has_cluster is not None

        version, has_cluster = self._db.run("check schema", read)
        if version is None:
            raise SchemaError(f"{self.url_for_display} has no Shoal schema; {fix}")
        if version < latest_version():
            raise SchemaError(
                f"{self.url_for_display} has schema version {version}, this Shoal needs "
                f"{latest_version()}; {fix} to migrate"
            )
        if version > latest_version():
            raise SchemaError(
                f"{self.url_for_display} has schema version {version}, newer than this Shoal "
                f"understands ({latest_version()}); upgrade Shoal on this host"
            )
        if not has_cluster:
            raise SchemaError(f"{self.url_for_display} has no cluster row; {fix}")

    def close(self) -> None:
        self._listener.close()
        self._db.close()

    def now(self) -> float:
        return self._db.run("read clock", lambda conn, _: float(_scalar(conn, f"SELECT {q.NOW}")))

    # -- submitting and cancelling jobs -------------------------------------------------------

    def submit_jobs(self, jobs: Sequence[NewJob]) -> list[int]:
        if not jobs:
            return []
        ids: list[int] = []

        def insert(conn: Conn, retried: bool) -> list[int]:
            # Ids are reserved first (sequences never roll back), so a retry after a lost commit
            # can tell whether the batch went in: the batch is all-or-none, so its first id says.
            if ids and retried:
                found = conn.execute("SELECT 1 FROM jobs WHERE id = %s", (ids[0],)).fetchone()
                if found:
                    return ids
            if not ids:
                rows = conn.execute(q.ALLOCATE_IDS, (len(jobs),)).fetchall()
                ids.extend(sorted(int(r[0]) for r in rows))
            row = conn.execute(q.SUBMIT, {"batch": q.submit_batch(ids, jobs)}).fetchone()
            if row is None or row[0] != len(jobs):
                raise SchemaError(
                    f"{self.url_for_display} has no cluster row; run `shoal init --db "
                    f"{self.url_for_display}`"
                )
            return ids

        try:
            return self._db.run("submit jobs", insert)
        except DatastoreUnavailable as exc:
            if not ids:
                raise  # nothing was reserved, so nothing can have been written
            raise DatastoreUnavailable(
                f"{exc}. The batch of {len(ids)} jobs (ids {ids[0]}..{ids[-1]}) may or may not "
                f"have been recorded: once the datastore is back, `shoal job {ids[0]}` tells "
                "(a batch is recorded whole or not at all)"
            ) from exc

    def cancel_job(self, job_id: int) -> bool:
        def cancel(conn: Conn, retried: bool) -> bool:
            if _scalar(conn, q.CANCEL, {"id": job_id}) == 1:
                return True
            if retried:  # an earlier try may have cancelled it before its connection broke
                row = conn.execute("SELECT state FROM jobs WHERE id = %s", (job_id,)).fetchone()
                return row is not None and row[0] == JobState.CANCELLED.value
            return False

        return self._db.run("cancel job", cancel)

    # -- running jobs -------------------------------------------------------------------------

    def claim_jobs(self, node_id: int, limit: int) -> list[Job]:
        if limit < 1:
            return []
        recovered = self._collect_lost_claims(node_id)
        if len(recovered) >= limit:
            self.release_jobs(node_id, [j.id for j in recovered[limit:]])
            return recovered[:limit]
        token = random.getrandbits(62)
        params = {
            "node": node_id,
            "shard": q.counter_shard(node_id),
            "limit": limit - len(recovered),
            "token": token,
            "why": states.TRANSITIONS[(NodeState.WAITING, NodeState.WORKING)],
        }

        def claim(conn: Conn, retried: bool) -> list[Job]:
            if retried:  # did the try whose connection broke commit? then these are ours
                found = conn.execute(q.CLAIMED_BY_TOKEN, (node_id, token)).fetchall()
                if found:
                    return [job_from_row(r) for r in found]
            elif node_id not in self._busy and not _exists(conn, q.ANY_CLAIMABLE, (node_id,)):
                return []  # idle nodes poll: look before locking anything
            return [job_from_row(r) for r in conn.execute(q.CLAIM, params)]

        try:
            claimed = self._db.run("claim jobs", claim)
        except Exception:
            self._lost_claims.setdefault(node_id, []).append(token)
            raise
        if claimed:
            self._busy.add(node_id)
        else:
            self._busy.discard(node_id)
        return sorted(recovered + claimed, key=lambda j: j.id)

    def _collect_lost_claims(self, node_id: int) -> list[Job]:
        tokens = self._lost_claims.pop(node_id, [])
        if not tokens:
            return []

        def collect(conn: Conn, _: bool) -> list[Job]:
            rows = conn.execute(
                f"SELECT {q.JOB_COLUMNS} FROM jobs WHERE state = 'running' AND claimer = %s"
                " AND claim_token = ANY (%s)",
                (node_id, tokens),
            )
            return [job_from_row(r) for r in rows]

        try:
            return self._db.run("recover lost claims", collect)
        except Exception:
            self._lost_claims.setdefault(node_id, []).extend(tokens)
            raise

    def record_progress(self, node_id: int, updates: Sequence[ProgressUpdate]) -> int:
        if not updates:
            return 0
        params = {
            "node": node_id,
            "ids": [u.job_id for u in updates],
            "attempts": [u.attempt for u in updates],
            "fractions": [u.fraction for u in updates],
            "messages": [u.message for u in updates],
        }
        return self._db.run(
            "record progress", lambda conn, _: int(conn.execute(q.PROGRESS, params).rowcount)
        )

    def finish_jobs(self, node_id: int, outcomes: Sequence[Outcome]) -> list[bool]:
        if not outcomes:
            return []
        params = {
            "node": node_id,
            "shard": q.counter_shard(node_id),
            "batch": q.outcome_batch(outcomes),
        }

        def finish(conn: Conn, retried: bool) -> list[bool]:
            applied = {(int(r[0]), int(r[1])) for r in conn.execute(q.FINISH, params)}
            if retried:  # outcomes an earlier, lost try already recorded count as applied
                applied |= {
                    (int(r[0]), int(r[1])) for r in conn.execute(q.FINISHED_AS_SENT, params)
                }
            return [(o.job_id, o.attempt) in applied for o in outcomes]

        return self._db.run("finish jobs", finish)

    def release_jobs(self, node_id: int, job_ids: Sequence[int]) -> int:
        if not job_ids:
            return 0

        def release(conn: Conn, _: bool) -> int:
            params = {"node": node_id, "shard": q.counter_shard(node_id), "ids": list(job_ids)}
            row = conn.execute(q.RELEASE, params).fetchone()
            return 0 if row is None else int(row[0])

        return self._db.run("release jobs", release)

    def running_attempts(self, node_id: int) -> list[tuple[int, int]]:
        def read(conn: Conn, _: bool) -> list[tuple[int, int]]:
            rows = conn.execute(q.RUNNING_ATTEMPTS, (node_id,))
            return [(int(r[0]), int(r[1])) for r in rows]

        return self._db.run("list running jobs", read)

    @property
    def interruptions(self) -> int:
        return self._db.interruptions

    @property
    def supports_wakeups(self) -> bool:
        return True

    def wait_for_work(self, node_id: int, timeout_s: float) -> bool:
        """Block until work may have arrived for the node's section, or `timeout_s` passes.

        True when a submit touched one of the node's partitions, jobs were requeued or released,
        or the assignment changed (then the node should claim); False on timeout. Also True right
        after (re)connecting the LISTEN connection, since notifications may have been missed.
        Never raises for datastore trouble: the node's claim will meet it instead. One LISTEN
        connection per store: give each node its own store.
        """
        section = self._section_for_wakeups(node_id)

        def is_relevant(payload: str) -> bool:
            if payload == "*" or not payload:
                self._sections.pop(node_id, None)  # the assignment may have changed: re-read
                return True
            return any(int(p) in section for p in payload.split(",") if p.isdigit())

        return self._listener.wait(is_relevant, timeout_s)

    def _section_for_wakeups(self, node_id: int) -> frozenset[int]:
        """The node's section, re-read at most every SECTION_TTL_S (and after any rebalance)."""
        cached = self._sections.get(node_id)
        if cached is not None and time.monotonic() - cached[1] < SECTION_TTL_S:
            return cached[0]

        def read(conn: Conn, _: bool) -> frozenset[int]:
            row = conn.execute("SELECT section FROM nodes WHERE id = %s", (node_id,)).fetchone()
            return frozenset(row[0]) if row else frozenset()

        try:
            section = self._db.run("read section", read)
        except ShoalError:
            return frozenset()
        self._sections[node_id] = (section, time.monotonic())
        return section

    # -- samples ------------------------------------------------------------------------------

    def record_sample(self, interval_s: float) -> bool:
        def sample(conn: Conn, _: bool) -> bool:
            return conn.execute(q.SAMPLE, {"interval": interval_s}).fetchone() is not None

        return self._db.run("record sample", sample)


# -- rows to values -------------------------------------------------------------------------------


def _exists(conn: Conn, sql: str, params: Any = None) -> bool:
    return conn.execute(sql, params).fetchone() is not None


__all__ = ["PostgresStore", "latest_version", "list_jobs_query"]
