"""Fixtures for the system tests: a cluster of real node processes on each backend, and a
throwaway PostgreSQL primary with a synchronous standby."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from pgservers import Server, make_pair, server_root
from realnodes import Cluster


@pytest.fixture
def cluster(db_url: str, tmp_path: Path) -> Iterator[Cluster]:
    c = Cluster(db_url, tmp_path)
    yield c
    c.stop_all()


@pytest.fixture
def sqlite_cluster(sqlite_url: str, tmp_path: Path) -> Iterator[Cluster]:
    """A cluster on SQLite only, for behaviour that does not depend on the backend."""
    c = Cluster(sqlite_url, tmp_path)
    yield c
    c.stop_all()


@pytest.fixture
def pg_pair() -> Iterator[tuple[Server, Server]]:
    """A throwaway primary and its synchronous standby (tests/system/pgservers.py), each with a
    database `shoal`; both stopped and removed afterwards."""
    with server_root("shoal-failover-") as root:
        yield make_pair(root)
