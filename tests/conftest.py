"""Shared fixtures: a fresh datastore per test, on every backend the machine offers.

PostgreSQL tests get a brand-new database each (tests/pgutil.py), cloned from a template that
is migrated once per run. Locally without a server they
skip with a loud reason; with CI=true they fail instead, because CI must exercise PostgreSQL.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from shoal.store import Store, open_store

IN_CI = os.environ.get("CI", "").lower() == "true"
BACKENDS = ["sqlite", "postgres"]


def backend_url(backend: str, tmp_path: Path) -> Iterator[str]:
    """The URL of a new datastore: an initialised SQLite file, or a PostgreSQL database cloned
    from the run's migrated and initialised template."""
    if backend == "sqlite":
        url = f"sqlite:///{tmp_path / 'shoal.db'}"
        store = open_store(url)
        store.initialize()
        store.close()
        yield url
        return
    try:
        from pgutil import migrated_pg_database, pg_available
    except ImportError as exc:
        if IN_CI:
            raise
        pytest.skip(f"PostgreSQL test support missing ({exc})")
    if not pg_available():
        if IN_CI:
            pytest.fail("PostgreSQL is not reachable on 127.0.0.1:5432 and CI=true")
        pytest.skip("!!! PostgreSQL is not reachable on 127.0.0.1:5432: PostgreSQL tests SKIPPED")
    with migrated_pg_database() as url:
        yield url


# Claims find their candidates one of two ways: walking the queue in claim order, or task by
# task while a backlog the node cannot take waits (`rules.UNTAKEN_PER_PARTITION`). A module that
# sets CLAIMS_BY_TASK = True runs its tests both ways on each backend.
BY_TASK = ["sqlite-by-task", "postgres-by-task"]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "db_url" in metafunc.fixturenames:
        by_task = getattr(metafunc.module, "CLAIMS_BY_TASK", False)
        metafunc.parametrize("db_url", BACKENDS + BY_TASK if by_task else BACKENDS, indirect=True)


@pytest.fixture
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The URL of an empty, initialised datastore on each backend."""
    backend = request.param
    if backend in BY_TASK:
        from shoal.store import rules

        request.getfixturevalue("monkeypatch").setattr(rules, "UNTAKEN_PER_PARTITION", -1)
        backend = backend.removesuffix("-by-task")
    gen = backend_url(backend, tmp_path)
    yield next(gen)
    for _ in gen:
        pass


@pytest.fixture
def store(db_url: str) -> Iterator[Store]:
    s = open_store(db_url)
    yield s
    s.close()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'shoal.db'}"
    open_store(url).close()
    return url


def pytest_sessionfinish(session: pytest.Session) -> None:
    """Drop the run's PostgreSQL template, if a test made one."""
    pgutil = sys.modules.get("pgutil")
    if pgutil is not None:
        pgutil.drop_template()
