"""Serving the observer for a test: uvicorn on a free loopback port in a thread; Chromium's path.

Kept out of conftest.py so tests and the screenshot script can import it by a unique name.
"""

from __future__ import annotations

import socket
import threading
import time
from typing import Any

import uvicorn

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ServerThread:
    """uvicorn serving the observer on a free loopback port, in a background thread."""

    def __init__(self, app: Any) -> None:
        self.stopping = app.state.stopping
        self.port = free_port()
        config = uvicorn.Config(
            app,
            host="127.0.0.1",
            port=self.port,
            log_level="warning",
            timeout_graceful_shutdown=5,
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> ServerThread:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the observer did not start within 10 s")
            time.sleep(0.01)  # polling for startup, not waiting for an outcome
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopping.set()  # ends open event streams, as Ctrl-C does in `serve`
        self.server.should_exit = True
        self.thread.join(timeout=10)
