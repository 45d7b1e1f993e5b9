"""Observer fixtures: a real SQLite store, the app served by uvicorn, and Debian's Chromium.

Browser tests need /usr/bin/chromium (Debian's package; `.ci/run` installs it). Without it they
skip loudly on a developer machine and fail when CI=true, so CI never passes without them.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

sys.path.insert(0, str(Path(__file__).parent))

from shoal.observer.server import create_app
from shoal.store import Store
from shoal.store.sqlite import SqliteStore

from cluster import Cluster
from served import CHROMIUM, CHROMIUM_ARGS, ServerThread

IN_CI = os.environ.get("CI", "").lower() == "true"


@pytest.fixture
def obs_store(tmp_path: Path) -> Iterator[Store]:
    # Made directly so that P can be small; open_store would create it with the default P.
    store = SqliteStore(str(tmp_path / "observed.db"))
    store.initialize(partitions=32)
    yield store
    store.close()


@pytest.fixture
def cluster(obs_store: Store) -> Iterator[Cluster]:
    """Real nodes on the observed store; every one still running is stopped at the end."""
    nodes = Cluster(obs_store)
    yield nodes
    nodes.close()


@pytest.fixture
def client(obs_store: Store) -> TestClient:
    return TestClient(create_app(obs_store, None))


@pytest.fixture
def live_server(obs_store: Store) -> Iterator[ServerThread]:
    with ServerThread(create_app(obs_store, None)) as server:
        yield server


# Per module, not per session: Playwright's sync API runs an event loop on this thread while it is
# open, and a later test's asyncio.run() would find it running.
@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    if not os.path.exists(CHROMIUM):
        message = f"{CHROMIUM} is missing: install Debian's chromium (apt-get install chromium)"
        if IN_CI:
            pytest.fail(message + " — CI=true, so browser tests must run")
        pytest.skip("!!! " + message + ": browser tests SKIPPED")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(chromium: Any) -> Iterator[Any]:
    context = chromium.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("dialog", lambda dialog: errors.append(f"dialog opened: {dialog.message}"))
    page.errors = errors  # tests assert this stays empty
    yield page
    context.close()
